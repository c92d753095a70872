"""Variational Walkback (Goyal et al. 2017, Algorithm 1): heating trajectories, the per-step loss,
the Gaussian p* at the hot end, generation by cooling, and the variational bound (eq. 5).

States are (batch, n_units) tensors holding the visible units first, then the hidden ones.
``temperatures`` is [T_1, ..., T_K] from :mod:`asymnet.schedule`; step t maps s_{t-1} to s_t at T_t.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from asymnet.distributed import Shard
from asymnet.operators import BernoulliOperator, Drive, Operator
from asymnet.sampler import ChainSampler

LOG_2PI = math.log(2.0 * math.pi)


def noisy_starts(x: torch.Tensor, tau_max: float, generator: torch.Generator | None,
                 fraction: float = 1.0) -> torch.Tensor:
    """x + tau eps with tau ~ U(0, tau_max) per row and eps standard normal (``walkback.start_noise``),
    for each row with probability ``fraction`` (``walkback.start_noise_fraction``; the others keep x).

    The walk back's T = 1 terms then train the T = 1 operator on pairs from a smoothed data law q, and at
    their fixed point its drift is the Langevin drift of q: toward the data also in the gaps between modes,
    which trajectories started at the data reach only through rare crossings. Smoothing every data point
    alike leaves the weights of well-separated modes unchanged; a fraction below 1 keeps most of q's mass
    on the data, so that its Langevin drift there stays the data's. tau_max 0: x itself.
    """
    if not tau_max:
        return x
    u = torch.rand(x.shape[0], 2, generator=generator, dtype=x.dtype, device=x.device)
    tau = tau_max * u[:, :1] * (u[:, 1:] < fraction)
    return x + tau * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def score_anchor_pairs(x: torch.Tensor, std: torch.Tensor, tau_max: float,
                       generator: torch.Generator | None, tau_low: float | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Starts and targets that anchor the T = 1 operator's mean to the data's Langevin step
    (``walkback.score_anchor``): the start is x + tau eps and the target x + tau (1 - c) eps, with
    c = std^2 / (2 tau^2) per unit (std: the operator's T = 1 noise level, (n,) or (batch, n)).

    Why: by Tweedie's formula E[x | x + tau eps] = x~ + tau^2 grad log p_tau(x~), so a Gaussian step
    trained on these pairs has the mean x~ + (std^2 / 2) grad log p_tau(x~): the Langevin step that keeps
    p_tau, the data smoothed by tau, invariant (to first order in std). The walk back's T = 1 terms have the
    same fixed point near the data; the anchor also reaches the gaps between modes, where the trajectories
    that start at the data seldom go and the chain's rare crossings are decided.

    tau is drawn on [tau_min, tau_max], tau_min = max(std) / sqrt(2) (where c = 1 and the target is x
    itself), with density proportional to tau^-3: log-uniform tau, each pair weighted by (tau_min / tau)^2
    (denoising score matching's usual weight, which keeps a wide tau's noisy target from dominating), drawn
    by importance so that every pair has weight 1. Most pairs sit near the data, where the smoothed score
    is the data's; the few wide ones set the drift in the gaps, which is then the drift of the smoothed
    data, weaker than the data's (benchmarks/drift_tails.py measures it). tau_max below tau_min: tau = tau_min.
    Returns (start, target), each shaped like x; no gradient.
    """
    with torch.no_grad():
        tau_min = max(float(std.max()) / math.sqrt(2.0), tau_low or 0.0)
        tau_max = max(tau_max, tau_min)
        u = torch.rand(x.shape[0], 1, generator=generator, dtype=x.dtype, device=x.device)
        tau = (tau_min**-2 - u * (tau_min**-2 - tau_max**-2)).rsqrt()  # inverse CDF of the tau^-3 density
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        c = std.pow(2) / (2.0 * tau.pow(2))
        return x + tau * eps, x + tau * (1.0 - c) * eps


def widen_starts(start: torch.Tensor, clean: torch.Tensor, fraction: float, noise: float,
                 generator: torch.Generator | None) -> torch.Tensor:
    """The anchor's starts with each row, with probability ``fraction``, replaced by its data point plus
    N(0, noise^2 I) (``walkback.score_anchor_wide``, ``score_anchor_wide_noise``). The anchor's own starts
    spread by tau with density tau^-3, so fewer than 1 % of them reach the gaps between a mixture's modes,
    yet a mode's weight follows the drift's error integrated across those gaps
    (benchmarks/anchor_stationary.py). fraction 0: ``start`` itself, and no draw from ``generator``."""
    if not fraction:
        return start
    with torch.no_grad():
        u = torch.rand(start.shape[0], 1, generator=generator, dtype=start.dtype, device=start.device)
        wide = clean + noise * torch.randn(start.shape, generator=generator, dtype=start.dtype, device=start.device)
        return torch.where(u < fraction, wide, start)


def kernel_langevin_step(start: torch.Tensor, reference: torch.Tensor, bandwidth: float,
                         std: torch.Tensor) -> torch.Tensor:
    """start + (std^2 / 2) grad log p_h(start): the exact Langevin step of p_h, the Gaussian kernel density
    estimate of ``reference`` (N, n) with bandwidth h (``walkback.score_anchor_bandwidth``).

    grad log p_h(x) = (sum_i w_i r_i - x) / h^2 with w = softmax(-|x - r_i|^2 / (2 h^2)): a target without
    noise, and one that keeps the data's own scale wherever the start is. The denoising targets'
    mean is the Langevin step of the data smoothed by the start's own noise tau, so a start placed far out
    by a wide tau gets the weak drift of a wide smoothing; here every start gets the drift of the same
    narrow smoothing h, which points to the nearest data and grows with the distance to them.
    start: (batch, n); std: the operator's T = 1 noise level, (n,) or (batch, n). No gradient.
    """
    with torch.no_grad():
        weights = torch.softmax(-torch.cdist(start, reference).pow(2) / (2.0 * bandwidth**2), dim=1)
        return start + 0.5 * std.pow(2) * (weights @ reference - start) / bandwidth**2


def score_anchor_loss(network: nn.Module, operator: Operator, start: torch.Tensor,
                      target: torch.Tensor) -> torch.Tensor:
    """-log p_1(target | start), batch mean, nats, with the noise level detached: the anchor trains the
    mean only (its targets' spread is not the operator's noise)."""
    drive = network(start, 1.0)
    return -operator.log_prob(target, start, Drive(drive.mu, drive.sigma.detach()), 1.0).mean()


def settle_hidden(
    network: nn.Module, operator: Operator, x: torch.Tensor, steps: int, generator: torch.Generator | None,
    shard: Shard = Shard(),
) -> torch.Tensor:
    """s_0 = (x, h_0): h_0 drawn by running the T = 1 chain ``steps`` times with x clamped (paper sec. 6.5).

    x: (batch, n_visible). Hidden units start at 0. Returns (batch, n_units) without gradient; the
    visible part is x itself at every step. ``shard``: x is this process's rows of a global batch, and
    the noise is its rows of the global batch's draw (asymnet.distributed).
    """
    n_visible = x.shape[1]
    n_hidden = network.n_units - n_visible
    s = torch.cat([x, x.new_zeros(x.shape[0], n_hidden)], dim=1)
    if n_hidden == 0:
        return s
    with torch.no_grad():
        for _ in range(steps):  # only the hidden units move, so only their drive is computed
            noise = shard.draw(operator.noise_kind, (x.shape[0], n_hidden), generator, x.dtype, x.device)
            s[:, n_visible:] = operator.sample(s[:, n_visible:], network(s, 1.0, first_unit=n_visible), 1.0, generator,
                                               noise)
    return s


def heating_trajectory(
    network: nn.Module, operator: Operator, s0: torch.Tensor, temperatures: list[float], generator
) -> list[torch.Tensor]:
    """[s_0, s_1, ..., s_K] with s_t ~ p_{T_t}(. | s_{t-1}) (Algorithm 1, line 6). No gradient."""
    return heating_trajectory_with_drives(network, operator, s0, temperatures, generator)[0]


def heating_trajectory_with_drives(
    network: nn.Module, operator: Operator, s0: torch.Tensor, temperatures: list[float], generator,
    shard: Shard = Shard(),
) -> tuple[list[torch.Tensor], list[Drive]]:
    """The heating trajectory and the drives F(s_t, T_{t+1}) that sampled it, t = 0..K-1. No gradient.

    For a network that ignores T these are the drives at s_1..s_{K-1} that the walk back needs too,
    which the local rule reuses instead of recomputing. ``shard`` as in :func:`settle_hidden`.
    """
    states, drives = [s0], []
    with torch.no_grad():
        for T in temperatures:
            drives.append(network(states[-1], T))
            noise = shard.draw(operator.noise_kind, tuple(s0.shape), generator, s0.dtype, s0.device)
            states.append(operator.sample(states[-1], drives[-1], T, generator, noise))
    return states, drives


def drift_weighted(drive: Drive, T, power: float) -> Drive:
    """The drive with the gradient reaching its mu multiplied by T ** power (``walkback.step_weight_power``),
    its values and its sigma untouched: mu' + T^p (mu - mu'), mu' detached. A log-probability of it has the
    plain value, the drift's gradient weighted by T^p and the noise level's gradient unweighted. ``T``: a
    number, or a tensor that broadcasts against mu (as the operators take it). power 0: the drive itself.
    """
    if not power:
        return drive
    fixed = drive.mu.detach()
    return Drive(fixed + T**power * (drive.mu - fixed), drive.sigma)


def walkback_losses(
    network: nn.Module, operator: Operator, states: list[torch.Tensor], temperatures: list[float],
    weight_power: float = 0.0,
) -> torch.Tensor:
    """loss_t = -log p_{T_t}(s_{t-1} | s_t), averaged over the batch, for t = 1..K: shape (K,), nats.

    Gradient flows into the network's parameters only, never through the sampled states (one step of
    credit assignment, Algorithm 1 line 7). ``weight_power`` (``walkback.step_weight_power``): the
    gradient through the drift mu of step t is multiplied by T_t ** weight_power, the one through the noise
    level is not, and the values are unchanged (:func:`drift_weighted`). A network whose ``temperature_rows``
    is true (it takes a (batch,) tensor of temperatures, and its rows do not interact) scores all K steps in
    one call on the (K * batch) stacked states: the same losses, in larger and faster convolutions.
    """
    if getattr(network, "temperature_rows", False) and len(temperatures) > 1:
        batch = states[0].shape[0]
        T = torch.tensor(temperatures, dtype=states[0].dtype, device=states[0].device).repeat_interleave(batch)
        after, before = torch.cat(states[1:]), torch.cat(states[:-1])
        drive = drift_weighted(network(after, T), T[:, None], weight_power)
        log_p = operator.log_prob(before, after, drive, T[:, None])
        return -log_p.view(len(temperatures), batch).mean(1)
    losses = []
    for t, T in enumerate(temperatures, start=1):
        drive = drift_weighted(network(states[t], T), T, weight_power)
        losses.append(-operator.log_prob(states[t - 1], states[t], drive, T).mean())
    return torch.stack(losses)


class PStar(nn.Module):
    """The diagonal Gaussian p* at the hot end of the chain, tracking s_K (Algorithm 1, line 9).

    Exponential moving averages of the first and second moments of s_K with rate ``momentum``;
    the first update sets them to that batch's moments exactly.
    """

    def __init__(self, n_units: int, n_replicas: int | None = None):
        super().__init__()
        shape = (n_units,) if n_replicas is None else (n_replicas, n_units)  # one p* per replica (asymnet.replicas)
        self.register_buffer("first_moment", torch.zeros(shape))
        self.register_buffer("second_moment", torch.ones(shape))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @property
    def mean(self) -> torch.Tensor:
        return self.first_moment

    @property
    def var(self) -> torch.Tensor:
        return (self.second_moment - self.first_moment**2).clamp_min(1e-12)

    @torch.no_grad()
    def update(self, s_K: torch.Tensor, momentum: float, shard: Shard = Shard()) -> None:
        """Move the moments towards those of s_K (batch, n_units), or (R, batch, n_units) per replica;
        with a ``shard``, those of the global batch (averaged over the processes)."""
        rate = 1.0 if self.updates.item() == 0 else momentum
        moments = torch.stack([s_K.mean(-2), s_K.pow(2).mean(-2)])
        shard.average_([moments])
        self.first_moment.lerp_(moments[0], rate)
        self.second_moment.lerp_(moments[1], rate)
        self.updates += 1

    def sample(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        """(n, n_units) draws from N(mean, diag(var))."""
        noise = torch.randn((n, self.mean.shape[0]), generator=generator, dtype=self.mean.dtype, device=self.mean.device)
        return self.mean + self.var.sqrt() * noise

    def log_prob(self, s: torch.Tensor) -> torch.Tensor:
        """log p*(s) in nats, shape (batch,)."""
        return (-0.5 * (s - self.mean).pow(2) / self.var - 0.5 * self.var.log() - 0.5 * LOG_2PI).sum(-1)


@torch.no_grad()
def generate(
    network: nn.Module,
    operator: Operator,
    p_star: PStar,
    temperatures: list[float],
    n: int,
    generator: torch.Generator | None,
    known: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    final_mean: bool = False,
    fused: bool = True,
) -> torch.Tensor:
    """s_0 of a cooling chain: s_K ~ p*, then s_{t-1} ~ p_{T_t}(. | s_t) for t = K..1. Shape (n, n_units).

    ``final_mean``: the last step (t = 1) returns the mean of p_{T_1}(. | s_1) instead of a draw from
    it, i.e. the operator's denoised estimate of s_0 without the T = 1 noise (for the Gaussian operator
    (1 - alpha) s_1 + alpha F_mu(s_1); for the Bernoulli one the firing probabilities).
    ``fused``: run it with :class:`asymnet.sampler.ChainSampler` where that applies (same chain, same
    random numbers, fewer passes over memory); False keeps the operator's own step.

    Conditional generation (inpainting, paper sec. 6): with ``known`` (n_units,) bool and ``values``
    (n, n_units), the known units are held at ``values`` at every step of the chain, from s_K on.
    """
    s = p_star.sample(n, generator)
    clamp = known is not None
    noisy = temperatures[1:] if final_mean else temperatures
    if fused and ChainSampler.supports(network, operator):
        s = ChainSampler(network, operator, s, generator, known, values).cool(noisy)
    else:
        if clamp:
            s = torch.where(known, values, s)
        for T in reversed(noisy):
            s = operator.sample(s, network(s, T), T, generator)
            if clamp:
                s = torch.where(known, values, s)
    if final_mean and temperatures:
        T = temperatures[0]
        drive = network(s, T)
        s = operator.mean(s, drive, T) if isinstance(operator, BernoulliOperator) else operator.mean(s, drive)
        if clamp:
            s = torch.where(known, values, s)
    return s


@torch.no_grad()
def run_chain(
    network: nn.Module, operator: Operator, s: torch.Tensor, n_steps: int, generator: torch.Generator | None,
    T: float = 1.0,
    fused: bool = True,
) -> torch.Tensor:
    """s after ``n_steps`` more steps s_{t+1} ~ p_T(. | s_t) of the chain (batch, n_units); memory O(batch).

    ``fused`` as in :func:`generate`.
    """
    if fused and ChainSampler.supports(network, operator):
        return ChainSampler(network, operator, s, generator).run(n_steps, T)
    for _ in range(n_steps):
        s = operator.sample(s, network(s, T), T, generator)
    return s


@torch.no_grad()
def variational_bound(
    network: nn.Module,
    operator: Operator,
    p_star: PStar,
    s0: torch.Tensor,
    temperatures: list[float],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """One-sample estimate of the lower bound of eq. 5 on log p(s_0), nats, shape (batch,):

    log p*(s_K) + sum_t [log p_{T_t}(s_{t-1} | s_t) - log p_{T_t}(s_t | s_{t-1})],  s_{1..K} ~ heating.
    With hidden units s_0 = (x, h_0), so this bounds the joint log p(x, h_0).
    """
    states = heating_trajectory(network, operator, s0, temperatures, generator)
    bound = p_star.log_prob(states[-1])
    for t, T in enumerate(temperatures, start=1):
        backward: Drive = network(states[t], T)
        forward: Drive = network(states[t - 1], T)
        bound = bound + operator.log_prob(states[t - 1], states[t], backward, T)
        bound = bound - operator.log_prob(states[t], states[t - 1], forward, T)
    return bound

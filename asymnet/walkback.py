"""Variational Walkback (Goyal et al. 2017, Algorithm 1): heating trajectories, the per-step loss,
the Gaussian p* at the hot end, generation by cooling, and the variational bound (eq. 5).

States are (batch, n_units) tensors holding the visible units first, then the hidden ones.
``temperatures`` is [T_1, ..., T_K] from :mod:`asymnet.schedule`; step t maps s_{t-1} to s_t at T_t.
"""

from __future__ import annotations

import torch
from torch import nn

from asymnet.distributed import Shard
from asymnet.operators import LOG_2PI, BernoulliOperator, Drive, Operator
from asymnet.sampler import ChainSampler

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

"""Variational Walkback (Goyal et al. 2017, Algorithm 1): heating trajectories, the per-step loss,
the Gaussian p* at the hot end, generation by cooling, and the variational bound (eq. 5).

States are (batch, n_units) tensors holding the visible units first, then the hidden ones.
``temperatures`` is [T_1, ..., T_K] from :mod:`asymnet.schedule`; step t maps s_{t-1} to s_t at T_t.

Replicas (a :class:`~asymnet.networks.RecurrentNetwork` built with ``replicas=R``) run the same functions
with a leading replica axis: states (R, batch, n_units), ``temperatures`` a :class:`ReplicaSchedule` (each
replica's own [T_1, ..., T_{K_r}], padded to one length), the noise a :class:`ReplicaNoise` (replica r's
from its own generator), p* one per replica; nothing is summed across replicas.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from asymnet.distributed import Shard
from asymnet.networks.recurrent import inverse_softplus
from asymnet.operators import LOG_2PI, BernoulliOperator, Drive, GaussianOperator, Operator
from asymnet.sampler import ChainSampler


@dataclass(frozen=True)
class ChainNoise:
    """The noise of a chain's steps (one network): drawn by the operator from ``generator`` (None: torch's
    default generator of the device), or with a ``shard``, this process's rows of the global batch's draw
    (asymnet.distributed)."""

    generator: torch.Generator | None = None
    shard: Shard = Shard()

    def sample(self, operator: Operator, s: torch.Tensor, drive: Drive, T, active: None = None) -> torch.Tensor:
        """s' ~ p_T(. | s), (batch, n)."""
        noise = self.shard.draw(operator.noise_kind, tuple(s.shape), self.generator, s.dtype, s.device)
        return operator.sample(s, drive, T, self.generator, noise)

    def standard_normal(self, like: torch.Tensor) -> torch.Tensor:
        """A standard normal draw shaped like ``like``: what the Gaussian operator's sample adds, scaled."""
        noise = self.shard.draw("normal", tuple(like.shape), self.generator, like.dtype, like.device)
        if noise is None:
            noise = torch.randn(like.shape, generator=self.generator, dtype=like.dtype, device=like.device)
        return noise


@dataclass(frozen=True)
class ReplicaNoise:
    """The noise of R replicas' chains. ``generators`` a list: replica r draws from generators[r] with the
    shapes and the calls of the single run on that generator (a (batch, n) standard normal draw, or a
    torch.bernoulli of its firing probabilities), so its stream, and with it its trajectory, is that run's;
    R serial draws per step. One torch.Generator or None: one draw from it serves all replicas (what a GPU
    wants; the replicas are then not equal to single runs)."""

    generators: list[torch.Generator] | torch.Generator | None

    def sample(self, operator: Operator, s: torch.Tensor, drive: Drive, T,
               active: Sequence[bool] | None = None) -> torch.Tensor:
        """s' ~ p_T(. | s) for every replica, (R, batch, n); T a number or (R, 1, 1). A replica whose
        ``active`` flag is false (a padded step of its schedule) draws nothing and keeps its state."""
        with torch.no_grad():
            if not isinstance(self.generators, list):
                drawn = operator.sample(s, drive, T, self.generators)
            elif isinstance(operator, GaussianOperator):
                noise = torch.zeros_like(s)
                for r, generator in enumerate(self.generators):
                    if active is None or active[r]:
                        noise[r].normal_(generator=generator)  # what torch.randn((batch, n), generator=...) draws
                drawn = operator.sample(s, drive, T, None, noise)
            else:  # torch.bernoulli of each replica's firing probabilities, with its own generator
                rows = []
                for r, generator in enumerate(self.generators):
                    if active is None or active[r]:
                        T_r = T[r] if torch.is_tensor(T) else T
                        rows.append(operator.sample(s[r], Drive(drive.mu[r], drive.sigma[r]), T_r, generator))
                    else:
                        rows.append(s[r])
                drawn = torch.stack(rows)
            if active is None or all(active):
                return drawn
            return torch.where(torch.tensor(list(active), device=s.device).view(-1, 1, 1), drawn, s)


def noise_source(generator: torch.Generator | ReplicaNoise | None, shard: Shard = Shard()) -> ChainNoise | ReplicaNoise:
    """What draws a chain's noise: a ReplicaNoise as given, else a :class:`ChainNoise` of ``generator``."""
    return generator if isinstance(generator, ReplicaNoise) else ChainNoise(generator, shard)


@dataclass(frozen=True)
class ReplicaSchedule:
    """The heating schedules of R replicas in one training step: replica r's [T_1, ..., T_{K_r}] (each
    replica draws its own n ~ U{0..N1}), padded with T = 1 to K = max_r K_r steps. A padded step draws no
    noise, holds the replica's state (so its last state is s_{K_r}) and adds nothing to the loss or the
    update. Tensors: ``T`` (K, R, 1, 1); ``mask`` (K, R, 1, 1), 1 on real steps and 0 on padded ones;
    ``log_ratio`` (K, R, 1, 1), log(T_t / T_{t+1}) along the padded schedule (0 at t = K), computed as a
    single run computes it; ``steps`` (R, 1), K_r. ``active``: K lists of R flags (read without a device
    sync)."""

    T: torch.Tensor
    mask: torch.Tensor
    log_ratio: torch.Tensor
    steps: torch.Tensor
    active: list[list[bool]]

    @classmethod
    def pad(cls, temperatures: Sequence[Sequence[float]], dtype: torch.dtype, device) -> "ReplicaSchedule":
        """From each replica's [T_1, ..., T_{K_r}] (schedule.heating_temperatures)."""
        K = max(len(row) for row in temperatures)
        padded = [[row[t] if t < len(row) else 1.0 for row in temperatures] for t in range(K)]
        active = [[t < len(row) for row in temperatures] for t in range(K)]
        ratios = [[math.log(a / b) for a, b in zip(now, after)] for now, after in zip(padded[:-1], padded[1:])]
        ratios.append([0.0] * len(temperatures))

        def tensor(rows):
            return torch.tensor(rows, dtype=dtype, device=device).view(K, -1, 1, 1)

        steps = torch.tensor([len(row) for row in temperatures], dtype=dtype, device=device).view(-1, 1)
        return cls(tensor(padded), tensor([[float(a) for a in row] for row in active]), tensor(ratios), steps, active)


def schedule_steps(temperatures: Sequence[float] | ReplicaSchedule) -> Iterator[tuple]:
    """(T_t, active_t) for t = 1..K: a number and None (every row takes the step) for one network's
    [T_1, ..., T_K]; the replicas' (R, 1, 1) temperatures and R flags for a ReplicaSchedule."""
    if isinstance(temperatures, ReplicaSchedule):
        return zip(temperatures.T, temperatures.active)
    return ((T, None) for T in temperatures)


def settle_hidden(
    network: nn.Module, operator: Operator, x: torch.Tensor, steps: int,
    generator: torch.Generator | ReplicaNoise | None, shard: Shard = Shard(),
) -> torch.Tensor:
    """s_0 = (x, h_0): h_0 drawn by running the T = 1 chain ``steps`` times with x clamped (paper sec. 6.5).

    x: (batch, n_visible), or (R, batch, n_visible) for replicas (``generator`` then a ReplicaNoise).
    Hidden units start at 0. Returns (batch, n_units) (or (R, batch, n_units)) without gradient; the
    visible part is x itself at every step. ``shard``: x is this process's rows of a global batch, and
    the noise is its rows of the global batch's draw (asymnet.distributed).
    """
    noise = noise_source(generator, shard)
    n_visible = x.shape[-1]
    n_hidden = network.n_units - n_visible
    s = torch.cat([x, x.new_zeros(*x.shape[:-1], n_hidden)], dim=-1)
    if n_hidden == 0:
        return s
    with torch.no_grad():
        for _ in range(steps):  # only the hidden units move, so only their drive is computed
            drive = network(s, 1.0, first_unit=n_visible)
            s[..., n_visible:] = noise.sample(operator, s[..., n_visible:], drive, 1.0)
    return s


@dataclass(frozen=True)
class NoiseHeating:
    """``walkback.heating_kernel: noise``: heating steps s_t = s_{t-1} + g(T_t) sigma_0 eps_t, eps_t standard
    normal, with sigma_0 the study's ``operator.sigma`` (the T = 1 noise level the schedule's T_max is set
    from) held fixed, instead of the model's own kernel p_{T_t}(s_t | s_{t-1}) (Algorithm 1's heating). The
    walk back still learns p_{T_t}(s_{t-1} | s_t) at every step, from a heating chain the model does not
    move: a forward process fixed in advance, as in diffusion models (Sohl-Dickstein et al. 2015), so no
    kernel can lower the loss by encoding s_{t-1} into s_t and decoding it with the same map (the period-2
    code of studies/mnist_stdp_experiments.md). The eq. 5 bound stays a bound with this q in it
    (:func:`variational_bound`). The Gaussian operator only: its step with the drive :meth:`drive` is
    exactly this one."""

    sigma: float

    def drive(self, s: torch.Tensor) -> Drive:
        """The drive whose Gaussian step from s is s + g(T) sigma_0 eps: mu = s (so the mean (1 - alpha) s +
        alpha mu is s) and the pre-softplus level of sigma_0."""
        return Drive(s, s.new_full((), inverse_softplus(self.sigma)))

    def step_variances(self, operator: GaussianOperator, T: torch.Tensor) -> torch.Tensor:
        """tau = g(T)^2 sigma_0^2, the variance a heating step at each temperature of ``T`` adds."""
        return operator.temperature_factor(T) ** 2 * self.sigma**2

    def heat(self, operator: GaussianOperator, s: torch.Tensor, T: float, generator: torch.Generator | None
             ) -> torch.Tensor:
        """One heating step at T from s: s + sqrt(tau) eps."""
        tau = self.step_variances(operator, T)
        return s + tau**0.5 * torch.randn(s.shape, generator=generator, dtype=s.dtype, device=s.device)


class Targets(NamedTuple):
    """What each walk-back step t = 1..K is scored against in place of the sampled s_{t-1}: ``means`` K
    tensors shaped like the states, and ``variances`` (K, 1, 1) or with replicas (K, R, 1, 1), the spread of
    s_{t-1} about that mean, which the loss adds as its expected square (:func:`posterior_targets`)."""

    means: list[torch.Tensor]
    variances: torch.Tensor


def posterior_targets(operator: GaussianOperator, heating: NoiseHeating, states: list[torch.Tensor],
                      temperatures: list[float] | ReplicaSchedule) -> Targets:
    """``walkback.target: posterior``: for a noise-heated trajectory from s_0, the law of s_{t-1} given s_t
    and s_0 is Gaussian, with tau_k = g(T_k)^2 sigma_0^2 the variance step k adds and V = sum_{k<t} tau_k,

        mean  m_{t-1} = s_0 + V / (V + tau_t) (s_t - s_0),    variance  V tau_t / (V + tau_t)

    per unit (m_0 = s_0, variance 0). Scoring the walk back's p_{T_t}(. | s_t) against this law instead of
    the one draw s_{t-1} has the same expected loss, E[-log p(s_{t-1} | s_t)] = -log p(m_{t-1} | s_t) +
    variance / (2 std_t^2) summed over units, so the same expected gradient, without the draw's own noise,
    which at the hot steps is most of s_{t-1} - mu(s_t) (the Rao-Blackwellised target of diffusion models,
    Ho et al. 2020). Replicas: padded steps add no variance and hold the state."""
    if isinstance(temperatures, ReplicaSchedule):
        T, mask = temperatures.T, temperatures.mask
    else:
        T = torch.tensor(list(temperatures), dtype=states[0].dtype, device=states[0].device).view(-1, 1, 1)
        mask = torch.ones_like(T)
    tau = heating.step_variances(operator, T) * mask  # (K, [R,] 1, 1)
    before = torch.cumsum(tau, 0) - tau  # V: what the steps before t added
    total = (before + tau).clamp_min(torch.finfo(tau.dtype).tiny)
    x0 = states[0]
    means = [x0 + (before[t] / total[t]) * (states[t + 1] - x0) for t in range(len(tau))]
    return Targets(means, before * tau / total)


class SampledSteps(NamedTuple):
    """``walkback.sampled_steps``: m scored steps of each row's noise-heated trajectory, as a trajectory of
    their own. ``states`` [s_0, s_(1), ..., s_(m)], row i of s_(k) the state of that row's k-th chosen step
    (s_0 only where the rules read the data); ``temperatures`` (m, batch, 1), each row's T of those steps;
    ``targets`` their posterior targets (variances (m, batch, 1)); ``scale`` K / m (their summed loss and
    gradient times it estimate the whole trajectory's without bias); ``last`` a draw of s_K (for p*)."""

    states: list[torch.Tensor]
    temperatures: torch.Tensor
    targets: Targets
    scale: float
    last: torch.Tensor


def sample_steps(operator: GaussianOperator, heating: NoiseHeating, s0: torch.Tensor, temperatures: list[float],
                 m: int, generator: torch.Generator | None, noise: ChainNoise) -> SampledSteps:
    """For each row of s_0, m of the K steps of its noise-heated trajectory, drawn uniformly without
    replacement from ``generator`` (the CPU one that draws the minibatch), each scored with the posterior
    target.

    Noise heating's s_t given s_0 is Gaussian, s_0 + sqrt(V_t) eps with V_t = sum_{k<=t} tau_k, so each chosen
    step's state is drawn from s_0 directly (one draw of ``noise`` per chosen step, then s_K's), and the law
    of s_{t-1} given s_t and s_0 (:func:`posterior_targets`) reads nothing of the other steps: the chosen
    steps need not be consecutive, nor come from one trajectory, nor be the same for every row. Every
    step's expected loss is that of the full trajectory's, so K / m times their sum is an unbiased estimate
    of the trajectory's loss, and a training step costs m walk-back steps however fine the schedule. Each
    row draws its own steps, as diffusion models draw a noise level per example (Ho et al. 2020): one draw
    shared by the batch makes each update's gradient that of a few temperatures, whose weights differ by
    orders of magnitude (the first step's, with no noise before it, most)."""
    K, batch = len(temperatures), s0.shape[0]
    T = torch.tensor(list(temperatures), dtype=torch.float64)
    tau = heating.step_variances(operator, T)
    total = torch.cumsum(tau, 0)  # V_t
    m = min(m, K)
    chosen = torch.rand((batch, K), generator=generator).argsort(dim=1)[:, :m].T  # (m, batch)

    def column(values: torch.Tensor) -> torch.Tensor:  # (m, batch, 1) on the states' device and dtype
        return values.unsqueeze(-1).to(dtype=s0.dtype, device=s0.device)

    V_t, step_tau = column(total[chosen]), column(tau[chosen])
    keep = (V_t - step_tau) / V_t  # V_{t-1} / V_t, 0 at the first step

    def heated(V: torch.Tensor | float) -> torch.Tensor:  # s_0 + sqrt(V) eps, eps as the operator draws it
        return s0 + V**0.5 * noise.standard_normal(s0)

    states, means = [s0], []
    for k in range(m):
        states.append(heated(V_t[k]))
        means.append(s0 + keep[k] * (states[-1] - s0))
    return SampledSteps(states, column(T[chosen]), Targets(means, keep * step_tau), K / m,
                        heated(total[-1].item()))


def heating_drive(network: nn.Module, s: torch.Tensor, T, heating: NoiseHeating | None) -> Drive:
    """The drive of a heating step from s at T: the network's own (Algorithm 1), or ``heating``'s."""
    return network(s, T) if heating is None else heating.drive(s)


def heating_trajectory(
    network: nn.Module, operator: Operator, s0: torch.Tensor, temperatures: list[float] | ReplicaSchedule,
    generator: torch.Generator | ReplicaNoise | None, heating: NoiseHeating | None = None,
) -> list[torch.Tensor]:
    """[s_0, s_1, ..., s_K] with s_t ~ p_{T_t}(. | s_{t-1}) (Algorithm 1, line 6), each (batch, n_units)
    (replicas: (R, batch, n_units), as in :func:`heating_trajectory_with_drives`); with ``heating`` its
    steps instead (:class:`NoiseHeating`). No gradient."""
    return heating_trajectory_with_drives(network, operator, s0, temperatures, generator, heating=heating)[0]


def heating_trajectory_with_drives(
    network: nn.Module, operator: Operator, s0: torch.Tensor, temperatures: list[float] | ReplicaSchedule,
    generator: torch.Generator | ReplicaNoise | None, shard: Shard = Shard(), heating: NoiseHeating | None = None,
) -> tuple[list[torch.Tensor], list[Drive] | None]:
    """The heating trajectory and the drives F(s_t, T_{t+1}) that sampled it, t = 0..K-1. No gradient.

    For a network that ignores T these are the drives at s_1..s_{K-1} that the walk back needs too,
    which the local rule reuses instead of recomputing. ``shard`` as in :func:`settle_hidden`. Replicas:
    s0 (R, batch, n_units), a ReplicaSchedule and a ReplicaNoise; each state (R, batch, n_units).
    With ``heating`` (:class:`NoiseHeating`) the steps are its own and the drives None: the network never ran.
    """
    noise = noise_source(generator, shard)
    states, drives = [s0], []
    with torch.no_grad():
        for T, active in schedule_steps(temperatures):
            drives.append(heating_drive(network, states[-1], T, heating))
            states.append(noise.sample(operator, states[-1], drives[-1], T, active))
    return states, drives if heating is None else None


def drift_gain(T, power: float, continuous_q: float = 0.0):
    """The factor on the drift's gradient at temperature T: T^p (``walkback.step_weight_power``), times
    1 - T^-q with ``continuous_q`` = q > 0 (``walkback.step_weighting: continuous``).

    Why 1 - T^-q: along noise heating's schedule T_t = f^t (tau_t = sigma_0^2 T_t^q, V_t the variance added
    by step t), the posterior-target loss of step t weighs the error of the data estimate F by (tau_t /
    V_t)^2 / (2 tau_t) = tau_t / (2 V_t^2). The schedule's relative steps tau / V are (f^q - 1) / f^q at the
    hot end but 1 at its first step, 1 / (1 + f^q) at its second: the cold steps are coarse, and each weighs
    what a finer schedule would spread over many. Times (1 - T^-q) = ((f^q - 1) / f^q) V / tau, every step
    weighs (f^q - 1) / (2 f^q V_t), the continuous-time limit's weight of its noise level V_t (the first step's
    drift gradient a factor f^q / (f^q - 1), 11 at f = 1.1, lower; the hot ones untouched). A number for a
    number T, else a tensor shaped like T."""
    gain = T**power if power else 1.0
    if continuous_q:
        gain = gain * (1.0 - T ** (-continuous_q))
    return gain


def drift_weighted(drive: Drive, T, power: float, continuous_q: float = 0.0) -> Drive:
    """The drive with the gradient reaching its mu multiplied by :func:`drift_gain` (T ** power, with
    ``continuous_q`` also 1 - T^-q), its values and its sigma untouched: mu' + gain (mu - mu'), mu' detached.
    A log-probability of it has the plain value, the drift's gradient weighted and the noise level's
    gradient unweighted. ``T``: a number, or a tensor that broadcasts against mu (as the operators take it).
    power 0 and no continuous_q: the drive itself.
    """
    if not power and not continuous_q:
        return drive
    fixed = drive.mu.detach()
    return Drive(fixed + drift_gain(T, power, continuous_q) * (drive.mu - fixed), drive.sigma)


def walkback_losses(
    network: nn.Module, operator: Operator, states: list[torch.Tensor], temperatures: list[float] | ReplicaSchedule,
    weight_power: float = 0.0,
    targets: Targets | None = None,
    continuous_q: float = 0.0,
) -> torch.Tensor:
    """loss_t = -log p_{T_t}(s_{t-1} | s_t), averaged over the batch, for t = 1..K: shape (K,), nats; for
    replicas (states (R, batch, n_units), a ReplicaSchedule) (K, R), 0 on each replica's padded steps.
    ``temperatures`` a (K, batch, 1) tensor: each row's own temperature at each step (the steps of
    :func:`sample_steps`, with their targets).
    ``targets`` (:func:`posterior_targets`): s_{t-1} replaced by its law given s_t and s_0, the loss its
    expectation under that law, -log p_{T_t}(m_{t-1} | s_t) + variance_t / (2 std_t^2) summed over units.

    Gradient flows into the network's parameters only, never through the sampled states (one step of
    credit assignment, Algorithm 1 line 7). ``weight_power`` (``walkback.step_weight_power``): the
    gradient through the drift mu of step t is multiplied by T_t ** weight_power, the one through the noise
    level is not, and the values are unchanged (:func:`drift_weighted`); ``continuous_q`` (``walkback.step_weighting:
    continuous``) multiplies it by 1 - T_t^-q as well (:func:`drift_gain`). A network whose ``temperature_rows``
    is true (it takes a (batch,) tensor of temperatures, and its rows do not interact) scores all K steps in
    one call on the (K * batch) stacked states: the same losses, in larger and faster convolutions.
    """
    if getattr(network, "temperature_rows", False) and len(temperatures) > 1:
        batch = states[0].shape[0]
        T = temperatures.reshape(-1) if torch.is_tensor(temperatures) else \
            torch.tensor(temperatures, dtype=states[0].dtype, device=states[0].device).repeat_interleave(batch)
        after = torch.cat(states[1:])
        before = torch.cat(states[:-1] if targets is None else targets.means)
        drive = drift_weighted(network(after, T), T[:, None], weight_power, continuous_q)
        log_p = operator.log_prob(before, after, drive, T[:, None])
        if targets is not None:
            spread = targets.variances.expand(len(temperatures), batch, 1).reshape(-1, 1)
            log_p = log_p - 0.5 * (spread / operator.std(drive, T[:, None]).pow(2)).expand_as(after).sum(-1)
        return -log_p.view(len(temperatures), batch).mean(1)
    losses = []
    for t, (T, _) in enumerate(schedule_steps(temperatures), start=1):
        drive = drift_weighted(network(states[t], T), T, weight_power, continuous_q)
        if targets is None:
            losses.append(-operator.log_prob(states[t - 1], states[t], drive, T).mean(-1))
            continue
        spread = (targets.variances[t - 1] / operator.std(drive, T).pow(2)).expand_as(states[t]).sum(-1)
        losses.append((-operator.log_prob(targets.means[t - 1], states[t], drive, T) + 0.5 * spread).mean(-1))
    if isinstance(temperatures, ReplicaSchedule):
        return torch.stack(losses) * temperatures.mask.view(len(losses), -1)
    return torch.stack(losses)


class PStar(nn.Module):
    """The diagonal Gaussian p* at the hot end of the chain, tracking s_K (Algorithm 1, line 9).

    Exponential moving averages of the first and second moments of s_K with rate ``momentum``;
    the first update sets them to that batch's moments exactly. ``n_replicas``: one p* per replica, its
    moments (R, n_units).
    """

    def __init__(self, n_units: int, n_replicas: int | None = None):
        super().__init__()
        shape = (n_units,) if n_replicas is None else (n_replicas, n_units)
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

    @torch.no_grad()
    def copy_replica(self, r: int, p_star: "PStar") -> None:
        """Write replica r's moments (and the update count) into the single ``p_star``."""
        p_star.first_moment.copy_(self.first_moment[r])
        p_star.second_moment.copy_(self.second_moment[r])
        p_star.updates.copy_(self.updates)

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
    corrector: "Corrector | None" = None,
) -> torch.Tensor:
    """s_0 of a cooling chain: s_K ~ p*, then s_{t-1} ~ p_{T_t}(. | s_t) for t = K..1. Shape (n, n_units).

    ``final_mean``: the last step (t = 1) returns the mean of p_{T_1}(. | s_1) instead of a draw from
    it, i.e. the operator's denoised estimate of s_0 without the T = 1 noise (for the Gaussian operator
    (1 - alpha) s_1 + alpha F_mu(s_1); for the Bernoulli one the firing probabilities).
    ``fused``: run it with :class:`asymnet.sampler.ChainSampler` where that applies (same chain, same
    random numbers, fewer passes over memory); False keeps the operator's own step.

    ``corrector``: after each walk-back step at T_t, :class:`Corrector`'s steps at that level (the fused
    sampler is then not used; with ``final_mean`` the last corrector step at T_1 returns the mean).

    Conditional generation (inpainting, paper sec. 6): with ``known`` (n_units,) bool and ``values``
    (n, n_units), the known units are held at ``values`` at every step of the chain, from s_K on.
    """
    s = p_star.sample(n, generator)
    corrected = corrector is not None and corrector.runs_at(temperatures)
    if corrected or not (fused and ChainSampler.supports(network, operator)):
        return cool_levels(network, operator, s, temperatures, generator, final_mean,
                           None if known is None else (known, values), corrector if corrected else None)
    s = ChainSampler(network, operator, s, generator, known, values).cool(temperatures[1:] if final_mean
                                                                          else temperatures)
    if final_mean and temperatures:
        s = operator_mean(operator, s, network(s, temperatures[0]), temperatures[0])
        if known is not None:
            s = torch.where(known, values, s)
    return s


def operator_mean(operator: Operator, s: torch.Tensor, drive: Drive, T: float) -> torch.Tensor:
    """The mean of p_T(. | s) under ``drive``: the Bernoulli operator's firing probabilities at T, the
    Gaussian one's (1 - alpha) s + alpha mu."""
    return operator.mean(s, drive, T) if isinstance(operator, BernoulliOperator) else operator.mean(s, drive)


def cool_levels(network: nn.Module, operator: Operator, s: torch.Tensor, temperatures: list[float],
                generator: torch.Generator | None, final_mean: bool,
                clamp: tuple[torch.Tensor, torch.Tensor] | None = None,
                corrector: "Corrector | None" = None) -> torch.Tensor:
    """:func:`generate`'s cooling from s_K = ``s``, one level at a time with the operator's own step: at T_t
    the walk-back step, then ``corrector``'s steps at that level (none without one); with ``final_mean`` the
    last step at T_1 returns the mean; ``clamp`` (known, values) holds the known units at every step."""

    def held(state: torch.Tensor) -> torch.Tensor:
        return state if clamp is None else torch.where(clamp[0], clamp[1], state)

    s = held(s)
    for level, T in enumerate(reversed(temperatures)):
        steps = 0 if corrector is None else corrector.steps_at(T)
        for k in range(1 + steps):
            if k:
                s = held(corrector.heating.heat(operator, s, T, generator))
            drive = network(s, T)
            if final_mean and level == len(temperatures) - 1 and k == steps:
                s = operator_mean(operator, s, drive, T)
            else:
                s = operator.sample(s, drive, T, generator)
            s = held(s)
    return s


@dataclass(frozen=True)
class Corrector:
    """``evaluation.corrector_steps``: a cooling whose every walk-back step at T_t is followed by ``steps``
    corrector steps at that level. A corrector step heats the state by the noise heating's own step at T_t
    and walks it back at T_t again,

        s <- s + sqrt(tau_t) eps,  then  s <- a draw of p_{T_t}(. | s),    tau_t = g(T_t)^2 sigma_0^2,

    the corrupt-and-reconstruct chain of a denoiser (Bengio et al. 2013, "Generalized denoising
    auto-encoders"). Where the walk back is the exact posterior of the heating, p_{T_t}(s_{t-1} | s_t) =
    q(s_{t-1} | s_t), a corrector step leaves the law of s_{t-1} that the heated data has at that level
    unchanged (it draws s_t from q(s_t | s_{t-1}), then s_{t-1} back from q(s_{t-1} | s_t): a Gibbs sweep
    of the pair), so it can only pull a cooling that strayed from that law back towards it: the
    corrector of the predictor-corrector samplers of score-based diffusion (Song et al. 2021, sec. 4.2),
    here with the heating's own kernel and the walk back, which is all a noise-heated walk back learns.
    It reads no data and changes no weight; it costs ``steps`` more network evaluations per level.

    ``bands`` (``evaluation.corrector_bands``): triplets (T_high, T_low, n) that give the levels with
    T_low < T_t <= T_high n steps in place of ``steps``; the levels no band covers keep ``steps``."""

    heating: NoiseHeating
    steps: int
    bands: tuple[tuple[float, float, int], ...] = ()

    def steps_at(self, T: float) -> int:
        """The corrector steps after the walk-back step at T."""
        return next((n for high, low, n in self.bands if low < T <= high), self.steps)

    def runs_at(self, temperatures: list[float]) -> bool:
        """Whether any level of ``temperatures`` takes a corrector step."""
        return any(self.steps_at(T) for T in temperatures)

    def cool(self, network: nn.Module, operator: GaussianOperator, s: torch.Tensor, temperatures: list[float],
             generator: torch.Generator | None, final_mean: bool,
             clamp: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """:func:`generate`'s cooling from s_K = ``s`` with the corrector steps (:func:`cool_levels`)."""
        return cool_levels(network, operator, s, temperatures, generator, final_mean, clamp, self)


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
def heated_chain(network: nn.Module, operator: GaussianOperator, heating: NoiseHeating, s: torch.Tensor,
                 n_steps: int, T: float, generator: torch.Generator | None) -> torch.Tensor:
    """s after ``n_steps`` steps of the heated chain at T (``evaluation.long_run_chain: heated``): each step
    heats by the noise heating's own step at T and draws the walk back at T,

        s <- s + sqrt(tau_T) eps,  then  s <- a draw of p_T(. | s),

    :class:`Corrector`'s step, repeated. Where p_T is the heating's exact posterior the chain is a Gibbs
    sweep of the pair (s_{t-1}, s_t) and keeps the law of s_{t-1}; at the schedule's first level (T_1 = f,
    s_0 the data) that law is the data's. The T = 1 operator's own chain (:func:`run_chain`) has no such
    guarantee under noise heating, which never scores T = 1, and it never re-adds the noise its mean takes
    out: for Gaussian data of variance v and the exact posterior at tau (mean a s, a = v / (v + tau), variance
    a tau) it settles at variance v (v + tau) / (2 v + tau), half the data's where v >> tau, while this chain
    keeps v (tests/test_heated_chain.py). One network evaluation per step, as the T = 1 chain; memory O(batch)."""
    for _ in range(n_steps):
        heated = heating.heat(operator, s, T, generator)
        s = operator.sample(heated, network(heated, T), T, generator)
    return s


@torch.no_grad()
def variational_bound(
    network: nn.Module,
    operator: Operator,
    p_star: PStar,
    s0: torch.Tensor,
    temperatures: list[float],
    generator: torch.Generator | None,
    heating: NoiseHeating | None = None,
) -> torch.Tensor:
    """One-sample estimate of the lower bound of eq. 5 on log p(s_0), nats, shape (batch,):

    log p*(s_K) + sum_t [log p_{T_t}(s_{t-1} | s_t) - log q_{T_t}(s_t | s_{t-1})],  s_{1..K} ~ q,
    q the heating kernel: the operator's own p_{T_t} (Algorithm 1), or ``heating``'s fixed steps.
    With hidden units s_0 = (x, h_0), so this bounds the joint log p(x, h_0).
    """
    states = heating_trajectory(network, operator, s0, temperatures, generator, heating)
    bound = p_star.log_prob(states[-1])
    for t, T in enumerate(temperatures, start=1):
        backward: Drive = network(states[t], T)
        forward: Drive = heating_drive(network, states[t - 1], T, heating)
        bound = bound + operator.log_prob(states[t - 1], states[t], backward, T)
        bound = bound - operator.log_prob(states[t], states[t - 1], forward, T)
    return bound

"""Independent replicas: R recurrent networks of one shape trained side by side as one batched program.

Replica r owns its weights W[r] (n, n), b[r] (n,), w_T[r] (n,), sigma_visible[r] (n_visible,), its p* and
its Adam moments; no sum ever runs across replicas. Each function here is the batched form of a single-
network one, replica r's slice computed by the same formula:

- :class:`StackedRecurrentNetwork`: F_r(s, T) = W_r phi(s) + b_r [+ w_T,r log T] (networks.recurrent), one
  batched GEMM (``baddbmm``) for all replicas;
- :func:`settle_hidden`, :func:`heating_trajectory`: walkback.settle_hidden and
  walkback.heating_trajectory_with_drives (Algorithm 1, lines 5-6);
- :func:`trajectory_update`: the local STDP / reverse-STDP rule of plasticity.trajectory_update,
  dW_r = alpha (s_{t-1} - mu_r(s_t)) phi(s_t)^T / std_r^2 summed over the replica's steps, one batched GEMM;
- :func:`walkback_losses`: walkback.walkback_losses for autograd;
- :class:`StackedPStar`, :class:`StackedAdam`: walkback.PStar and torch.optim.Adam, per replica.

Randomness is the part that makes a replica *equal* to a single run, not just alike: replica r draws its
noise from its own generator, with the shapes and in the order of the single run with its seed
(:func:`sample`), so replica r follows that run up to the round-off of batched GEMMs. That forces R noise
draws per chain step (they cost about as much as the GEMMs at 100 units); on a GPU (``generators=None``)
one draw from the device's generator serves all replicas, which is faster and not equal to single runs.

The number of extra T = 1 steps n_r ~ U{0..N1}, and with it the trajectory length K_r = n_r + n_heating_r,
is drawn per replica. Trajectories are padded to K = max_r K_r; ``active`` (K, R) marks the real steps.
A padded step draws no noise, holds the replica's state (so the last state is s_{K_r}) and adds nothing
to the loss or the update. Shapes: states (R, batch, n_units), a stacked trajectory (K, R, batch, n_units);
temperatures T, log_T are (R, 1, 1) per step, (K, R, 1, 1) stacked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf
from torch import nn

from asymnet.networks.recurrent import RecurrentNetwork
from asymnet.operators import LOG_2PI, BernoulliOperator, Drive, GaussianOperator, Operator
from asymnet.walkback import PStar, drift_weighted


class StackedRecurrentNetwork(nn.Module):
    """R recurrent networks with one structure (units, rate functions, hidden-unit kind, temperature
    input), their parameters stacked along a leading replica axis: W (R, n, n), b (R, n), w_T (R, n) or
    None, sigma_visible (R, n_visible) (learned when the networks learn it), buffer sigma_hidden
    (R, n_hidden). Built from the single networks (:meth:`from_networks`), so each replica starts exactly
    where a single run with its seed starts."""

    def __init__(self, template: RecurrentNetwork, W, b, w_T, sigma_visible, sigma_hidden):
        super().__init__()
        self.n_visible, self.n_hidden, self.n_neurons = template.n_visible, template.n_hidden, template.n_neurons
        self.n_units, self.hidden_units = template.n_units, template.hidden_units
        self.temperature_conditioned = template.temperature_conditioned
        self.phi = template.phi  # depends on the rate functions and n_visible only, shared by all replicas
        self._phi_hidden, self._phi_visible = template._phi_hidden, template._phi_visible
        self.W, self.b = nn.Parameter(W), nn.Parameter(b)
        self.w_T = nn.Parameter(w_T) if w_T is not None else None
        self.sigma_visible = nn.Parameter(sigma_visible, requires_grad=template.sigma_visible.requires_grad)
        self.register_buffer("sigma_hidden", sigma_hidden)

    @classmethod
    def from_networks(cls, networks: list[RecurrentNetwork]) -> "StackedRecurrentNetwork":
        def stack(name):
            return torch.stack([getattr(network, name).detach() for network in networks]).clone()

        w_T = stack("w_T") if networks[0].w_T is not None else None
        return cls(networks[0], stack("W"), stack("b"), w_T, stack("sigma_visible"), stack("sigma_hidden"))

    @property
    def n_replicas(self) -> int:
        return self.W.shape[0]

    @property
    def rates_ignore_T(self) -> bool:
        """Whether rates(s, T) is the same at every T: slow hidden units, or fast ones without a log T input."""
        return self.hidden_units == "slow" or not self.temperature_conditioned

    @property
    def sigma(self) -> torch.Tensor:
        """Pre-softplus noise level of every unit of the state, (R, 1, n_units): visible then (slow) hidden."""
        if self.hidden_units == "fast":
            return self.sigma_visible.unsqueeze(1)
        return torch.cat([self.sigma_visible, self.sigma_hidden], dim=-1).unsqueeze(1)

    def rates(self, s: torch.Tensor, log_T: torch.Tensor) -> torch.Tensor:
        """Presynaptic rates (..., R, batch, n_neurons) at states s (..., R, batch, n_units), as
        RecurrentNetwork.rates: phi(s) for slow hidden units; for fast ones the visible rates and the
        hidden units' relaxed rates phi(W_hv phi_visible(v) + b_h + w_T,h log T) through the fixed
        (detached) hidden rows. log_T broadcasts to (..., R, 1, 1)."""
        if self.hidden_units == "slow":
            return self.phi(s)
        v = self.n_visible
        visible = self._phi_visible(s)
        potential = torch.matmul(visible, self.W[:, v:, :v].detach().transpose(1, 2)) + self.b[:, None, v:].detach()
        if self.w_T is not None:
            potential = potential + self.w_T[:, None, v:].detach() * log_T
        return torch.cat([visible, self._phi_hidden(potential)], dim=-1)

    def forward(self, s: torch.Tensor, log_T: torch.Tensor, first_unit: int = 0,
                rates: torch.Tensor | None = None) -> Drive:
        """Drive at states s (R, batch, n_units) or (K, R, batch, n_units): mu = rates W_r[u:n_units]^T + b_r
        [+ w_T,r log T] with u = ``first_unit`` (postsynaptic units before it skipped, as in
        RecurrentNetwork.forward), (..., n_units - u); sigma (R, 1, n_units - u). ``rates``: rates(s, log_T)
        when the caller has them already."""
        rows = slice(first_unit, self.n_units)
        rates = self.rates(s, log_T) if rates is None else rates
        if s.dim() == 3:
            mu = torch.baddbmm(self.b[:, None, rows], rates, self.W[:, rows].transpose(1, 2))
        else:
            mu = torch.matmul(rates, self.W[:, rows].transpose(1, 2)) + self.b[:, None, rows]
        if self.w_T is not None:
            mu = mu + self.w_T[:, None, rows] * log_T
        return Drive(mu, self.sigma[..., rows])

    @torch.no_grad()
    def copy_replica(self, r: int, network: RecurrentNetwork) -> None:
        """Write replica r's parameters into the single network ``network`` (same structure)."""
        network.W.copy_(self.W[r])
        network.b.copy_(self.b[r])
        if self.w_T is not None:
            network.w_T.copy_(self.w_T[r])
        network.sigma_visible.copy_(self.sigma_visible[r])
        network.sigma_hidden.copy_(self.sigma_hidden[r])


@dataclass(frozen=True)
class Schedule:
    """The padded heating schedules of one training step: T and log T (K, R, 1, 1), with T = 1 on padded
    steps, and ``active`` (K, R) bool, as a tensor and as Python lists (which :func:`sample` reads without
    a device sync). ``steps`` (R,): K_r, the number of real steps of each replica."""

    T: torch.Tensor
    log_T: torch.Tensor
    active: torch.Tensor
    active_lists: list[list[bool]]
    steps: torch.Tensor

    @classmethod
    def pad(cls, temperatures: list[list[float]], dtype: torch.dtype, device) -> "Schedule":
        """From each replica's [T_1, ..., T_{K_r}] (schedule.heating_temperatures)."""
        K = max(len(row) for row in temperatures)
        padded = [[row[t] if t < len(row) else 1.0 for row in temperatures] for t in range(K)]
        active = [[t < len(row) for row in temperatures] for t in range(K)]
        T = torch.tensor(padded, dtype=dtype, device=device).view(K, -1, 1, 1)
        log_T = torch.tensor([[math.log(value) for value in step] for step in padded], dtype=dtype,
                             device=device).view(K, -1, 1, 1)
        steps = torch.tensor([len(row) for row in temperatures], dtype=dtype, device=device)
        return cls(T, log_T, torch.tensor(active, device=device).view(K, -1), active, steps)


def sample(operator: Operator, s: torch.Tensor, drive: Drive, T: torch.Tensor,
           generators: list[torch.Generator] | None, active: list[bool] | None = None) -> torch.Tensor:
    """One draw s' ~ p_T(. | s) per replica, (R, batch, n); T (R, 1, 1). Replica r's noise comes from
    generators[r] with the shape and the call the single operator makes (a (batch, n) torch.randn, or a
    torch.bernoulli of its probabilities), so its stream is the single run's. A replica not ``active``
    draws nothing and keeps s. ``generators=None``: one draw for all from the device's default generator."""
    flags = active or [True] * s.shape[0]
    with torch.no_grad():
        if isinstance(operator, GaussianOperator):
            mean = operator.mean(s, drive)
            if generators is None:
                noise = torch.randn(mean.shape, dtype=mean.dtype, device=mean.device)
            else:
                noise = torch.empty_like(mean) if all(flags) else torch.zeros_like(mean)
                for r, (gen, on) in enumerate(zip(generators, flags)):
                    if on:
                        noise[r].normal_(generator=gen)  # what torch.randn((batch, n), generator=gen) draws
            drawn = torch.addcmul(mean, operator.std(drive, T), noise)
        else:
            rho = operator.mean(s, drive, T)
            if generators is None:
                drawn = torch.bernoulli(rho)
            else:
                drawn = torch.stack([torch.bernoulli(rho[r], generator=gen) if on else s[r]
                                     for r, (gen, on) in enumerate(zip(generators, flags))])
        if all(flags):
            return drawn
        return torch.where(torch.tensor(flags, device=s.device).view(-1, 1, 1), drawn, s)


def settle_hidden(network: StackedRecurrentNetwork, operator: Operator, x: torch.Tensor, steps: int,
                  generators: list[torch.Generator] | None) -> torch.Tensor:
    """s_0 = (x, h_0) per replica (walkback.settle_hidden): hidden units from 0, ``steps`` T = 1 steps of the
    hidden units with x (R, batch, n_visible) clamped. Returns (R, batch, n_units) without gradient."""
    n_visible = x.shape[-1]
    n_hidden = network.n_units - n_visible
    s = torch.cat([x, x.new_zeros(*x.shape[:-1], n_hidden)], dim=-1)
    if n_hidden == 0:
        return s
    T = x.new_ones(x.shape[0], 1, 1)
    log_T = torch.zeros_like(T)
    with torch.no_grad():
        for _ in range(steps):  # only the hidden units move (and draw noise), as in the single run
            drive = network(s, log_T, first_unit=n_visible)
            s[..., n_visible:] = sample(operator, s[..., n_visible:], drive, T, generators)
    return s


@dataclass(frozen=True)
class Trajectory:
    """A heating trajectory: ``states`` [s_0, ..., s_K] (each (R, batch, n_units)); ``drives`` F(s_{t-1}, T_t)
    and ``rates`` (R, batch, n_neurons) at s_{t-1} that sampled s_t, t = 1..K, which the local rule reuses."""

    states: list[torch.Tensor]
    drives: list[Drive]
    rates: list[torch.Tensor]


def heating_trajectory(network: StackedRecurrentNetwork, operator: Operator, s0: torch.Tensor, schedule: Schedule,
                       generators: list[torch.Generator] | None) -> Trajectory:
    """s_t ~ p_{T_t}(. | s_{t-1}) on each replica's real steps, t = 1..K, from s_0. No gradient."""
    states, drives, rates = [s0], [], []
    with torch.no_grad():
        for t in range(len(schedule.active_lists)):
            rates.append(network.rates(states[-1], schedule.log_T[t]))
            drives.append(network(states[-1], schedule.log_T[t], rates=rates[-1]))
            states.append(sample(operator, states[-1], drives[-1], schedule.T[t], generators,
                                 schedule.active_lists[t]))
    return Trajectory(states, drives, rates)


@dataclass(frozen=True)
class StackedUpdate:
    """plasticity.LocalUpdate per replica: gradients of each replica's summed walkback loss, grad_W (R, n, n),
    grad_b (R, n), grad_sigma_visible (R, n_visible) or None, grad_w_T (R, n) or None; loss (R,) nats;
    temporal_norm / equal_time_norm (R,) (NaN without ``with_terms``)."""

    grad_W: torch.Tensor
    grad_b: torch.Tensor
    grad_sigma_visible: torch.Tensor | None
    grad_w_T: torch.Tensor | None
    loss: torch.Tensor
    temporal_norm: torch.Tensor
    equal_time_norm: torch.Tensor


def trajectory_update(network: StackedRecurrentNetwork, operator: Operator, trajectory: Trajectory,
                      schedule: Schedule, with_terms: bool = True, weight_power: float = 0.0) -> StackedUpdate:
    """The local rule of plasticity.trajectory_update for every replica over its real steps (``weight_power``
    as there).

    Gaussian: error = (s_{t-1} - mu(s_t)) masked to the real steps, post = alpha error / std_t^2,
    grad_W_r = -sum_t post^T phi(s_t) / batch (one GEMM per replica over its K * batch rows), grad_b and
    grad_w_T likewise, grad of sigma_visible = -(E[z^2] - K_r) sigmoid(sigma) / softplus(sigma);
    loss_r = sum over real steps of batch-mean -log p. Bernoulli: post = alpha (s_{t-1} - rho) / T.
    When the rates ignore T, the heating's rates and drives at s_1..s_{K-1} are reused: the drive that
    sampled s_{t+1} was F(s_t, T_{t+1}), which differs from the walk back's F(s_t, T_t) only by the log T
    input, w_T (log T_t - log T_{t+1}); so only s_K needs a GEMM and a rate function here.
    """
    states = trajectory.states
    with torch.no_grad():
        later, earlier = torch.stack(states[1:]), torch.stack(states[:-1])  # (K, R, batch, n)
        K, R, batch, _ = later.shape
        mask = schedule.active.to(later.dtype).view(K, R, 1, 1)
        m, v = network.n_units, network.n_visible
        T, log_T = schedule.T, schedule.log_T
        if network.rates_ignore_T:
            last_rates = network.rates(states[-1], log_T[-1])
            pre = torch.stack(trajectory.rates[1:] + [last_rates])  # (K, R, batch, n_neurons)
            F = torch.stack([d.mu for d in trajectory.drives[1:]] + [network(states[-1], log_T[-1], rates=last_rates).mu])
            if network.w_T is not None:
                F += network.w_T[:, None, :m] * (log_T - torch.cat([log_T[1:], log_T[-1:]]))
        else:
            pre = network.rates(later, log_T)
            F = torch.matmul(pre, network.W[:, :m].transpose(1, 2)) + network.b[:, None, :m]
            if network.w_T is not None:
                F = F + network.w_T[:, None, :m] * log_T
        alpha = operator.alpha
        if isinstance(operator, GaussianOperator):
            std = operator.temperature_factor(T) * nnf.softplus(network.sigma)  # (K, R, 1, m)
            precision = std.pow(-2)
            error = F.mul_(-alpha).add_(later, alpha=alpha - 1).add_(earlier).mul_(mask)  # s_{t-1} - mu(s_t)
            post = error * (alpha * precision)
            z2 = (error * post).sum((0, 2, 3)) / alpha  # (R,)
            loss = 0.5 * z2 / batch + (std.log() * mask).sum((0, 2, 3)) + 0.5 * schedule.steps * m * LOG_2PI
            grad_sigma = None
            if network.sigma_visible.requires_grad:
                z2_visible = (error[..., :v] * post[..., :v]).sum((0, 2)) / (alpha * batch)  # (R, v)
                slope = torch.sigmoid(network.sigma_visible) / nnf.softplus(network.sigma_visible)
                grad_sigma = -(z2_visible - schedule.steps[:, None]) * slope
            temporal_scale = alpha * precision
        elif isinstance(operator, BernoulliOperator):
            logits = ((1 - alpha) * later + alpha * F) / T
            post = alpha * (earlier - torch.sigmoid(logits)) / T * mask
            loss = (nnf.binary_cross_entropy_with_logits(logits, earlier, reduction="none") * mask).sum((0, 3)).mean(1)
            grad_sigma = None
            temporal_scale = alpha / T
        else:
            raise TypeError(f"no local rule for operator {type(operator).__name__}")
        if weight_power:
            gain = T.pow(weight_power)
            post, temporal_scale = post * gain, temporal_scale * gain
        rows = lambda a: a.permute(1, 3, 0, 2).reshape(R, a.shape[-1], K * batch)  # noqa: E731  (R, units, K batch)
        flat_pre = pre.transpose(0, 1).reshape(R, K * batch, pre.shape[-1])
        grad_W = torch.zeros_like(network.W)
        grad_W[:, :m] = -torch.bmm(rows(post), flat_pre) / batch
        grad_b = torch.zeros_like(network.b)
        grad_b[:, :m] = -post.sum((0, 2)) / batch
        grad_w_T = None
        if network.w_T is not None:
            grad_w_T = torch.zeros_like(network.w_T)
            grad_w_T[:, :m] = -(post * log_T).sum((0, 2)) / batch
        temporal_norm = equal_time_norm = torch.full((R,), float("nan"))
        if with_terms:
            temporal = torch.bmm(rows((earlier - later) * temporal_scale * mask), flat_pre) / batch
            temporal_norm = temporal.flatten(1).norm(dim=1)
            equal_time_norm = (-grad_W[:, :m] - temporal).flatten(1).norm(dim=1)  # the two terms sum to dW
    return StackedUpdate(grad_W, grad_b, grad_sigma, grad_w_T, loss, temporal_norm, equal_time_norm)


def write_gradients(network: StackedRecurrentNetwork, update: StackedUpdate) -> None:
    """Place the rule's gradients in ``.grad``, where :class:`StackedAdam` reads them."""
    network.W.grad = update.grad_W
    network.b.grad = update.grad_b
    if update.grad_sigma_visible is not None:
        network.sigma_visible.grad = update.grad_sigma_visible
    if update.grad_w_T is not None:
        network.w_T.grad = update.grad_w_T


def walkback_losses(network: StackedRecurrentNetwork, operator: Operator, states: list[torch.Tensor],
                    schedule: Schedule, weight_power: float = 0.0) -> torch.Tensor:
    """Per replica, the sum over its real steps of the batch-mean -log p_{T_t}(s_{t-1} | s_t) (walkback.
    walkback_losses summed, ``weight_power`` as there), (R,) nats, with gradient into the parameters only:
    the autograd path."""
    later, earlier = torch.stack(states[1:]), torch.stack(states[:-1])
    drive = drift_weighted(network(later, schedule.log_T), schedule.T, weight_power)
    nll = -operator.log_prob(earlier, later, drive, schedule.T)  # (K, R, batch)
    return (nll.mean(-1) * schedule.active.to(nll.dtype)).sum(0)


class StackedPStar(PStar):
    """walkback.PStar per replica: moments first_moment, second_moment (R, n_units) of each replica's s_K."""

    def __init__(self, n_replicas: int, n_units: int):
        super().__init__(n_units, n_replicas)

    @torch.no_grad()
    def copy_replica(self, r: int, p_star: PStar) -> None:
        """Write replica r's p* into the single ``p_star``."""
        p_star.first_moment.copy_(self.first_moment[r])
        p_star.second_moment.copy_(self.second_moment[r])
        p_star.updates.copy_(self.updates)


class StackedAdam:
    """torch.optim.Adam (betas (0.9, 0.999), eps 1e-8, no weight decay) on stacked parameters (R, ...)
    with one learning rate per replica.

    Adam is elementwise, so on replica r's slice this is Adam with lr[r]. The update is written operation
    for operation as torch's single-tensor Adam computes it (m <- lerp(m, g, 1 - beta1);
    v <- beta2 v + (1 - beta2) g^2; p <- p - (lr / (1 - beta1^t)) m / (sqrt(v) / sqrt(1 - beta2^t) + eps)),
    so replica r's parameters equal a single run's to round-off. torch.optim.Adam itself takes one lr per
    parameter group, and a group cannot hold a slice of a tensor. A parameter without a gradient is
    skipped, its step count too, as in torch."""

    betas = (0.9, 0.999)
    eps = 1e-8

    def __init__(self, params: dict[str, torch.Tensor], lr: list[float]):
        self.params, self.lr = params, list(lr)
        self.state: dict[str, dict] = {}

    def zero_grad(self) -> None:
        for param in self.params.values():
            if param.grad is not None:
                param.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        for name, param in self.params.items():
            if param.grad is None:
                continue
            state = self.state.setdefault(name, {"step": 0, "exp_avg": torch.zeros_like(param),
                                                 "exp_avg_sq": torch.zeros_like(param)})
            state["step"] += 1
            exp_avg, exp_avg_sq, grad = state["exp_avg"], state["exp_avg_sq"], param.grad
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            bias_correction1 = 1 - beta1 ** float(state["step"])
            bias_correction2 = 1 - beta2 ** float(state["step"])
            step_size = torch.tensor([lr / bias_correction1 for lr in self.lr], dtype=param.dtype, device=param.device)
            denom = (exp_avg_sq.sqrt() / bias_correction2**0.5).add_(self.eps)
            param.sub_(step_size.view(-1, *[1] * (param.dim() - 1)) * exp_avg / denom)

    def state_dict(self) -> dict:
        return {"lr": list(self.lr), "state": {name: dict(state) for name, state in self.state.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.lr = list(state["lr"])
        self.state = {name: dict(value) for name, value in state["state"].items()}

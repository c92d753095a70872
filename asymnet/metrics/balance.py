"""Detailed-balance violation of the T = 1 operator (Goyal et al. 2017, sec. 3.1), and its exact value
for a linear Gaussian operator.

A stationary chain s_0, s_1, ... of p(s'|s) with stationary law pi obeys detailed balance when
pi(s) p(s'|s) = pi(s') p(s|s'). The entropy production per step measures how far it is from that:

    EP = E_pi[ log p(s_{t+1}|s_t) - log p(s_t|s_{t+1}) ]
       = KL( P(s_t, s_{t+1}) || P(s_{t+1}, s_t) )   >= 0, = 0 iff detailed balance,

since E_pi[log pi(s_t) - log pi(s_{t+1})] = 0 under stationarity. The first line needs only the
transition density, so it is estimated from a long chain; the second is what it converges to. The
paper reports it relative to the transition entropy H = E_pi[-log p(s_{t+1}|s_t)] (3.6%).

For a linear Gaussian operator s' = A s + c + L xi, xi ~ N(0, I), both lines have closed forms
(:func:`linear_gaussian_entropy_production`, :func:`linear_gaussian_conditional_entropy`), and a
:class:`~asymnet.networks.recurrent.RecurrentNetwork` with phi = identity under a
:class:`~asymnet.operators.GaussianOperator` is such an operator (:func:`linear_operator_matrices`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
from torch import nn

from asymnet.operators import GaussianOperator, Operator


@dataclass(frozen=True)
class EntropyProductionEstimate:
    """Streamed estimate of the detailed-balance violation of the T = 1 chain. Figures in nats per step.

    ``ep`` and ``conditional_entropy`` are means over every chain and every post-burn-in step; their
    ``*_stderr`` are batch-means standard errors (see :func:`entropy_production`).
    ``relative_irreversibility`` = ep / conditional_entropy (nan unless the entropy is positive).
    ``n_steps`` counts the post-burn-in steps of each chain; ``final_states`` (n_chains, n_units) are
    the last states, to continue the chains from.
    """

    ep: float
    ep_stderr: float
    conditional_entropy: float
    conditional_entropy_stderr: float
    relative_irreversibility: float
    relative_irreversibility_stderr: float
    n_chains: int
    n_steps: int
    final_states: torch.Tensor


def entropy_production(
    network: nn.Module,
    operator: Operator,
    s0: torch.Tensor,
    n_steps: int = 10_000,
    burn_in: int = 1_000,
    n_batches: int = 20,
    generator: torch.Generator | None = None,
    entropy_offset: float = 0.0,
) -> EntropyProductionEstimate:
    """EP = mean of log p(s_{t+1}|s_t) - log p(s_t|s_{t+1}) over n_chains parallel T = 1 chains (sec. 3.1).

    s0: (n_chains, n_units) starting states, in the network's dtype and device; with hidden units the
    chain and its EP are those of the full state (x, h). Each chain takes ``burn_in`` unrecorded steps,
    which must bring it to stationarity (EP is defined for the stationary chain), then ``n_steps``
    recorded ones. Per recorded step and chain it adds

        EP_t = log p(s_{t+1}|s_t) - log p(s_t|s_{t+1}),      H_t = -log p(s_{t+1}|s_t)

    to running sums (float64, no gradient): memory is O(n_chains * n_batches) whatever n_steps. One
    network evaluation per step: the drive at s_{t+1} serves the reverse term and the next step.

    Standard errors by batch means: the recorded steps are cut into ``n_batches`` contiguous batches
    of n_steps // n_batches steps (or one more); the mean of each (chain, batch) pair is one sample,
    and stderr = std(samples, ddof=1) / sqrt(n_chains * n_batches). Chains are independent; batches
    of one chain are nearly so when a batch is much longer than the chain's correlation time. The
    relative figure r = EP / H takes the delta-method stderr of a ratio of means:
    std(EP_k - r H_k) / (H sqrt(count)) over the same samples k; both are nan unless H > 0.

    The conditional entropy of a Gaussian (continuous) operator is a differential entropy: it
    depends on the units of s and may be negative. ``entropy_offset`` (nats per step) is added to
    it to put it on a discrete scale: for data quantised into bins of width delta per unit (in the
    units of s), H_discrete ~ H_differential - D log(delta), so pass -D log(delta) with D the
    number of units the bins apply to (e.g. 8-bit images scaled to [0, 1]: delta = 1/256,
    offset = D log 256; hidden units have no bins and stay differential). EP is a difference of
    log densities at the same points, so bin widths cancel: the offset never touches it. The
    Bernoulli operator's entropy is discrete already: leave the offset at 0.
    """
    if s0.ndim != 2 or s0.shape[1] != network.n_units:
        raise ValueError(f"s0 must be (n_chains, n_units) = (n_chains, {network.n_units}); got {tuple(s0.shape)}")
    if n_batches < 1 or n_steps < n_batches:
        raise ValueError(f"need n_steps >= n_batches >= 1; got n_steps={n_steps}, n_batches={n_batches}")
    if s0.shape[0] * n_batches < 2:
        raise ValueError("a standard error needs at least 2 (chain, batch) samples: raise n_chains or n_batches")
    if burn_in < 0:
        raise ValueError(f"burn_in must be >= 0; got {burn_in}")
    n_chains = s0.shape[0]
    bounds = [k * n_steps // n_batches for k in range(n_batches + 1)]
    ep_means = torch.zeros(n_chains, n_batches, dtype=torch.float64, device=s0.device)
    h_means = torch.zeros_like(ep_means)
    ep_total = h_total = 0.0
    with torch.no_grad():
        s = s0.detach()
        drive = network(s, 1.0)
        for _ in range(burn_in):
            s = operator.sample(s, drive, 1.0, generator)
            drive = network(s, 1.0)
        for k in range(n_batches):
            ep_sum = torch.zeros(n_chains, dtype=torch.float64, device=s0.device)
            h_sum = torch.zeros_like(ep_sum)
            for _ in range(bounds[k], bounds[k + 1]):
                s_next = operator.sample(s, drive, 1.0, generator)
                drive_next = network(s_next, 1.0)
                forward = operator.log_prob(s_next, s, drive, 1.0).double()
                backward = operator.log_prob(s, s_next, drive_next, 1.0).double()
                ep_sum += forward - backward
                h_sum -= forward
                s, drive = s_next, drive_next
            ep_total += ep_sum.sum().item()
            h_total += h_sum.sum().item()
            ep_means[:, k] = ep_sum / (bounds[k + 1] - bounds[k])
            h_means[:, k] = h_sum / (bounds[k + 1] - bounds[k]) + entropy_offset
    count = n_chains * n_batches
    ep, h = ep_total / (n_chains * n_steps), h_total / (n_chains * n_steps) + entropy_offset
    if h > 0:
        ratio = ep / h
        ratio_stderr = ((ep_means - ratio * h_means).std() / (abs(h) * math.sqrt(count))).item()
    else:
        ratio = ratio_stderr = math.nan
    return EntropyProductionEstimate(
        ep=ep,
        ep_stderr=(ep_means.std() / math.sqrt(count)).item(),
        conditional_entropy=h,
        conditional_entropy_stderr=(h_means.std() / math.sqrt(count)).item(),
        relative_irreversibility=ratio,
        relative_irreversibility_stderr=ratio_stderr,
        n_chains=n_chains,
        n_steps=n_steps,
        final_states=s,
    )


def _float64(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _check_linear_operator(A: np.ndarray, c: np.ndarray, L: np.ndarray) -> None:
    n = A.shape[0]
    if A.shape != (n, n) or c.shape != (n,) or L.shape != (n, n):
        raise ValueError(f"need A (n, n), c (n,), L (n, n); got A {A.shape}, c {c.shape}, L {L.shape}")
    radius = float(np.max(np.abs(np.linalg.eigvals(A))))
    if radius >= 1.0:
        raise ValueError(
            f"spectral radius of A is {radius:.6g} >= 1: s' = A s + c + L xi has no stationary distribution; "
            "shrink A (for the network: the leak alpha or the weights W)"
        )


def linear_gaussian_stationary(
    A: torch.Tensor | np.ndarray, c: torch.Tensor | np.ndarray, L: torch.Tensor | np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stationary law N(m, S) of s' = A s + c + L xi, xi ~ N(0, I): (m (n,), S (n, n)), float64.

    m = (I - A)^{-1} c and S solves the discrete Lyapunov equation S = A S A^T + L L^T
    (scipy.linalg.solve_discrete_lyapunov). A: (n, n) with spectral radius < 1 (else ValueError),
    c: (n,), L: (n, n).
    """
    A, c, L = _float64(A), _float64(c), _float64(L)
    _check_linear_operator(A, c, L)
    mean = np.linalg.solve(np.eye(A.shape[0]) - A, c)
    cov = scipy.linalg.solve_discrete_lyapunov(A, L @ L.T)
    return torch.from_numpy(mean), torch.from_numpy(0.5 * (cov + cov.T))


def linear_gaussian_entropy_production(
    A: torch.Tensor | np.ndarray, c: torch.Tensor | np.ndarray, L: torch.Tensor | np.ndarray
) -> float:
    """Exact EP of s' = A s + c + L xi in nats per step: KL( N(0, C) || N(0, C_rev) ), float64.

    With S the stationary covariance, the stationary joint of (s, s') has mean (m, m) and covariance
    C = [[S, S A^T], [A S, A S A^T + L L^T]]; the time-reversed joint of (s', s) swaps the blocks,
    C_rev = P C P^T with P the block swap. The means agree, and det C_rev = det C, so

        EP = KL = (tr(C_rev^{-1} C) - 2n) / 2.

    It is 0 iff A S is symmetric (detailed balance), e.g. for symmetric A with L L^T = sigma^2 I, and
    it does not depend on c. L L^T must be positive definite (else the reverse density vanishes and EP
    is infinite): ValueError. Shapes as in :func:`linear_gaussian_stationary`.
    """
    A, c, L = _float64(A), _float64(c), _float64(L)
    _, S = linear_gaussian_stationary(A, c, L)
    S = S.numpy()
    noise = L @ L.T
    try:
        np.linalg.cholesky(noise)
    except np.linalg.LinAlgError:
        raise ValueError("L L^T must be positive definite: with singular noise the reverse step is impossible "
                         "and the entropy production is infinite") from None
    n = A.shape[0]
    cross = A @ S
    joint = np.block([[S, cross.T], [cross, A @ S @ A.T + noise]])
    swap = np.block([[np.zeros((n, n)), np.eye(n)], [np.eye(n), np.zeros((n, n))]])
    reversed_joint = swap @ joint @ swap.T
    return float(0.5 * (np.trace(np.linalg.solve(reversed_joint, joint)) - 2 * n))


def linear_gaussian_conditional_entropy(L: torch.Tensor | np.ndarray) -> float:
    """H(s'|s) = log det(2 pi e L L^T) / 2 in nats per step (differential), for s' = A s + c + L xi."""
    L = _float64(L)
    sign, logdet = np.linalg.slogdet(2.0 * math.pi * math.e * (L @ L.T))
    if sign <= 0:
        raise ValueError("L L^T must be positive definite for a finite conditional entropy")
    return float(0.5 * logdet)


def linear_operator_matrices(
    network: nn.Module, operator: GaussianOperator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A, c, L) with p(s'|s) = N(A s + c, L L^T) for a RecurrentNetwork with phi = identity at T = 1.

    F(s) = W s + b (the temperature input w_T log T vanishes at T = 1), mean = (1 - alpha) s +
    alpha F(s), std = g(1) softplus(sigma) = softplus(sigma), so A = (1 - alpha) I + alpha W (n, n),
    c = alpha b (n,), L = diag(std) (n, n); float64 tensors without gradient.
    """
    if not isinstance(operator, GaussianOperator):
        raise ValueError(f"a linear Gaussian operator needs a GaussianOperator; got {type(operator).__name__}")
    phis = (getattr(network, "phi_name", None), getattr(network, "phi_visible_name", None))
    if phis != ("identity", "identity"):
        raise ValueError(f"the operator is linear only for phi = identity on every unit; got phi, phi_visible = {phis}")
    with torch.no_grad():
        W = network.W.detach().to(torch.float64)
        alpha = operator.alpha
        A = (1.0 - alpha) * torch.eye(W.shape[0], dtype=torch.float64, device=W.device) + alpha * W
        c = alpha * network.b.detach().to(torch.float64)
        std = operator.temperature_factor(1.0) * torch.nn.functional.softplus(network.sigma.detach().to(torch.float64))
    return A, c, torch.diag(std)

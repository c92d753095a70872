"""Likelihoods of a walkback model: the variational bound (eq. 5), the importance-sampled
log-likelihood (eq. 10), a full-covariance Gaussian reference in bits/dim, and the exact marginal
of a linear Gaussian model, the ground truth the estimators are tested against.

The model is the cooling chain of Goyal et al. 2017: s_K ~ p*, then s_{t-1} ~ p_{T_t}(. | s_t) for
t = K..1, so p(s_0) = E over s_{1..K} of p*(s_K) prod_t p_{T_t}(s_{t-1} | s_t). The proposal q is the
operator's own heating chain, s_t ~ p_{T_t}(. | s_{t-1}) (:func:`asymnet.walkback.heating_trajectory`),
and one trajectory's log importance weight is

    log w = log p*(s_K) + sum_{t=1..K} [log p_{T_t}(s_{t-1} | s_t) - log p_{T_t}(s_t | s_{t-1})].

Its mean over trajectories is the bound of eq. 5 and log of the mean of w is eq. 10; by Jensen the
first never exceeds the second on the same trajectories, and the second never exceeds log p(s_0) in
expectation, reaching it as the number of trajectories M grows. With hidden units s_0 = (x, h_0), both
concern the joint log p(x, h_0). All log-likelihoods are in nats, shape (batch,); to report them in
bits/dim on the 8-bit scale use :func:`asymnet.dequantization.bits_per_dim`, which adds the rescaling's
log-determinant.

Trajectory m draws its noise from its own generator, seeded with the m-th of M seeds that
:func:`trajectory_seeds` draws from the caller's generator, so the estimates do not depend on
``chunk`` (how many trajectories are simulated together, which bounds memory at
O(batch * chunk * n_units)), and trajectory m is exactly ``heating_trajectory`` run with that
generator.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from asymnet.dequantization import DEQUANTIZED, Rescaling, bits_per_dim, dequantize
from asymnet.operators import LOG_2PI, Drive, GaussianOperator, Operator
from asymnet.walkback import NoiseHeating, PStar, heating_drive

GAUSSIAN_REFERENCE_RIDGE = 1e-6
"""Ridge of the Gaussian reference, as a fraction of the dequantisation-noise variance 1/12 pixel^2."""

# Images per dequantisation call of the Gaussian reference: bounds memory at 4096 x D float64 values.
_REFERENCE_ROWS = 4096


class ImportanceEstimate(NamedTuple):
    """Figures from M heating trajectories per example, each (batch,).

    log_likelihood: log (1/M) sum_m w_m (eq. 10), nats.
    variational_bound: (1/M) sum_m log w_m (eq. 5 averaged over the same trajectories), nats.
    standard_error: delta-method standard error of log_likelihood, sqrt(s_w^2 / M) / mean(w) with
        s_w^2 the unbiased variance of the weights, nats; nan for M = 1. It is itself estimated from
        the weights and unreliable when effective_sample_size is near 1.
    effective_sample_size: (sum_m w_m)^2 / sum_m w_m^2, between 1 and M.
    """

    log_likelihood: torch.Tensor
    variational_bound: torch.Tensor
    standard_error: torch.Tensor
    effective_sample_size: torch.Tensor


def trajectory_seeds(generator: torch.Generator | None, n_trajectories: int) -> list[int]:
    """The seeds of the M trajectories' own generators, drawn from ``generator`` in one call."""
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.randint(2**62, (n_trajectories,), generator=generator, device=device).tolist()


def importance_estimate(
    network: nn.Module,
    operator: Operator,
    p_star: PStar,
    s0: torch.Tensor,
    temperatures: list[float],
    n_trajectories: int,
    generator: torch.Generator | None,
    chunk: int = 16,
    heating: NoiseHeating | None = None,
) -> ImportanceEstimate:
    """Eq. 10 and eq. 5 from the same M = ``n_trajectories`` heating trajectories per example (the
    operator's own, or with ``heating`` the fixed noise steps of walkback.NoiseHeating, which are then q).

    s0: (batch, n_units). ``temperatures``: [T_1, ..., T_K]. Trajectories are simulated ``chunk`` at a
    time and their weights folded into running log-sums in float64, so memory is
    O(batch * chunk * n_units) whatever M. Returns an :class:`ImportanceEstimate`.
    """
    if s0.ndim != 2 or s0.shape[1] != network.n_units:
        raise ValueError(f"s0 must be (batch, n_units) = (batch, {network.n_units}); got shape {tuple(s0.shape)}")
    if n_trajectories < 1 or chunk < 1:
        raise ValueError(f"n_trajectories and chunk must be >= 1; got {n_trajectories} and {chunk}")
    seeds = trajectory_seeds(generator, n_trajectories)
    batch = s0.shape[0]
    log_sum_w = s0.new_full((batch,), -math.inf, dtype=torch.float64)
    log_sum_w2 = log_sum_w.clone()
    sum_log_w = s0.new_zeros((batch,), dtype=torch.float64)
    for start in range(0, n_trajectories, chunk):
        generators = [torch.Generator(device=s0.device).manual_seed(seed) for seed in seeds[start : start + chunk]]
        log_w = _log_importance_weights(network, operator, p_star, s0, temperatures, generators, heating).double()
        log_sum_w = torch.logaddexp(log_sum_w, torch.logsumexp(log_w, 0))
        log_sum_w2 = torch.logaddexp(log_sum_w2, torch.logsumexp(2.0 * log_w, 0))
        sum_log_w += log_w.sum(0)
    return _summarise(log_sum_w, log_sum_w2, sum_log_w, n_trajectories)


def _summarise(log_sum_w: torch.Tensor, log_sum_w2: torch.Tensor, sum_log_w: torch.Tensor,
               n_trajectories: int) -> ImportanceEstimate:
    """The :class:`ImportanceEstimate` of M = ``n_trajectories`` weights per example from log sum w,
    log sum w^2 and sum log w, each (batch,)."""
    log_m = math.log(n_trajectories)
    # sum w^2 / (sum w)^2 = 1 / ESS, and M / ESS - 1 = M * var_biased(w) / mean(w)^2
    log_inverse_ess = log_sum_w2 - 2.0 * log_sum_w
    relative_excess = (torch.exp(log_inverse_ess + log_m) - 1.0).clamp_min(0.0)
    degrees_of_freedom = n_trajectories - 1 if n_trajectories > 1 else math.nan
    standard_error = (relative_excess / degrees_of_freedom).sqrt()
    return ImportanceEstimate(
        log_likelihood=log_sum_w - log_m,
        variational_bound=sum_log_w / n_trajectories,
        standard_error=standard_error,
        effective_sample_size=torch.exp(-log_inverse_ess),
    )


def importance_sampled_log_likelihood(
    network: nn.Module,
    operator: Operator,
    p_star: PStar,
    s0: torch.Tensor,
    temperatures: list[float],
    n_trajectories: int,
    generator: torch.Generator | None,
    chunk: int = 16,
    heating: NoiseHeating | None = None,
) -> torch.Tensor:
    """Eq. 10: log p(s_0) ~ log (1/M) sum_m p*(s_K^m) prod_t p_{T_t}(s_{t-1}^m | s_t^m) / q_{T_t}(s_t^m | s_{t-1}^m),

    s_{1..K}^m the operator's heating trajectories from s0 (batch, n_units). Nats, shape (batch,).
    A consistent estimator of the model's log p(s_0) as M grows, biased low for finite M. For its
    standard error and effective sample size see :func:`importance_estimate`.
    """
    return importance_estimate(network, operator, p_star, s0, temperatures, n_trajectories, generator,
                               chunk, heating).log_likelihood


def variational_bound(
    network: nn.Module,
    operator: Operator,
    p_star: PStar,
    s0: torch.Tensor,
    temperatures: list[float],
    generator: torch.Generator | None,
    n_trajectories: int = 1,
    chunk: int = 16,
    heating: NoiseHeating | None = None,
) -> torch.Tensor:
    """The lower bound of eq. 5 on log p(s_0), averaged over ``n_trajectories`` heating trajectories
    per example: (1/M) sum_m log w_m, nats, shape (batch,). With the same generator seed it uses the
    trajectories of :func:`importance_sampled_log_likelihood` and is never above it.
    """
    return importance_estimate(network, operator, p_star, s0, temperatures, n_trajectories, generator,
                               chunk, heating).variational_bound


@torch.no_grad()
def _log_importance_weights(
    network: nn.Module,
    operator: Operator,
    p_star: PStar,
    s0: torch.Tensor,
    temperatures: list[float],
    generators: list[torch.Generator],
    heating: NoiseHeating | None = None,
) -> torch.Tensor:
    """log w of one heating trajectory per generator from every example: (n_generators, batch).

    The network and the log-densities run on all trajectories at once; each trajectory's noise is
    drawn by ``operator.sample`` with its own generator, one (batch, n_units) draw per step, as
    ``heating_trajectory`` draws it.
    """
    batch, n_chains = s0.shape[0], len(generators)
    s = s0.repeat(n_chains, 1)
    log_w = s.new_zeros(n_chains * batch)
    for T in temperatures:
        forward = heating_drive(network, s, T, heating)
        s_next = torch.cat([
            operator.sample(s[rows], _drive_rows(forward, rows), T, gen)
            for rows, gen in zip(_chain_rows(n_chains, batch), generators)
        ])
        backward = network(s_next, T)
        log_w += operator.log_prob(s, s_next, backward, T) - operator.log_prob(s_next, s, forward, T)
        s = s_next
    log_w += p_star.log_prob(s)
    return log_w.view(n_chains, batch)


def _chain_rows(n_chains: int, batch: int) -> list[slice]:
    return [slice(k * batch, (k + 1) * batch) for k in range(n_chains)]


def _drive_rows(drive: Drive, rows: slice) -> Drive:
    """The drive of some rows; a per-unit sigma (n,) is shared by every row."""
    return Drive(drive.mu[rows], drive.sigma[rows] if drive.sigma.ndim == 2 else drive.sigma)


def gaussian_log_density(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, cov) in nats, shape (batch,), via the Cholesky factor of cov (n, n); x (batch, n)."""
    chol = torch.linalg.cholesky(cov)
    z = torch.linalg.solve_triangular(chol, (x - mean).T, upper=False)
    return -0.5 * z.pow(2).sum(0) - chol.diagonal().log().sum() - 0.5 * x.shape[1] * LOG_2PI


def gaussian_reference_bits_per_dim(
    train_pixels_uint8: torch.Tensor,
    test_pixels_uint8: torch.Tensor,
    rescaling: Rescaling,
    generator: torch.Generator | None,
) -> float:
    """Bits/dim on the 8-bit scale of a full-covariance Gaussian fitted to the dequantised training set.

    Pixels x in {0..255} (N, ...) become y = scale (x + u) + offset, u ~ U[0, 1) per pixel (drawn by
    :func:`asymnet.data.mnist.dequantize`, training set first, then the test set). The Gaussian has
    the maximum-likelihood mean and covariance (divisor N) of the training y, plus a ridge of
    GAUSSIAN_REFERENCE_RIDGE * scale^2 / 12 on the diagonal. Dequantisation makes the covariance
    non-singular without it: u is independent of x, so Cov(y) = Cov(scale x) + scale^2 I / 12 and even
    MNIST's constant border pixels keep the variance scale^2 / 12 (1 / (12 * 256^2) for
    DEQUANTIZED); the ridge, a millionth of that floor, only guards the Cholesky factorisation. The
    mean log-density of the test y goes through :func:`asymnet.dequantization.bits_per_dim`, which adds the
    log-determinant D log|scale|, so the figure does not depend on the rescaling. Float64 throughout.
    """
    for name, pixels in (("train_pixels_uint8", train_pixels_uint8), ("test_pixels_uint8", test_pixels_uint8)):
        if pixels.dtype != torch.uint8 or pixels.ndim < 2:
            raise ValueError(f"{name} must be uint8 pixels of shape (N, ...); got {pixels.dtype} {tuple(pixels.shape)}")
    train = train_pixels_uint8.reshape(train_pixels_uint8.shape[0], -1)
    test = test_pixels_uint8.reshape(test_pixels_uint8.shape[0], -1)
    n_train, n_dims = train.shape
    if test.shape[1] != n_dims:
        raise ValueError(f"train images have {n_dims} pixels, test images {test.shape[1]}")
    if n_train <= n_dims:
        raise ValueError(f"a full-covariance Gaussian over {n_dims} pixels needs more than {n_dims} training "
                         f"images; got {n_train}")
    # Accumulating around the noise-free mean E[y] = scale (mean(x) + 1/2) + offset avoids cancellation.
    shift = rescaling.scale * (train.double().mean(0) + 0.5) + rescaling.offset
    sum_d = torch.zeros(n_dims, dtype=torch.float64)
    sum_dd = torch.zeros(n_dims, n_dims, dtype=torch.float64)
    for rows in torch.split(train, _REFERENCE_ROWS):
        d = _rescaled_dequantized(rows, rescaling, generator) - shift
        sum_d += d.sum(0)
        sum_dd += d.T @ d
    mean_d = sum_d / n_train
    cov = sum_dd / n_train - torch.outer(mean_d, mean_d)
    cov += GAUSSIAN_REFERENCE_RIDGE * rescaling.scale**2 / 12.0 * torch.eye(n_dims, dtype=torch.float64)
    mean = shift + mean_d
    total = sum(gaussian_log_density(_rescaled_dequantized(rows, rescaling, generator), mean, cov).sum().item()
                for rows in torch.split(test, _REFERENCE_ROWS))
    return bits_per_dim(torch.tensor(total / test.shape[0], dtype=torch.float64), n_dims, rescaling).item()


def _rescaled_dequantized(
    pixels: torch.Tensor, rescaling: Rescaling, generator: torch.Generator | None
) -> torch.Tensor:
    """scale (x + u) + offset, (N, D) float64; dividing by DEQUANTIZED.scale = 2^-8 is exact."""
    return rescaling.scale * (dequantize(pixels, generator, torch.float64) / DEQUANTIZED.scale) + rescaling.offset


def linear_gaussian_kernels(
    network: nn.Module, operator: GaussianOperator, temperatures: list[float]
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """The cooling steps s_{t-1} = A_t s_t + c_t + L_t xi, xi ~ N(0, I), of a linear recurrent network.

    For F(s) = W s + b [+ w_T log T] (phi = identity on every unit) and a Gaussian operator with leak
    alpha: A_t = (1 - alpha) I + alpha W, c_t = alpha (b + w_T log T_t),
    L_t = diag(g(T_t) softplus(sigma)). Returns ([A_t], [c_t], [L_t]) for t = 1..K, each (n, n) or (n,),
    in the order of ``temperatures``.
    """
    phis = (getattr(network, "phi_name", None), getattr(network, "phi_visible_name", None))
    if not isinstance(operator, GaussianOperator) or phis != ("identity", "identity"):
        raise ValueError("the exact marginal needs a RecurrentNetwork with phi = 'identity' on every unit and a "
                         f"GaussianOperator; got phi {phis} and {type(operator).__name__}")
    with torch.no_grad():
        W, b, n = network.W.detach(), network.b.detach(), network.n_units
        identity = torch.eye(n, dtype=W.dtype, device=W.device)
        A = (1.0 - operator.alpha) * identity + operator.alpha * W
        noise_level = nn.functional.softplus(network.sigma.detach())
        As, cs, Ls = [], [], []
        for T in temperatures:
            drift = b if network.w_T is None else b + network.w_T.detach() * math.log(T)
            As.append(A)
            cs.append(operator.alpha * drift)
            Ls.append(torch.diag(operator.temperature_factor(T) * noise_level))
    return As, cs, Ls


def linear_gaussian_marginal(
    A_list: list[torch.Tensor],
    c_list: list[torch.Tensor],
    L_list: list[torch.Tensor],
    p_star_mean: torch.Tensor,
    p_star_cov: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact Gaussian marginal of s_0 under s_K ~ N(p_star_mean, p_star_cov) and the cooling steps
    s_{t-1} = A_t s_t + c_t + L_t xi for t = K..1 (lists indexed t = 1..K, as the temperatures):

        m <- A_t m + c_t,   P <- A_t P A_t^T + L_t L_t^T.

    A_t, L_t: (n, n); c_t, p_star_mean: (n,); p_star_cov: (n, n). Returns (mean (n,), cov (n, n)).
    """
    mean, cov = p_star_mean, p_star_cov
    for A, c, L in zip(reversed(A_list), reversed(c_list), reversed(L_list)):
        mean = A @ mean + c
        cov = A @ cov @ A.T + L @ L.T
    return mean, 0.5 * (cov + cov.T)


def exact_marginal(
    network: nn.Module, operator: GaussianOperator, p_star: PStar, temperatures: list[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (n,), cov (n, n)) of the model's s_0 for a linear network: p* = N(mean, diag(var)) cooled
    through :func:`linear_gaussian_kernels` by :func:`linear_gaussian_marginal`."""
    As, cs, Ls = linear_gaussian_kernels(network, operator, temperatures)
    return linear_gaussian_marginal(As, cs, Ls, p_star.mean, torch.diag(p_star.var))


def exact_log_likelihood(
    network: nn.Module, operator: GaussianOperator, p_star: PStar, temperatures: list[float], s0: torch.Tensor
) -> torch.Tensor:
    """log p(s_0) of a linear Gaussian walkback model, exactly: nats, shape (batch,), s0 (batch, n)."""
    mean, cov = exact_marginal(network, operator, p_star, temperatures)
    return gaussian_log_density(s0, mean, cov)


@torch.no_grad()
def visible_importance_estimate(
    network: nn.Module,
    operator: Operator,
    p_star: PStar,
    x: torch.Tensor,
    temperatures: list[float],
    n_trajectories: int,
    generator: torch.Generator | None,
    settle_steps: int,
    chunk: int = 16,
    heating: NoiseHeating | None = None,
) -> ImportanceEstimate:
    """Eq. 10 and eq. 5 for the visible units alone, log p(x), nats, (batch,); x: (batch, n_visible).

    Without hidden units this is :func:`importance_estimate` at s_0 = x. With hidden units the hidden
    start h_0 joins the proposal: h_{-1} comes from ``settle_steps - 1`` clamped T = 1 steps (as in
    training), then each of the M trajectories draws its own h_0 ~ q(h_0 | x, h_{-1}), the last clamped
    settling step, whose density is known, and the log weight gains -log q(h_0 | x, h_{-1}):

        log w = log p(x, h_0) one-trajectory weight - log q(h_0 | x, h_{-1}).

    For any fixed h_{-1} this q is a proper density over h_0, so E[log w] <= log p(x) (the bound) and
    the log of the mean weight is eq. 10 for log p(x), exact as M grows. The standard error is the
    delta-method one over the M weights.
    """
    from asymnet.walkback import settle_hidden

    n_visible = x.shape[1]
    if network.n_units == n_visible:
        return importance_estimate(network, operator, p_star, x, temperatures, n_trajectories, generator, chunk, heating)
    batch, M = x.shape[0], n_trajectories
    s_prev = settle_hidden(network, operator, x, max(settle_steps - 1, 0), generator).repeat_interleave(M, 0)
    drive = network(s_prev, 1.0)
    s0 = operator.sample(s_prev, drive, 1.0, generator)
    s0[:, :n_visible] = s_prev[:, :n_visible]
    hidden = Drive(drive.mu[:, n_visible:], None if drive.sigma is None else drive.sigma[..., n_visible:])
    log_q = operator.log_prob(s0[:, n_visible:], s_prev[:, n_visible:], hidden, 1.0)
    joint = importance_estimate(network, operator, p_star, s0, temperatures, 1, generator, chunk, heating)
    log_w = (joint.log_likelihood.double() - log_q.double()).view(batch, M)
    return _summarise(torch.logsumexp(log_w, 1), torch.logsumexp(2.0 * log_w, 1), log_w.sum(1), M)

"""Likelihoods: the exact marginal of a linear Gaussian walkback model, the variational bound and the
importance-sampled log-likelihood against it, bits/dim, and the Gaussian reference against scipy."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from asymnet import walkback
from asymnet.dequantization import DEQUANTIZED, Rescaling, bits_per_dim, dequantize
from asymnet.metrics import likelihood
from asymnet.networks.recurrent import RecurrentNetwork
from asymnet.operators import GaussianOperator

TEMPERATURES = [1.0, 1.0, 2.0, 4.0]
# A symmetric part plus a small antisymmetric one: an asymmetric network whose heating chain is
# still a fair proposal for its cooling chain, so that eq. 10 converges within 1000 trajectories.
W_SYMMETRIC = [[0.5, 0.2, 0.0], [0.2, 0.4, 0.1], [0.0, 0.1, 0.3]]
W_ANTISYMMETRIC = [[0.0, 0.1, 0.0], [-0.1, 0.0, 0.1], [0.0, -0.1, 0.0]]


def _linear_model(temperature_input=False):
    """F(s) = W s + b [+ w_T log T], alpha 0.5, noise std 0.3 sqrt(T); p* = moments of s_K heated from N(0, I)."""
    net = RecurrentNetwork(3, 0, phi="identity", sigma_init=0.3, learn_sigma=False,
                           generator=torch.Generator().manual_seed(0), temperature_input=temperature_input).double()
    with torch.no_grad():
        net.W.copy_(torch.tensor(W_SYMMETRIC, dtype=torch.float64) + torch.tensor(W_ANTISYMMETRIC, dtype=torch.float64))
        net.b.copy_(torch.tensor([0.2, -0.1, 0.3], dtype=torch.float64))
        if temperature_input:
            net.w_T.copy_(torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64))
    op = GaussianOperator(0.5, "sqrt_T")
    gen = torch.Generator().manual_seed(1)
    data = torch.randn(20_000, 3, generator=gen, dtype=torch.float64)
    p_star = walkback.PStar(3).double()
    p_star.update(walkback.heating_trajectory(net, op, data, TEMPERATURES, gen)[-1], momentum=1.0)
    return net, op, p_star


def _model_draws(mean, cov, n, seed):
    noise = torch.randn(n, mean.shape[0], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return mean + noise @ torch.linalg.cholesky(cov).T


@pytest.mark.parametrize("temperature_input", [False, True])
def test_exact_marginal_by_propagation_matches_generated_samples(temperature_input):
    net, op, p_star = _linear_model(temperature_input)
    mean, cov = likelihood.exact_marginal(net, op, p_star, TEMPERATURES)
    n = 200_000
    samples = walkback.generate(net, op, p_star, TEMPERATURES, n, torch.Generator().manual_seed(3))
    # 5 standard errors: of a mean, sqrt(C_ii / n); of a covariance entry, sqrt((C_ii C_jj + C_ij^2) / n)
    mean_se = (cov.diagonal() / n).sqrt()
    cov_se = ((torch.outer(cov.diagonal(), cov.diagonal()) + cov**2) / n).sqrt()
    assert ((samples.mean(0) - mean).abs() < 5 * mean_se).all()
    assert ((torch.cov(samples.T) - cov).abs() < 5 * cov_se).all()
    # the cooling chain really moves the state: p*'s own moments are far from the marginal's
    assert ((p_star.mean - mean).abs() > 50 * mean_se).any()


def test_bound_below_importance_estimate_below_exact_and_estimate_converges_with_M():
    net, op, p_star = _linear_model()
    mean, cov = likelihood.exact_marginal(net, op, p_star, TEMPERATURES)
    x = _model_draws(mean, cov, 100, seed=4)
    exact = likelihood.exact_log_likelihood(net, op, p_star, TEMPERATURES, x)
    estimates = {M: likelihood.importance_estimate(net, op, p_star, x, TEMPERATURES, M,
                                                   torch.Generator().manual_seed(5), chunk=1000)
                 for M in (10, 1000)}
    gaps = {M: (exact - est.log_likelihood).mean().item() for M, est in estimates.items()}
    for est in estimates.values():
        # Jensen on the same trajectories: mean of log w <= log of mean w, example by example
        assert (est.variational_bound <= est.log_likelihood + 1e-12).all()
        assert (est.effective_sample_size >= 1 - 1e-12).all() and (est.standard_error > 0).all()
    bound_gap = (exact - estimates[1000].variational_bound).mean().item()
    batch_se = (exact - estimates[1000].log_likelihood).std().item() / math.sqrt(len(x))
    # E[log mean w] <= log p(x): over 100 examples the estimate may exceed the truth only by sampling error
    assert gaps[1000] > -3 * batch_se
    assert bound_gap > gaps[10] > gaps[1000]
    assert bound_gap > 0.5  # the bound is loose here (0.88 nats), so convergence is not trivial
    assert gaps[1000] < 0.1  # measured 0.07 +- 0.02 nats (0.41 at M = 10; 0.02 at M = 10^4)


def test_one_trajectory_estimate_is_the_one_sample_bound_of_the_same_trajectory():
    net, op, p_star = _linear_model()
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    estimate = likelihood.importance_sampled_log_likelihood(net, op, p_star, x, TEMPERATURES, 1,
                                                            torch.Generator().manual_seed(7), chunk=1)
    (seed,) = likelihood.trajectory_seeds(torch.Generator().manual_seed(7), 1)
    bound = walkback.variational_bound(net, op, p_star, x, TEMPERATURES, torch.Generator().manual_seed(seed))
    assert torch.allclose(estimate, bound, rtol=0, atol=1e-10)
    assert torch.allclose(likelihood.variational_bound(net, op, p_star, x, TEMPERATURES,
                                                       torch.Generator().manual_seed(7)), bound, rtol=0, atol=1e-10)


def test_running_statistics_equal_direct_formulas_over_the_trajectories_of_each_seed():
    net, op, p_star = _linear_model()
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    M = 20
    seeds = likelihood.trajectory_seeds(torch.Generator().manual_seed(9), M)
    log_w = torch.stack([walkback.variational_bound(net, op, p_star, x, TEMPERATURES, torch.Generator().manual_seed(s))
                         for s in seeds])
    w = log_w.exp()
    est = likelihood.importance_estimate(net, op, p_star, x, TEMPERATURES, M, torch.Generator().manual_seed(9), chunk=7)
    assert torch.allclose(est.log_likelihood, w.mean(0).log(), rtol=0, atol=1e-10)
    assert torch.allclose(est.variational_bound, log_w.mean(0), rtol=0, atol=1e-10)
    assert torch.allclose(est.standard_error, w.std(0) / math.sqrt(M) / w.mean(0), rtol=1e-8)
    assert torch.allclose(est.effective_sample_size, w.sum(0) ** 2 / (w**2).sum(0), rtol=1e-8)


def test_estimates_do_not_depend_on_the_chunk_size():
    net, op, p_star = _linear_model()
    x = torch.randn(30, 3, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    M = 40
    one_at_a_time, all_at_once = (
        likelihood.importance_estimate(net, op, p_star, x, TEMPERATURES, M, torch.Generator().manual_seed(11), chunk)
        for chunk in (1, M))
    for a, b in zip(one_at_a_time, all_at_once):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)  # rounding of matrix products of other sizes only


def test_bits_per_dim_of_a_hand_computed_case_includes_the_log_determinant():
    D = 784
    # 1000 nats on the [0, 1) scale: bpd = -(1000 + 784 ln(1/256)) / (784 ln 2) = 8 - 1000 / (784 ln 2)
    bpd = bits_per_dim(torch.tensor([1000.0], dtype=torch.float64), D, DEQUANTIZED)
    assert bpd.item() == pytest.approx(6.159827753968159, abs=1e-12)
    # a uniform density codes 8-bit pixels in 8 bits, on [0, 1) (log p = 0) or on [-1, 1) (log p = -D ln 2)
    assert bits_per_dim(torch.zeros(1), D, DEQUANTIZED).item() == pytest.approx(8.0, abs=1e-5)
    to_symmetric = Rescaling(scale=2 / 256, offset=-1.0)
    assert bits_per_dim(torch.tensor([-D * math.log(2.0)], dtype=torch.float64), D, to_symmetric).item() == \
        pytest.approx(8.0, abs=1e-12)


def _synthetic_pixels(n, seed):
    """(n, 7) uint8: four correlated columns, a saturated one, and two constant-0 'border' pixels."""
    gen = torch.Generator().manual_seed(seed)
    latent = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    mixing = torch.tensor([[40.0, 10.0, -30.0, 5.0], [0.0, 25.0, 20.0, -35.0]], dtype=torch.float64)
    body = (latent @ mixing + torch.tensor([120.0, 90.0, 140.0, 60.0])).round().clamp(0, 255)
    saturated = (latent[:, :1] * 200 + 200).round().clamp(0, 255)
    return torch.cat([body, saturated, torch.zeros(n, 2, dtype=torch.float64)], dim=1).to(torch.uint8)


def test_gaussian_reference_equals_scipy_on_the_dequantized_data_and_ignores_the_rescaling():
    train, test = _synthetic_pixels(400, seed=12), _synthetic_pixels(100, seed=13)
    D = train.shape[1]
    bpd = likelihood.gaussian_reference_bits_per_dim(train, test, DEQUANTIZED, torch.Generator().manual_seed(14))

    gen = torch.Generator().manual_seed(14)  # the same noise: training set first, then the test set
    y_train = dequantize(train, gen, torch.float64).numpy()
    y_test = dequantize(test, gen, torch.float64).numpy()
    cov = np.cov(y_train, rowvar=False, bias=True)
    # constant pixels keep the noise floor 1/12 pixel^2: non-singular without any ridge
    assert np.linalg.eigvalsh(cov).min() > 0.5 / (12 * 256**2)
    cov += likelihood.GAUSSIAN_REFERENCE_RIDGE / (12 * 256**2) * np.eye(D)
    mean_log_density = multivariate_normal(y_train.mean(0), cov).logpdf(y_test).mean()
    expected = -(mean_log_density + D * math.log(1 / 256)) / (D * math.log(2.0))
    assert bpd == pytest.approx(expected, abs=1e-9)

    rescaled = likelihood.gaussian_reference_bits_per_dim(train, test, Rescaling(2 / 256, -1.0),
                                                          torch.Generator().manual_seed(14))
    assert rescaled == pytest.approx(bpd, abs=1e-9)  # without the log-determinant they would differ by 1 bit/dim


def test_gaussian_reference_needs_more_images_than_pixels():
    with pytest.raises(ValueError, match="needs more than 7 training images; got 5"):
        likelihood.gaussian_reference_bits_per_dim(_synthetic_pixels(5, 0), _synthetic_pixels(5, 1), DEQUANTIZED, None)

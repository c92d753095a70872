"""Detailed-balance violation: the exact linear-Gaussian entropy production against closed forms, and the
streamed chain estimator on real package networks against the exact value."""

import gc
import itertools
import math
import tracemalloc

import numpy as np
import pytest
import torch

from asymnet.metrics.balance import (
    entropy_production,
    linear_gaussian_conditional_entropy,
    linear_gaussian_entropy_production,
    linear_gaussian_stationary,
    linear_operator_matrices,
)
from asymnet.networks.recurrent import RecurrentNetwork
from asymnet.operators import BernoulliOperator, GaussianOperator

N_CHAINS = 400


@pytest.fixture(autouse=True, scope="module")
def one_intra_op_thread():
    # The chains multiply (400, n) by (n, n) matrices: a second thread only adds synchronisation, and on a
    # busy 2-core machine MKL's thread hand-off turned a 7 us addmm into ~9 ms. Restored after this module.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _matrix_with_spectral_radius(n: int, radius: float, seed: int, symmetric: bool = False) -> torch.Tensor:
    M = torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    if symmetric:
        M = M + M.T
    return M * (radius / torch.linalg.eigvals(M).abs().max())


def _damped_rotation(r: float, theta: float) -> np.ndarray:
    return r * np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])


def _linear_network(A: torch.Tensor, seed: int, alpha: float = 0.5, sigma: float = 0.3):
    """A RecurrentNetwork (phi = identity) and GaussianOperator whose T = 1 chain is s' = A s + c + sigma xi."""
    n = A.shape[0]
    generator = torch.Generator().manual_seed(seed)
    network = RecurrentNetwork(n, 0, phi="identity", sigma_init=sigma, learn_sigma=False, generator=generator,
                               temperature_input=False).double()
    with torch.no_grad():
        network.W.copy_((A - (1.0 - alpha) * torch.eye(n, dtype=torch.float64)) / alpha)
        network.b.copy_(torch.randn(n, generator=generator, dtype=torch.float64))
    return network, GaussianOperator(alpha, "sqrt_T")


def _stationary_states(A, c, L, n_chains: int, generator: torch.Generator) -> torch.Tensor:
    """n_chains exact draws from the stationary law, so the chains need no burn-in."""
    mean, cov = linear_gaussian_stationary(A, c, L)
    noise = torch.randn(n_chains, mean.shape[0], generator=generator, dtype=torch.float64)
    return mean + noise @ torch.linalg.cholesky(cov).T


# --- exact entropy production of s' = A s + c + L xi ---------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_ep_is_zero_for_symmetric_A_with_isotropic_noise(seed):
    A = _matrix_with_spectral_radius(5, 0.9, seed, symmetric=True)
    c = torch.randn(5, generator=torch.Generator().manual_seed(seed + 10), dtype=torch.float64)
    assert abs(linear_gaussian_entropy_production(A, c, 0.4 * torch.eye(5, dtype=torch.float64))) < 1e-10


@pytest.mark.parametrize("a", [-0.95, -0.3, 0.0, 0.5, 0.99])
def test_exact_ep_is_zero_in_one_dimension(a):
    # Every stationary 1-D Gaussian AR(1) chain is reversible: cov(s, s') = a S is symmetric.
    assert abs(linear_gaussian_entropy_production(np.array([[a]]), np.array([1.5]), np.array([[0.7]]))) < 1e-10


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_ep_is_positive_for_asymmetric_A_and_for_anisotropic_noise(seed):
    asymmetric = _matrix_with_spectral_radius(4, 0.85, seed)
    assert linear_gaussian_entropy_production(asymmetric, torch.zeros(4), 0.3 * torch.eye(4)) > 1e-3
    # A symmetric A is not enough: with per-unit noise levels that differ, A S is no longer symmetric.
    symmetric = _matrix_with_spectral_radius(4, 0.85, seed, symmetric=True)
    anisotropic = torch.diag(torch.tensor([0.1, 0.3, 0.5, 1.0], dtype=torch.float64))
    assert linear_gaussian_entropy_production(symmetric, torch.zeros(4), anisotropic) > 1e-3


@pytest.mark.parametrize("r, theta, sigma",
                         [(0.5, 0.3, 1.0), (0.9, 1.0, 0.2), (0.8, math.pi / 2, 3.0), (0.7, 0.0, 1.0)])
def test_exact_ep_of_a_damped_rotation_matches_its_closed_form(r, theta, sigma):
    # A = r R(theta), L = sigma I: S = sigma^2 / (1 - r^2) I, hence EP = 4 r^2 sin^2(theta) / (1 - r^2), free of sigma.
    exact = linear_gaussian_entropy_production(_damped_rotation(r, theta), np.zeros(2), sigma * np.eye(2))
    assert exact == pytest.approx(4 * r**2 * math.sin(theta) ** 2 / (1 - r**2), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("seed", [3, 4])
def test_exact_ep_matches_the_expected_log_ratio_of_transition_densities(seed):
    # EP = E[log p(s'|s) - log p(s|s')] with Q = L L^T: E[-log p(s|s')] - E[-log p(s'|s)]
    #    = tr(Q^{-1} Cov(s - A s')) / 2 - n / 2, since s - A s' - c has mean 0 and
    # Cov(s - A s') = S - S A^T A^T - A A S + A S A^T. Full, non-isotropic L.
    generator = torch.Generator().manual_seed(seed)
    A = _matrix_with_spectral_radius(4, 0.8, seed)
    L = torch.randn(4, 4, generator=generator, dtype=torch.float64) * 0.5 + torch.eye(4, dtype=torch.float64)
    c = torch.randn(4, generator=generator, dtype=torch.float64)
    _, S = linear_gaussian_stationary(A, c, L)
    residual_cov = S - S @ A.T @ A.T - A @ A @ S + A @ S @ A.T
    expected = 0.5 * torch.trace(torch.linalg.solve(L @ L.T, residual_cov)).item() - 2.0
    assert linear_gaussian_entropy_production(A, c, L) == pytest.approx(expected, rel=1e-9)


def test_stationary_law_is_a_fixed_point_of_the_linear_chain():
    generator = torch.Generator().manual_seed(5)
    A = _matrix_with_spectral_radius(5, 0.9, 5)
    c = torch.randn(5, generator=generator, dtype=torch.float64)
    L = torch.randn(5, 5, generator=generator, dtype=torch.float64)
    mean, cov = linear_gaussian_stationary(A, c, L)
    assert torch.allclose(A @ mean + c, mean, rtol=0, atol=1e-12)
    assert torch.allclose(A @ cov @ A.T + L @ L.T, cov, rtol=0, atol=1e-10)


def test_conditional_entropy_is_the_gaussian_entropy_of_the_noise():
    L = torch.tensor([[0.5, 0.0], [0.2, 2.0]], dtype=torch.float64)
    expected = math.log(2 * math.pi * math.e) + math.log(0.5 * 2.0)
    assert linear_gaussian_conditional_entropy(L) == pytest.approx(expected, rel=1e-12)


def test_unstable_A_is_rejected_naming_its_spectral_radius():
    A = np.diag([0.5, 1.2])
    with pytest.raises(ValueError, match=r"spectral radius of A is 1\.2 >= 1"):
        linear_gaussian_stationary(A, np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match=r"spectral radius"):
        linear_gaussian_entropy_production(_damped_rotation(1.0, 0.4), np.zeros(2), np.eye(2))


# --- the package's linear network as a linear Gaussian operator ---------------------------------------


def test_linear_operator_matrices_reproduce_the_operator_mean_and_std():
    network, operator = _linear_network(_matrix_with_spectral_radius(4, 0.8, 6), seed=6, alpha=0.3, sigma=0.2)
    A, c, L = linear_operator_matrices(network, operator)
    s = torch.randn(7, 4, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    drive = network(s, 1.0)
    assert torch.allclose(operator.mean(s, drive), s @ A.T + c, rtol=0, atol=1e-12)
    assert torch.allclose(operator.std(drive, 1.0), torch.diagonal(L), rtol=0, atol=1e-12)


def test_linear_operator_matrices_reject_a_nonlinear_network():
    network = RecurrentNetwork(3, 0, phi="tanh", generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="phi = identity"):
        linear_operator_matrices(network, GaussianOperator(0.5))


# --- the streamed estimator against the exact value ---------------------------------------------------


@pytest.mark.parametrize("n_units, seed, radius", [(3, 0, 0.8), (4, 1, 0.85), (5, 2, 0.9), (6, 3, 0.85)])
def test_streamed_ep_of_an_asymmetric_recurrent_network_matches_the_exact_value(n_units, seed, radius):
    network, operator = _linear_network(_matrix_with_spectral_radius(n_units, radius, seed), seed)
    A, c, L = linear_operator_matrices(network, operator)
    generator = torch.Generator().manual_seed(100 + seed)
    s0 = _stationary_states(A, c, L, N_CHAINS, generator)
    estimate = entropy_production(network, operator, s0, burn_in=10, generator=generator)  # default n_steps

    exact = linear_gaussian_entropy_production(A, c, L)
    exact_entropy = linear_gaussian_conditional_entropy(L)
    assert exact > 0.01
    assert abs(estimate.ep - exact) < 3 * estimate.ep_stderr
    assert abs(estimate.ep - exact) < 0.02 * exact
    assert abs(estimate.conditional_entropy - exact_entropy) < 3 * estimate.conditional_entropy_stderr
    assert abs(estimate.relative_irreversibility - exact / exact_entropy) < 3 * estimate.relative_irreversibility_stderr
    assert (estimate.n_chains, estimate.n_steps, estimate.final_states.shape) == (N_CHAINS, 10_000, (N_CHAINS, n_units))


def test_streamed_ep_of_a_symmetric_recurrent_network_is_zero():
    network, operator = _linear_network(_matrix_with_spectral_radius(4, 0.85, 4, symmetric=True), seed=4)
    A, c, L = linear_operator_matrices(network, operator)
    assert abs(linear_gaussian_entropy_production(A, c, L)) < 1e-10
    generator = torch.Generator().manual_seed(104)
    estimate = entropy_production(network, operator, _stationary_states(A, c, L, N_CHAINS, generator),
                                  burn_in=10, generator=generator)
    assert abs(estimate.ep) < 3 * estimate.ep_stderr


def test_streamed_ep_of_a_bernoulli_network_matches_exact_enumeration():
    # Ground truth over the 2^n binary states: P(i, j) = prod_u rho_u(i)^{s_j,u} (1 - rho_u(i))^{1 - s_j,u},
    # pi the left eigenvector of P, EP = sum pi_i P_ij log(P_ij / P_ji), H = -sum pi_i P_ij log P_ij.
    n = 3
    generator = torch.Generator().manual_seed(0)
    network = RecurrentNetwork(n, 0, phi="identity", generator=generator).double()
    with torch.no_grad():
        network.W.copy_(2.5 * torch.randn(n, n, generator=generator, dtype=torch.float64))
        network.b.copy_(torch.randn(n, generator=generator, dtype=torch.float64))
    operator = BernoulliOperator(0.7)
    states = torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=torch.float64)
    with torch.no_grad():
        rho = torch.sigmoid(0.3 * states + 0.7 * (states @ network.W.T + network.b))
    P = torch.where(states[None] == 1, rho[:, None], 1 - rho[:, None]).prod(-1)
    eigenvalues, eigenvectors = torch.linalg.eig(P.T)
    pi = eigenvectors[:, eigenvalues.real.argmax()].real
    pi = pi / pi.sum()
    flow = pi[:, None] * P
    exact = (flow * (P.log() - P.T.log())).sum().item()
    exact_entropy = -(flow * P.log()).sum().item()

    s0 = states[torch.multinomial(pi, N_CHAINS, replacement=True, generator=generator)]
    estimate = entropy_production(network, operator, s0, burn_in=10, generator=generator)
    assert exact > 0.01
    assert abs(estimate.ep - exact) < 3 * estimate.ep_stderr
    assert abs(estimate.ep - exact) < 0.02 * exact
    assert abs(estimate.conditional_entropy - exact_entropy) < 3 * estimate.conditional_entropy_stderr


def test_entropy_offset_shifts_the_entropy_and_leaves_ep_alone():
    network, operator = _linear_network(_matrix_with_spectral_radius(3, 0.8, 8), seed=8)
    s0 = torch.zeros(16, 3, dtype=torch.float64)
    offset = 3 * math.log(256)
    plain, shifted = (entropy_production(network, operator, s0, n_steps=200, burn_in=5, n_batches=4,
                                         generator=torch.Generator().manual_seed(9), entropy_offset=offset_)
                      for offset_ in (0.0, offset))
    assert shifted.ep == plain.ep and shifted.ep_stderr == plain.ep_stderr
    assert shifted.conditional_entropy == pytest.approx(plain.conditional_entropy + offset, rel=1e-12)
    assert shifted.conditional_entropy_stderr == pytest.approx(plain.conditional_entropy_stderr, rel=1e-9)
    assert shifted.relative_irreversibility == pytest.approx(shifted.ep / shifted.conditional_entropy, rel=1e-12)


def test_estimator_memory_does_not_grow_with_chain_length():
    # A per-step list of tensors costs ~250 bytes of Python memory a step: 10x the steps would show ~10x the peak.
    network, operator = _linear_network(_matrix_with_spectral_radius(3, 0.8, 9), seed=9)
    s0 = torch.zeros(8, 3, dtype=torch.float64)

    def peak_python_memory(n_steps: int) -> int:
        gc.collect()  # earlier tests' garbage is freed before the trace, not inside one of the two windows
        tracemalloc.start()
        try:
            entropy_production(network, operator, s0, n_steps=n_steps, burn_in=0, n_batches=5,
                               generator=torch.Generator().manual_seed(0))
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    peak_python_memory(50)  # first-call allocations (lazy imports, caches) out of the comparison
    short, long = peak_python_memory(200), peak_python_memory(2000)
    assert long < 2 * short


def test_estimator_rejects_states_of_the_wrong_width():
    network, operator = _linear_network(_matrix_with_spectral_radius(3, 0.8, 0), seed=0)
    with pytest.raises(ValueError, match=r"\(n_chains, 3\).*\(5, 4\)"):
        entropy_production(network, operator, torch.zeros(5, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="n_steps >= n_batches"):
        entropy_production(network, operator, torch.zeros(5, 3, dtype=torch.float64), n_steps=10, n_batches=20)

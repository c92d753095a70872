import math

import numpy as np
import pytest
import torch

from asymnet.metrics.symmetry import (
    exact_jacobian_symmetry,
    jacobian_symmetry,
    weight_symmetry,
)


def _random_matrix(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_symmetric_matrix_has_cosine_one_and_no_antisymmetric_part():
    M = _random_matrix(6, 0)
    figures = weight_symmetry(M + M.T)
    assert figures.cosine == pytest.approx(1.0, abs=1e-12)
    assert figures.antisymmetric_norm == pytest.approx(0.0, abs=1e-6)
    assert figures.symmetric_norm == pytest.approx(torch.linalg.norm(M + M.T).item())


def test_antisymmetric_matrix_has_cosine_minus_one_and_no_symmetric_part():
    M = _random_matrix(6, 1)
    figures = weight_symmetry(M - M.T)
    assert figures.cosine == pytest.approx(-1.0, abs=1e-12)
    assert figures.symmetric_norm == pytest.approx(0.0, abs=1e-6)
    assert figures.antisymmetric_norm == pytest.approx(torch.linalg.norm(M - M.T).item())


def test_random_matrix_figures_match_numpy():
    W = np.random.default_rng(2).standard_normal((7, 7))
    figures = weight_symmetry(torch.from_numpy(W).to(torch.float32))
    S, A = (W + W.T) / 2, (W - W.T) / 2
    assert figures.cosine == pytest.approx(np.sum(W * W.T) / np.sum(W * W), rel=1e-6)
    assert figures.symmetric_norm == pytest.approx(np.linalg.norm(S), rel=1e-6)
    assert figures.antisymmetric_norm == pytest.approx(np.linalg.norm(A), rel=1e-6)
    s2, a2 = figures.symmetric_norm**2, figures.antisymmetric_norm**2
    assert figures.cosine == pytest.approx((s2 - a2) / (s2 + a2), rel=1e-6)


def test_zero_matrix_has_nan_cosine_and_zero_norms():
    figures = weight_symmetry(torch.zeros(3, 3))
    assert math.isnan(figures.cosine)
    assert figures.symmetric_norm == 0.0 and figures.antisymmetric_norm == 0.0


def test_non_square_weight_is_rejected_with_its_shape():
    with pytest.raises(ValueError, match=r"square.*\(3, 4\)"):
        weight_symmetry(torch.zeros(3, 4))


def test_exact_jacobian_of_linear_map_gives_the_figures_of_its_matrix():
    W = _random_matrix(5, 3)
    points = torch.randn(4, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    exact = exact_jacobian_symmetry(lambda s: s @ W.T, points)
    expected = weight_symmetry(W)
    assert exact.cosine == pytest.approx(expected.cosine, rel=1e-12)
    assert exact.symmetric_norm == pytest.approx(expected.symmetric_norm, rel=1e-12)
    assert exact.antisymmetric_norm == pytest.approx(expected.antisymmetric_norm, rel=1e-12)


def test_probe_estimate_matches_exact_jacobian_of_an_mlp():
    torch.manual_seed(5)
    mlp = torch.nn.Sequential(
        torch.nn.Linear(10, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10)
    ).to(torch.float64)
    points = torch.randn(8, 10, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    exact = exact_jacobian_symmetry(mlp, points)
    estimate = jacobian_symmetry(mlp, points, n_probes=2000, generator=torch.Generator().manual_seed(7))
    exact_frobenius_sq = exact.symmetric_norm**2 + exact.antisymmetric_norm**2
    estimate_frobenius_sq = estimate.symmetric_norm**2 + estimate.antisymmetric_norm**2
    assert estimate_frobenius_sq == pytest.approx(exact_frobenius_sq, rel=0.05)
    assert estimate.cosine == pytest.approx(exact.cosine, abs=0.05)


def test_probe_estimate_of_a_symmetric_linear_map_is_exact_for_any_probe():
    # For symmetric J, (J^T v).(J v) = |J v|^2 probe by probe, so the cosine is 1 up to rounding.
    M = _random_matrix(6, 8)
    W = M + M.T
    points = torch.zeros(3, 6, dtype=torch.float64)
    estimate = jacobian_symmetry(lambda s: s @ W.T, points, n_probes=5, generator=torch.Generator().manual_seed(9))
    assert estimate.cosine == pytest.approx(1.0, abs=1e-12)

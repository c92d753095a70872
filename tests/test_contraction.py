"""studies.mnist_stdp.contraction and slow_noise against linear maps and Gaussian data whose answers are
known: the principal directions of a known covariance, the slope of a map along a direction, its leading
eigenvalues, the stationary variance of a linear chain and its sensitivity to the slope, and the projection
of the chain's noise (docs/design.md, "What the chain's stability rests on")."""

import math

import pytest
import torch

from studies.mnist_stdp.contraction import (band_variance, band_vectors, leading_slopes, principal_directions, slopes,
                                            stationary_variance)
from studies.mnist_stdp.slope_hinge import leading_direction, slope_hinge
from studies.mnist_stdp.slow_noise import project_out, random_basis


@pytest.fixture
def rotation():
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    return q


def test_principal_directions_are_a_known_covariances_eigenpairs(rotation):
    variances = torch.tensor([4.0, 1.0, 0.25, 0.01], dtype=torch.float64)
    z = torch.randn(200_000, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = z * variances.sqrt() @ rotation.T
    got_variances, directions = principal_directions(x + 3.0)
    assert torch.allclose(got_variances, variances, rtol=0.02)
    assert torch.allclose((directions @ rotation).abs(), torch.eye(4, dtype=torch.float64), atol=0.01)
    assert band_variance(x, directions[:1]).item() == pytest.approx(4.0, rel=0.02)


def test_band_vectors_are_unit_vectors_in_the_bands_span(rotation):
    directions = rotation.T
    u = band_vectors(directions, 2, 3, 50, torch.Generator().manual_seed(2))
    assert torch.allclose(u.norm(dim=1), torch.ones(50, dtype=torch.float64))
    coefficients = u @ directions.T
    assert torch.allclose(coefficients[:, [0, 3]], torch.zeros(50, 2, dtype=torch.float64), atol=1e-12)


def test_slopes_of_a_linear_map_are_its_quadratic_form(rotation):
    A = rotation @ torch.diag(torch.tensor([0.999, 0.9, 0.5, 0.1], dtype=torch.float64)) @ rotation.T
    points = torch.randn(7, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    u = band_vectors(rotation.T, 1, 4, 5, torch.Generator().manual_seed(4))
    got = slopes(lambda s: s @ A.T + 0.3, points, u)
    assert torch.allclose(got, (u @ A * u).sum(1).expand(7, 5), rtol=0, atol=1e-12)


def test_slopes_of_a_nonlinear_map_are_its_jacobians_at_each_point():
    points = torch.randn(6, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    u = torch.tensor([[0.6, 0.8, 0.0]], dtype=torch.float64)
    got = slopes(torch.tanh, points, u)[:, 0]
    want = ((1 - points.tanh() ** 2) * u**2).sum(1)  # J = diag(1 - tanh^2)
    assert torch.allclose(got, want, rtol=1e-6, atol=0)


def test_leading_slopes_are_a_linear_maps_leading_eigenvalues():
    gen = torch.Generator().manual_seed(7)
    basis = torch.randn(12, 12, generator=gen, dtype=torch.float64) + 3 * torch.eye(12, dtype=torch.float64)
    eigenvalues = torch.tensor([0.999, 0.98, 0.9, 0.6, 0.5, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01, 0.0], dtype=torch.float64)
    A = basis @ torch.diag(eigenvalues) @ torch.linalg.inv(basis)  # not symmetric; real eigenvalues
    points = torch.randn(3, 12, generator=gen, dtype=torch.float64)
    got, V = leading_slopes(lambda s: s @ A.T - 1.0, points, 4, 200, gen)
    assert torch.allclose(got, eigenvalues[:4].expand(3, 4), rtol=0, atol=1e-8)
    assert torch.allclose(V.transpose(1, 2) @ V, torch.eye(4, dtype=torch.float64).expand(3, 4, 4), atol=1e-12)


def test_the_stationary_variance_is_a_simulated_linear_chains():
    slope, q = 0.95, 0.0975  # q / (1 - slope^2) = 1.0
    s = torch.zeros(20_000, dtype=torch.float64)
    gen = torch.Generator().manual_seed(6)
    for _ in range(300):  # 15 relaxation times
        s = slope * s + math.sqrt(q) * torch.randn(s.shape, generator=gen, dtype=torch.float64)
    assert stationary_variance(torch.tensor(slope), q).item() == pytest.approx(1.0)
    assert s.var().item() == pytest.approx(1.0, rel=0.03)
    assert torch.isinf(stationary_variance(torch.tensor([1.0, -1.2]), q)).all()


def test_the_stationary_spread_moves_by_v_over_tau_per_unit_of_slope_error():
    v, tau = 2.0, 0.002  # a leading MNIST direction over the first level's noise
    a = v / (v + tau)
    q = a * tau  # the exact posterior's own noise
    delta = 1e-5

    def spread(slope: float) -> float:
        return stationary_variance(torch.tensor(slope, dtype=torch.float64), q).item()

    assert spread(a) == pytest.approx(v * (v + tau) / (2 * v + tau))  # half the data's variance
    assert -math.log(spread(a - delta) / spread(a)) / delta == pytest.approx((v + tau) / tau, rel=0.01)  # ~1,000


def test_project_out_removes_exactly_each_rows_subspace():
    gen = torch.Generator().manual_seed(8)
    basis = random_basis(5, 20, 3, gen, torch.float64)
    eps = torch.randn(5, 20, generator=gen, dtype=torch.float64)
    kept = project_out(eps, basis)
    inside = basis.transpose(1, 2) @ kept.unsqueeze(2)
    assert torch.allclose(inside, torch.zeros(5, 3, 1, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(project_out(kept, basis), kept, atol=1e-12)  # a projection
    assert torch.allclose((eps - kept).norm(dim=1) ** 2 + kept.norm(dim=1) ** 2, eps.norm(dim=1) ** 2)


def test_the_slope_hinge_finds_and_prices_a_linear_maps_expanding_direction():
    gen = torch.Generator().manual_seed(9)
    q, _ = torch.linalg.qr(torch.randn(10, 10, generator=gen, dtype=torch.float64))
    scales = torch.tensor([1.3, 0.9, 0.5, 0.4, 0.3, 0.2, 0.2, 0.1, 0.1, 0.0], dtype=torch.float64)
    A = torch.nn.Parameter(q @ torch.diag(scales) @ q.T)
    points = torch.randn(4, 10, generator=gen, dtype=torch.float64)
    u = leading_direction(lambda s: s @ A.T, points, 60, gen)
    assert torch.allclose((u @ q[:, 0]).abs(), torch.ones(4, dtype=torch.float64), atol=1e-6)
    term, slope = slope_hinge(lambda s: s @ A.T, points, u)
    assert torch.allclose(slope, torch.full((4,), 1.3, dtype=torch.float64), atol=1e-6)
    assert term.item() == pytest.approx(0.09, abs=1e-6)  # (1.3 - 1)^2
    term.backward()  # d/dA (||A u|| - 1)^2 = 2 (||A u|| - 1) (A u) u^T / ||A u||, the same for every row
    top = q[:, :1]
    assert torch.allclose(A.grad, 2 * 0.3 * top @ top.T, atol=1e-5)
    contraction, slope = slope_hinge(lambda s: s @ (A.detach() * 0.5).T, points, u)
    assert contraction.item() == 0.0 and torch.allclose(slope, torch.full((4,), 0.65, dtype=torch.float64))

"""The learned T = 1 drift against a 2-D toy's exact Langevin drift, and the least-squares readout of a fixed
expansion (asymnet.langevin), against closed forms and SVD solutions."""

import math

import pytest
import torch

from asymnet import langevin
from asymnet.data.toy import TOYS
from asymnet.networks.recurrent import RecurrentNetwork
from asymnet.operators import GaussianOperator


def _fast_network(n_hidden: int = 16, seed: int = 3) -> RecurrentNetwork:
    return RecurrentNetwork(2, n_hidden, phi="tanh", phi_visible="identity", hidden_units="fast", sigma_init=0.07,
                            generator=torch.Generator().manual_seed(seed), temperature_input=True).double()


def test_fit_readout_to_langevin_reaches_a_drift_its_features_can_hold_and_leaves_the_rest():
    """One Gaussian: the exact Langevin step is linear in x, which the identity visible rates hold, so the
    fitted T = 1 drift matches it at held-out points; the fixed expansion (hidden rows, w_T) is untouched."""
    from asymnet.data.toy import ToyDistribution

    toy = ToyDistribution("one", noise=0.4, centres=((0.3, -0.2),))
    network, operator = _fast_network(), GaussianOperator(0.5, "sqrt_T")
    fixed = [network.W[2:].clone(), network.b[2:].clone(), network.w_T.clone()]
    langevin.fit_readout_to_langevin(network, operator, toy, toy.sample(2000, torch.Generator().manual_seed(0)))
    figures = langevin.drift_against_langevin(network, operator, toy, toy.sample(500, torch.Generator().manual_seed(1)))
    assert figures["drift_slope"] == pytest.approx(1.0, abs=1e-6)
    assert figures["drift_relative_error"] < 1e-6
    for before, after in zip(fixed, [network.W[2:], network.b[2:], network.w_T]):
        assert torch.equal(before, after)


def test_fit_readout_to_langevin_is_the_least_squares_drift_on_the_mixture():
    """On the mixture the drift is not in the span: the fitted T = 1 drift at the fit points equals the
    ridge least-squares projection of the autograd Langevin drift on (rates, 1), solved here by SVD
    (torch.linalg.lstsq, gelsd) on the system augmented with sqrt(ridge m) I, and mapped through
    mean = (1 - alpha) x + alpha F."""
    toy, alpha = TOYS["mog"], 0.3
    network, operator = _fast_network(64), GaussianOperator(alpha, "sqrt_T")
    x = toy.sample(3000, torch.Generator().manual_seed(2))
    langevin.fit_readout_to_langevin(network, operator, toy, x)
    points = x.clone().requires_grad_(True)
    (score,) = torch.autograd.grad(toy.log_density(points).sum(), points)
    with torch.no_grad():
        drive = network(x, 1.0)
        exact = 0.5 * operator.std(drive, 1.0).pow(2) * score
        features = torch.cat([network.rates(x, 1.0), torch.ones(len(x), 1, dtype=x.dtype)], 1)
        augmented = torch.cat([features, math.sqrt(1e-10 * len(x)) * torch.eye(features.shape[1], dtype=x.dtype)])
        targets = torch.cat([x + exact / alpha, torch.zeros(features.shape[1], 2, dtype=x.dtype)])
        projected = alpha * (features @ torch.linalg.lstsq(augmented, targets, driver="gelsd").solution) - alpha * x
        fitted = operator.mean(x, drive) - x
    assert (fitted - projected).norm() / exact.norm() < 1e-6
    assert (fitted - exact).norm() / exact.norm() > 0.01  # not in the span: the test compares projections


def test_fit_readout_with_the_ridge_per_mean_diagonal_is_that_ridge_least_squares_fit():
    """A given mean (any map of x) with ridge lambda times the Gram matrix's mean diagonal: the coefficients
    equal the SVD solution of the system augmented with sqrt(lambda mean diag) I; a large ridge shrinks them."""
    toy, alpha = TOYS["spiral"], 0.5
    network, operator = _fast_network(32), GaussianOperator(alpha, "sqrt_T")
    x = toy.sample(2000, torch.Generator().manual_seed(5))
    mean = x + 0.05 * torch.stack([x[:, 1], -x[:, 0].sin()], 1)  # a rotation-like drift: not reversible
    with torch.no_grad():
        features = torch.cat([network.rates(x, 1.0), torch.ones(len(x), 1, dtype=x.dtype)], 1)
        targets = (mean - (1.0 - alpha) * x) / alpha
    for ridge in (1e-6, 1e2):
        coefficients = langevin.fit_readout(network, operator, x, mean, ridge, ridge_per="diagonal")
        lam = ridge * (features * features).sum(0).mean()
        augmented = torch.cat([features, lam.sqrt() * torch.eye(features.shape[1], dtype=x.dtype)])
        padded = torch.cat([targets, torch.zeros(features.shape[1], 2, dtype=x.dtype)])
        expected = torch.linalg.lstsq(augmented, padded, driver="gelsd").solution
        assert torch.allclose(coefficients, expected, rtol=1e-6, atol=1e-8 * expected.abs().max())
        assert torch.equal(network.W[:2], coefficients[:-1].T) and torch.equal(network.b[:2], coefficients[-1])
    assert expected.norm() < 0.1 * langevin.fit_readout(network, operator, x, mean, 1e-6, "diagonal").norm()
    with pytest.raises(ValueError, match="ridge_per is 'row' or 'diagonal', got 'rows'"):
        langevin.fit_readout(network, operator, x, mean, 1e-6, ridge_per="rows")
    with pytest.raises(ValueError, match="points and means of that width"):
        langevin.fit_readout(network, operator, x, mean[:, :1], 1e-6)


def test_fit_readout_to_langevin_refuses_slow_hidden_units():
    network = RecurrentNetwork(2, 4, generator=torch.Generator().manual_seed(0)).double()
    with pytest.raises(ValueError, match="chain state is its 2 visible units"):
        langevin.fit_readout_to_langevin(network, GaussianOperator(0.5), TOYS["mog"],
                                        TOYS["mog"].sample(10, torch.Generator().manual_seed(0)))

"""Operators against scipy.stats and the closed forms of docs/design.md, in float64."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from asymnet.networks import MLPNetwork, RecurrentNetwork
from asymnet.operators import BernoulliOperator, Drive, GaussianOperator


def _drive(gen, batch=7, n=5):
    return Drive(torch.randn(batch, n, generator=gen, dtype=torch.float64),
                 torch.randn(batch, n, generator=gen, dtype=torch.float64))


@pytest.mark.parametrize("noise_scaling,factor", [("sqrt_T", math.sqrt), ("T", lambda T: T)])
@pytest.mark.parametrize("T", [1.0, 3.0, 64.0])
def test_gaussian_log_prob_equals_scipy(noise_scaling, factor, T):
    gen = torch.Generator().manual_seed(1)
    operator = GaussianOperator(alpha=0.3, noise_scaling=noise_scaling)
    s = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    s_next = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    drive = _drive(gen)
    mean = 0.7 * s.numpy() + 0.3 * drive.mu.numpy()
    std = factor(T) * np.log1p(np.exp(drive.sigma.numpy()))
    expected = stats.norm(mean, std).logpdf(s_next.numpy()).sum(1)
    np.testing.assert_allclose(operator.log_prob(s_next, s, drive, T).numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("T", [1.0, 2.0, 16.0])
def test_bernoulli_log_prob_equals_scipy(T):
    gen = torch.Generator().manual_seed(2)
    operator = BernoulliOperator(alpha=0.6)
    s = (torch.rand(7, 5, generator=gen, dtype=torch.float64) > 0.5).double()
    s_next = (torch.rand(7, 5, generator=gen, dtype=torch.float64) > 0.5).double()
    drive = _drive(gen)
    rho = 1 / (1 + np.exp(-(0.4 * s.numpy() + 0.6 * drive.mu.numpy()) / T))
    expected = stats.bernoulli(rho).logpmf(s_next.numpy()).sum(1)
    np.testing.assert_allclose(operator.log_prob(s_next, s, drive, T).numpy(), expected, rtol=1e-12)


def test_gaussian_samples_have_the_operator_mean_and_std():
    gen = torch.Generator().manual_seed(3)
    operator = GaussianOperator(alpha=0.5, noise_scaling="sqrt_T")
    s = torch.full((200_000, 2), 2.0, dtype=torch.float64)
    drive = Drive(torch.full((200_000, 2), -1.0, dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64))
    draws = operator.sample(s, drive, 4.0, gen)
    expected_std = 2.0 * np.log1p(np.exp([0.0, 1.0]))
    np.testing.assert_allclose(draws.mean(0).numpy(), [0.5, 0.5], atol=4 * expected_std.max() / math.sqrt(200_000))
    np.testing.assert_allclose(draws.std(0).numpy(), expected_std, rtol=0.01)
    assert not draws.requires_grad


def test_bernoulli_samples_fire_at_rate_rho():
    gen = torch.Generator().manual_seed(4)
    operator = BernoulliOperator(alpha=1.0)
    s = torch.zeros(100_000, 1, dtype=torch.float64)
    drive = Drive(torch.full((100_000, 1), 1.0, dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
    rate = operator.sample(s, drive, 2.0, gen).mean().item()
    assert rate == pytest.approx(1 / (1 + math.exp(-0.5)), abs=0.005)


def test_recurrent_network_is_W_phi_plus_b_with_unconstrained_W():
    gen = torch.Generator().manual_seed(5)
    net = RecurrentNetwork(3, 2, phi="tanh", sigma_init=0.2, generator=gen).double()
    s = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    drive = net(s)
    assert torch.allclose(drive.mu, torch.tanh(s) @ net.W.t() + net.b)
    assert not torch.allclose(net.W, net.W.t())
    assert torch.allclose(torch.nn.functional.softplus(net.sigma), torch.full((5,), 0.2, dtype=torch.float64))
    assert net.sigma_visible.shape == (3,) and "sigma_hidden" in dict(net.named_buffers())


def test_mlp_starts_at_sigma_init_and_reads_temperature():
    gen = torch.Generator().manual_seed(6)
    net = MLPNetwork(2, width=16, depth=2, sigma_init=0.05, generator=gen).double()
    s = torch.randn(8, 2, generator=gen, dtype=torch.float64)
    assert torch.allclose(torch.nn.functional.softplus(net(s, 1.0).sigma), torch.full((8, 2), 0.05, dtype=torch.float64))
    assert not torch.allclose(net(s, 1.0).mu, net(s, 8.0).mu)


def test_mlp_reads_one_temperature_per_row_as_the_sampled_steps_give_them():
    """A (batch, 1) or (batch,) tensor of temperatures gives each row the drive a float T gives it alone;
    any other shape, or a T that is not positive, is refused in one line."""
    gen = torch.Generator().manual_seed(7)
    net = MLPNetwork(3, width=16, depth=2, sigma_init=0.05, generator=gen).double()
    s = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    T = torch.tensor([[1.0], [1.1], [7.0], [400.0]], dtype=torch.float64)
    per_row = net(s, T)
    for i in range(4):
        alone = net(s[i : i + 1], T[i, 0].item())
        torch.testing.assert_close(per_row.mu[i : i + 1], alone.mu, rtol=1e-12, atol=1e-15)
    assert torch.equal(net(s, T[:, 0]).mu, per_row.mu)
    with pytest.raises(ValueError, match=r"\(batch,\) or \(batch, 1\) tensor with batch = 4; got a tensor of shape \(3,\)"):
        net(s, torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="T must be positive; got 0.0"):
        net(s, 0.0)

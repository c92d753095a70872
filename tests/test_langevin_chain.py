"""The Langevin chains of studies.mnist_stdp.langevin_chain against the Gaussian case's exact stationary laws.

For data x ~ N(0, V) heated by noise of variance tau, the level's exact estimate of the data is F(s) = a s,
a = V / (V + tau), and the Langevin chain s <- s + (eta / tau) (F(s) - s) + sqrt(2 eta) eps is the linear chain
s <- (1 - eta / (V + tau)) s + sqrt(2 eta) eps: its stationary variance is 2 eta / (1 - (1 - eta / (V + tau))^2)
= (V + tau) / (1 - eta / (2 (V + tau))), the heated law's V + tau as eta -> 0. The run's own T = 1 chain,
s <- a s + sqrt(a tau) eps, keeps V (V + tau) / (2 V + tau) instead (tests/test_heated_chain.py)."""

import math

import pytest
import torch
from torch import nn

from asymnet.operators import Drive, GaussianOperator
from studies.mnist_stdp.langevin_chain import langevin_chain, level_chain, parse_arm

V, TAU = 1.0, 0.3


def stationary_variance(eta: float) -> float:
    return (V + TAU) / (1 - eta / (2 * (V + TAU)))


class Estimate(nn.Module):
    """The exact estimate of the data, mu = c s + (1 - c) a s with a fixed leak c (posterior_leak's mean)."""

    def __init__(self, keep: float = 0.0):
        super().__init__()
        self.a, self.keep = V / (V + TAU), keep
        self.posterior_leak = (1.1, 1.0) if keep else None

    def leak(self, T):
        return self.keep

    def forward(self, s: torch.Tensor, T: float) -> Drive:
        return Drive(self.keep * s + (1 - self.keep) * self.a * s, s.new_zeros(()))


@pytest.fixture
def start():
    return torch.randn(40000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * (V + TAU) ** 0.5


@pytest.mark.parametrize("eta", [0.05, 0.3])
def test_the_langevin_chain_settles_at_its_discrete_stationary_variance(start, eta):
    s, estimate = langevin_chain(Estimate(), GaussianOperator(alpha=1.0), start, 300, 1.1, TAU, eta,
                                 torch.Generator().manual_seed(1))
    assert s.var().item() == pytest.approx(stationary_variance(eta), rel=0.03)
    assert s.mean().item() == pytest.approx(0.0, abs=0.02)
    assert torch.allclose(estimate, Estimate().a * s, rtol=0, atol=1e-12)  # the readout is F at the last state


def test_the_level_chain_undoes_the_leak_and_keeps_the_same_law(start):
    eta = 0.05
    leaky = level_chain(Estimate(keep=0.4), GaussianOperator(alpha=1.0), start, 300, 5.0, TAU, eta,
                        torch.Generator().manual_seed(1))
    plain = level_chain(Estimate(), GaussianOperator(alpha=1.0), start, 300, 5.0, TAU, eta,
                        torch.Generator().manual_seed(1))
    assert torch.allclose(leaky, plain, rtol=0, atol=1e-10)
    assert plain.var().item() == pytest.approx(stationary_variance(eta), rel=0.03)


def test_the_arms_steps():
    sigma2, tau = 0.002, 0.003
    assert parse_arm("operator", sigma2, tau) is None and parse_arm("level@5", sigma2, tau) is None
    assert parse_arm("langevin", sigma2, tau) == pytest.approx(0.001)
    assert parse_arm("langevin/4", sigma2, tau) == pytest.approx(0.00025)
    assert parse_arm("langevin*1", sigma2, tau) == pytest.approx(0.003)
    with pytest.raises(SystemExit, match="unknown arm 'lang': operator, langevin, langevin/K, langevin\\*M or level@T"):
        parse_arm("lang", sigma2, tau)


def test_the_chain_term_is_the_first_levels_gaussian_step_score():
    from studies.mnist_stdp.chain_targets import chain_term

    class Fixed(nn.Module):
        def forward(self, s, T):
            return Drive(0.5 * s, s.new_full((), 0.1))

    op = GaussianOperator(alpha=1.0)
    gen = torch.Generator().manual_seed(4)
    s, target = (torch.randn(6, 3, generator=gen, dtype=torch.float64) for _ in range(2))
    std = 1.1**0.5 * torch.nn.functional.softplus(torch.tensor(0.1, dtype=torch.float64))
    want = (0.5 * ((target - 0.5 * s) / std) ** 2 + torch.log(std) + 0.5 * math.log(2 * math.pi)).sum(1)
    assert chain_term(Fixed(), op, s, target, 1.1).item() == pytest.approx(want.mean().item(), rel=1e-12)

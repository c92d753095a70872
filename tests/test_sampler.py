"""The fused chain sampler runs exactly the operator's chain: same states from the same random numbers."""

import pytest
import torch

from asymnet import walkback
from asymnet.networks import MLPNetwork, RecurrentNetwork
from asymnet.operators import BernoulliOperator, GaussianOperator
from asymnet.sampler import ChainSampler


def _network(phi="tanh", phi_visible=None, hidden_units="slow", seed=0, init_scale=1.5):
    gen = torch.Generator().manual_seed(seed)
    net = RecurrentNetwork(4, 6, phi=phi, sigma_init=0.2, generator=gen, temperature_input=True,
                           phi_visible=phi_visible, hidden_units=hidden_units, init_scale=init_scale).double()
    with torch.no_grad():
        net.b.normal_(0.0, 0.3, generator=gen)
        net.w_T.normal_(0.0, 0.3, generator=gen)
        net.sigma_visible.normal_(-1.0, 0.3, generator=gen)
    return net


def _start(net, n=32, seed=1):
    return torch.randn(n, net.n_units, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("phi,phi_visible,hidden_units", [("tanh", None, "slow"), ("tanh", "identity", "slow"),
                                                          ("sigmoid", "relu", "slow"), ("softplus", None, "slow"),
                                                          ("tanh", "identity", "fast")])
@pytest.mark.parametrize("T", [1.0, 3.0])
def test_fused_chain_equals_the_operator_chain(phi, phi_visible, hidden_units, T):
    net = _network(phi, phi_visible, hidden_units, init_scale=0.5 if phi == "softplus" else 1.5)  # a stable chain
    operator = GaussianOperator(0.4, "sqrt_T")
    s = _start(net)
    reference = walkback.run_chain(net, operator, s, 300, torch.Generator().manual_seed(5), T, fused=False)
    fused = walkback.run_chain(net, operator, s, 300, torch.Generator().manual_seed(5), T)
    assert 0.1 < reference.abs().max() < 100  # a chain that moved and stayed bounded
    assert torch.allclose(fused, reference, rtol=0, atol=1e-11)  # float64 round-off of a reordered sum


def test_fused_generation_with_clamping_equals_the_operator_chain():
    net = _network(phi_visible="identity")
    operator = GaussianOperator(0.5, "T")
    p_star = walkback.PStar(net.n_units).double()
    p_star.update(_start(net, 64) * 2.0, 1.0)
    temperatures = [1.0, 1.0, 2.0, 4.0, 8.0]
    known = torch.tensor([True, False, True, False] + [False] * 6)
    values = _start(net, 16, seed=7)
    args = (net, operator, p_star, temperatures, 16)
    reference = walkback.generate(*args, torch.Generator().manual_seed(3), known, values, fused=False)
    fused = walkback.generate(*args, torch.Generator().manual_seed(3), known, values)
    assert torch.allclose(fused, reference, rtol=0, atol=1e-12)
    assert torch.equal(fused[:, known], values[:, known])


def test_steps_are_in_place():
    net = _network()
    sampler = ChainSampler(net, GaussianOperator(0.5), _start(net), torch.Generator().manual_seed(0))
    pointer = sampler.state.data_ptr()
    before = sampler.state.clone()
    after = sampler.run(3)
    assert after.data_ptr() == pointer and not torch.equal(after, before)


def test_unsupported_inputs_are_refused():
    net = _network()
    with pytest.raises(TypeError, match="ChainSampler runs a RecurrentNetwork with a GaussianOperator, got "
                                        "RecurrentNetwork with BernoulliOperator"):
        ChainSampler(net, BernoulliOperator(0.5), _start(net))
    mlp = MLPNetwork(4, 8, 1, 0.1, True, True, torch.Generator().manual_seed(0))
    assert not ChainSampler.supports(mlp, GaussianOperator(0.5))
    with pytest.raises(ValueError, match=r"state must be \(n_chains, 10\), got \(3, 4\)"):
        ChainSampler(net, GaussianOperator(0.5), torch.zeros(3, 4, dtype=torch.float64))


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 3e-7), (torch.float64, 1e-15)])
def test_tanh_by_sigmoid_is_tanh_to_a_few_ulp(dtype, tolerance):
    from asymnet.networks.activations import TANH_BY_SIGMOID_MIN_SIZE, tanh

    u = torch.linspace(-12.0, 12.0, 2 * TANH_BY_SIGMOID_MIN_SIZE + 1, dtype=dtype)
    assert (tanh(u) - torch.tanh(u)).abs().max() <= tolerance  # absolute: a few ulp of 1
    u.requires_grad_(True)
    tanh(u).sum().backward()  # with a gradient to carry it is torch.tanh itself
    assert torch.allclose(u.grad, 1 - torch.tanh(u.detach()) ** 2, rtol=0, atol=tolerance)

import dataclasses

import pytest
import torch
import torch.nn.functional as nnf

from asymnet.metrics.symmetry import exact_jacobian_symmetry, jacobian_symmetry
from asymnet.networks import UNetNetwork, inverse_softplus

TINY = dict(image_shape=(1, 8, 8), base_channels=4, channel_mults=(1, 2))


def _net(seed: int = 0, **kwargs) -> UNetNetwork:
    return UNetNetwork(**{**TINY, **kwargs}, generator=torch.Generator().manual_seed(seed)).to(torch.float64)


def _perturbed(net: UNetNetwork, seed: int = 1, scale: float = 0.3) -> UNetNetwork:
    """Add noise to every parameter, so the zero-initialised heads and block convs do something."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return net


def _states(batch: int, n: int, seed: int = 2) -> torch.Tensor:
    return torch.randn(batch, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("image_shape", [(1, 28, 28), (3, 32, 32), (3, 64, 64)])
def test_drive_has_one_mu_and_one_sigma_per_pixel(image_shape):
    net = UNetNetwork(image_shape, generator=torch.Generator().manual_seed(0))
    n = image_shape[0] * image_shape[1] * image_shape[2]
    assert (net.n_visible, net.n_units, net.n_hidden) == (n, n, 0)
    drive = net(torch.randn(2, n), 2.0)
    assert drive.mu.shape == (2, n) and drive.sigma.shape == (n,)


def test_initial_std_is_sigma_init_at_every_pixel_and_temperature():
    net = UNetNetwork((1, 8, 8), base_channels=4, sigma_init=0.25, generator=torch.Generator().manual_seed(0))
    s = torch.randn(3, net.n_units, generator=torch.Generator().manual_seed(2))
    for T in (1.0, 16.0):
        sigma = net(s, T).sigma
        assert torch.equal(sigma, torch.full_like(sigma, inverse_softplus(0.25)))
        assert torch.allclose(nnf.softplus(sigma), torch.full_like(sigma, 0.25), rtol=1e-6, atol=0)


def test_initial_mu_is_the_input_exactly():
    net = _net()
    s = _states(3, net.n_units)
    for T in (1.0, 16.0):
        assert torch.equal(net(s, T).mu, s)


def test_learn_sigma_false_freezes_the_per_pixel_sigma_only():
    frozen = _net(learn_sigma=False)
    assert not frozen.sigma.requires_grad
    assert all(p.requires_grad for name, p in frozen.named_parameters() if name != "sigma")


def test_the_noise_level_depends_on_neither_the_state_nor_the_temperature():
    net = _perturbed(_net())
    a, b = _states(3, net.n_units), 2 * _states(3, net.n_units)
    assert torch.equal(net(a, 1.0).sigma, net(b, 64.0).sigma)


def test_same_seed_gives_identical_parameters_whatever_the_global_rng():
    torch.manual_seed(10)
    first = UNetNetwork((1, 28, 28), generator=torch.Generator().manual_seed(5))
    torch.manual_seed(11)
    second = UNetNetwork((1, 28, 28), generator=torch.Generator().manual_seed(5))
    other = UNetNetwork((1, 28, 28), generator=torch.Generator().manual_seed(6))
    for (name, a), b, c in zip(first.named_parameters(), second.parameters(), other.parameters()):
        assert torch.equal(a, b), name
    assert not all(torch.equal(a, c) for a, c in zip(first.parameters(), other.parameters()))


def test_conditioned_output_depends_on_temperature():
    net = _perturbed(_net())
    s = _states(3, net.n_units)
    cold, hot = net(s, 1.0), net(s, 8.0)
    assert not torch.allclose(cold.mu, hot.mu)


def test_unconditioned_output_ignores_temperature():
    net = _perturbed(_net(temperature_conditioned=False))
    s = _states(3, net.n_units)
    cold, hot = net(s, 1.0), net(s, 8.0)
    assert torch.equal(cold.mu, hot.mu) and torch.equal(cold.sigma, hot.sigma)


def test_batch_of_temperatures_gives_the_rows_of_separate_calls():
    net = _perturbed(_net())
    temperatures = [1.0, 2.0, 4.0, 1024.0]
    s = _states(len(temperatures), net.n_units)
    mixed = net(s, torch.tensor(temperatures, dtype=torch.float64))
    for row, T in enumerate(temperatures):
        single = net(s[row:row + 1], T)
        torch.testing.assert_close(mixed.mu[row:row + 1], single.mu, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(mixed.sigma, single.sigma, rtol=0, atol=0)


def test_gradient_of_a_loss_reaches_every_parameter():
    # 16 channels: GroupNorm groups of two channels, so no bias is erased by an instance norm.
    net = _perturbed(_net(base_channels=16, channel_mults=(1, 2, 2), n_res_blocks=2))
    s = _states(2, net.n_units)
    drive = net(s, torch.tensor([1.0, 4.0], dtype=torch.float64))
    (drive.mu.pow(2).sum() + nnf.softplus(drive.sigma).sum()).backward()
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().max() > 1e-6, name


def test_image_size_not_divisible_by_the_downsampling_is_rejected():
    with pytest.raises(ValueError, match=r"\(1, 28, 28\): H and W must be divisible by .* = 8 for 4 levels"):
        UNetNetwork((1, 28, 28), channel_mults=(1, 2, 2, 2))


def test_flat_input_of_the_wrong_width_is_rejected():
    net = _net()
    with pytest.raises(ValueError, match=r"expects states of shape \(batch, 64\).*got shape \(2, 63\)"):
        net(torch.zeros(2, 63, dtype=torch.float64))


def test_temperature_tensor_of_the_wrong_length_is_rejected():
    net = _net()
    with pytest.raises(ValueError, match=r"\(batch,\) or \(batch, 1\) tensor with batch = 2; got a tensor of shape \(3,\)"):
        net(torch.zeros(2, 64, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"got a tensor of shape \(2, 2\)"):
        net(torch.zeros(2, 64, dtype=torch.float64), torch.ones(2, 2, dtype=torch.float64))
    per_row = net(torch.zeros(2, 64, dtype=torch.float64), torch.tensor([[2.0], [3.0]], dtype=torch.float64))
    flat = net(torch.zeros(2, 64, dtype=torch.float64), torch.tensor([2.0, 3.0], dtype=torch.float64))
    assert torch.equal(per_row.mu, flat.mu)


def test_probe_estimate_of_the_jacobian_symmetry_matches_the_exact_one():
    net = _perturbed(_net(channel_mults=(1, 2, 2)), scale=0.15)
    points = _states(4, net.n_units)
    exact = exact_jacobian_symmetry(lambda s: net(s, 1.0).mu, points)
    estimate = jacobian_symmetry(lambda s: net(s, 1.0).mu, points, 500, torch.Generator().manual_seed(3))
    assert 0.2 < exact.cosine < 0.6  # far from the identity's 1: the antisymmetric part is large
    for field in dataclasses.fields(exact):
        assert getattr(estimate, field.name) == pytest.approx(getattr(exact, field.name), rel=0.05), field.name


def test_posterior_leak_scales_the_unets_step_by_the_share_the_posterior_mean_moves():
    """With posterior_leak=(f, q) the drive is c(T) s + (1 - c(T)) (s + G), G the same weights' step without the
    leak, c(T) the posterior mean's weight of s_t (0 at T = f and T = 1, as for the recurrent network),
    for a float T and for one temperature per row."""
    from asymnet.networks.temperature import posterior_leak

    plain = _perturbed(_net())
    leaking = _perturbed(_net(posterior_leak=(1.1, 1.0)))
    s = torch.randn(3, 64, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    for T in (1.0, 1.1, 5.0, 400.0):
        c = posterior_leak(T, 1.1, 1.0)
        torch.testing.assert_close(leaking(s, T).mu, c * s + (1 - c) * plain(s, T).mu, rtol=1e-12, atol=1e-14)
    assert posterior_leak(1.1, 1.1, 1.0) == 0.0 and posterior_leak(1.0, 1.1, 1.0) == 0.0
    assert 0.9 < posterior_leak(400.0, 1.1, 1.0) < 1.0  # V / (V + tau) at the hot end of factor 1.1
    rows = torch.tensor([[1.1], [5.0], [400.0]], dtype=torch.float64)
    per_row = leaking(s, rows).mu
    for i, T in enumerate((1.1, 5.0, 400.0)):
        torch.testing.assert_close(per_row[i : i + 1], leaking(s[i : i + 1], T).mu, rtol=1e-10, atol=1e-12)

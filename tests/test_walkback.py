"""Algorithm 1: the schedule, the trajectory, the loss's credit assignment, p*, settling, the bound."""

import math

import pytest
import torch

from asymnet import schedule, walkback
from asymnet.networks import RecurrentNetwork
from asymnet.operators import GaussianOperator
from asymnet.anchor import kernel_langevin_step, noisy_starts, score_anchor_pairs, widen_starts


def test_T_max_is_where_the_noise_reaches_sigma_max():
    assert schedule.max_temperature(1.0, 0.1, "sqrt_T") == pytest.approx(100.0)
    assert schedule.max_temperature(1.0, 0.1, "T") == pytest.approx(10.0)
    assert schedule.max_temperature(0.05, 0.1, "sqrt_T") == 1.0
    op = GaussianOperator(0.5, "sqrt_T")
    assert op.temperature_factor(schedule.max_temperature(2.0, 0.1, "sqrt_T")) * 0.1 == pytest.approx(2.0)


def test_K_is_ceil_log2_T_max_plus_n_and_T_doubles_after_n_steps():
    assert schedule.n_heating_steps(100.0) == 7  # 2^6 = 64 < 100 <= 128
    assert schedule.n_heating_steps(64.0) == 6
    assert schedule.n_heating_steps(1.0) == 0
    assert schedule.heating_temperatures(3, 4) == [1.0, 1.0, 1.0, 2.0, 4.0, 8.0, 16.0]
    assert schedule.heating_temperatures(0, 3) == [2.0, 4.0, 8.0]
    assert schedule.n_heating_steps(100.0, factor=1.5) == math.ceil(math.log(100) / math.log(1.5))
    temps = schedule.heating_temperatures(1, 12, factor=1.5)
    assert temps[-1] == pytest.approx(1.5**12) and temps[:2] == [1.0, 1.5]


def test_extra_steps_are_uniform_on_0_to_n_max():
    gen = torch.Generator().manual_seed(0)
    draws = torch.tensor([schedule.sample_extra_steps(4, gen) for _ in range(5000)])
    counts = torch.bincount(draws, minlength=5).double() / 5000
    assert draws.min() == 0 and draws.max() == 4
    assert torch.allclose(counts, torch.full((5,), 0.2, dtype=torch.float64), atol=0.025)


def _setup(n_hidden=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    net = RecurrentNetwork(2, n_hidden, sigma_init=0.3, generator=gen).double()
    return net, GaussianOperator(0.5), gen


def test_trajectory_states_carry_no_gradient_and_loss_is_one_step_credit_assignment():
    net, op, gen = _setup()
    x = torch.randn(8, 2, generator=gen, dtype=torch.float64)
    temps = [1.0, 2.0, 4.0]
    states = walkback.heating_trajectory(net, op, walkback.settle_hidden(net, op, x, 2, gen), temps, gen)
    assert all(not s.requires_grad for s in states)
    total = walkback.walkback_losses(net, op, states, temps).sum()
    (grad_total,) = torch.autograd.grad(total, net.W)
    # the same gradient, step by step, with every state an explicit constant
    per_step = sum(
        torch.autograd.grad(-op.log_prob(states[t - 1].clone(), states[t].clone(), net(states[t].clone()), T).mean(), net.W)[0]
        for t, T in enumerate(temps, start=1)
    )
    assert torch.allclose(grad_total, per_step, rtol=1e-12)


def test_p_star_matches_mean_and_variance_of_s_K():
    gen = torch.Generator().manual_seed(1)
    p_star = walkback.PStar(3).double()
    first = torch.randn(500, 3, generator=gen, dtype=torch.float64) * 2 + 1
    p_star.update(first, momentum=0.1)
    assert torch.allclose(p_star.mean, first.mean(0), rtol=1e-12)
    assert torch.allclose(p_star.var, first.var(0, unbiased=False), rtol=1e-10)
    for _ in range(300):  # a stationary stream of s_K: the moments converge to its own
        p_star.update(torch.randn(500, 3, generator=gen, dtype=torch.float64) * 0.5 - 3, momentum=0.1)
    assert torch.allclose(p_star.mean, torch.full((3,), -3.0, dtype=torch.float64), atol=0.02)
    assert torch.allclose(p_star.var, torch.full((3,), 0.25, dtype=torch.float64), rtol=0.05)
    draws = p_star.sample(50_000, gen)
    assert torch.allclose(draws.mean(0), p_star.mean, atol=0.01)


def test_clamped_settling_leaves_visible_units_exactly_at_the_data():
    net, op, gen = _setup(n_hidden=6)
    x = torch.randn(10, 2, generator=gen, dtype=torch.float64)
    s0 = walkback.settle_hidden(net, op, x, 20, gen)
    assert torch.equal(s0[:, :2], x)
    assert s0.shape == (10, 8) and s0[:, 2:].abs().sum() > 0


def test_bound_of_a_pure_noise_operator_is_exact_for_gaussian_data():
    """With F(s) = s (alpha = 1, W = I, phi = identity, b = 0) the operator is a Gaussian random walk and
    p* = N(0, 1 + sum of step variances) is its exact end marginal for data N(0, 1); the bound is then
    log p*(s_K) + sum_t log N(s_{t-1}; s_t) - log N(s_t; s_{t-1}) = log p*(s_K), which averages below
    the exact log N(x; 0, 1) by the KL divergence the bound allows, and never above it."""
    gen = torch.Generator().manual_seed(2)
    net = RecurrentNetwork(1, 0, phi="identity", sigma_init=0.5, generator=gen).double()
    with torch.no_grad():
        net.W.fill_(1.0)
    op = GaussianOperator(1.0)
    temps = [1.0, 2.0, 4.0]
    total_var = 1 + 0.25 * sum(temps)
    p_star = walkback.PStar(1).double()
    p_star.update(torch.randn(400_000, 1, generator=gen, dtype=torch.float64) * math.sqrt(total_var), 1.0)
    x = torch.randn(20_000, 1, generator=gen, dtype=torch.float64)
    bound = walkback.variational_bound(net, op, p_star, x, temps, gen)
    exact = -0.5 * x.pow(2).squeeze(1) - 0.5 * math.log(2 * math.pi)
    assert bound.mean() < exact.mean()
    # E[log p*(s_K)] = -0.5 log(2 pi v) - 0.5 and the symmetric step terms cancel exactly
    assert bound.mean().item() == pytest.approx(-0.5 * math.log(2 * math.pi * total_var) - 0.5, abs=0.02)


def test_final_mean_returns_exactly_the_mean_of_the_last_cooling_step():
    """generate(final_mean=True) follows the same noisy chain down to s_1 (same generator draws), then
    returns (1 - alpha) s_1 + alpha F_mu(s_1, T_1) instead of adding the T_1 noise; with a clamp the known
    units still hold their values."""
    net, op, gen = _setup(n_hidden=3)
    p_star = walkback.PStar(5).double()
    p_star.update(torch.randn(100, 5, generator=gen, dtype=torch.float64), 1.0)
    temps = [1.0, 2.0, 4.0]
    # the chain down to s_1, by hand, from the generator state generate() will start from
    state = torch.Generator().manual_seed(11).get_state()
    by_hand = torch.Generator()
    by_hand.set_state(state)
    s = p_star.sample(6, by_hand)
    for T in reversed(temps[1:]):
        s = op.sample(s, net(s, T), T, by_hand)
    expected = op.mean(s, net(s, temps[0]))
    replay = torch.Generator()
    replay.set_state(state)
    got = walkback.generate(net, op, p_star, temps, 6, replay, final_mean=True)
    assert torch.allclose(got, expected, rtol=0, atol=1e-13)  # the fused chain: float64 round-off
    replay.set_state(state)
    noisy = walkback.generate(net, op, p_star, temps, 6, replay)
    noise_std = op.std(net(s, temps[0]), temps[0])
    z = (noisy - expected) / noise_std
    assert z.abs().max() > 0.1  # the default still draws the last step
    known = torch.tensor([True, False, False, False, False])
    values = torch.full((6, 5), 0.25, dtype=torch.float64)
    replay.set_state(state)
    clamped = walkback.generate(net, op, p_star, temps, 6, replay, known=known, values=values, final_mean=True)
    assert torch.equal(clamped[:, 0], values[:, 0])


@pytest.mark.parametrize("tau_max, fraction", [(0.5, 1.0), (0.5, 0.2), (1.5, 0.05)])
def test_noisy_starts_have_the_law_of_their_definition(tau_max, fraction):
    """x + tau eps, tau ~ U(0, tau_max) on a `fraction` of the rows: the untouched rows are x exactly, a
    `fraction` of them within 5 standard errors, and the noised rows' squared displacement per coordinate
    has mean E[tau^2] = tau_max^2 / 3 and the fourth moment 3 E[tau^4] = 3 tau_max^4 / 5 of a scale mixture
    of normals, each within 5 standard errors (200,000 rows)."""
    n = 200_000
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    s = noisy_starts(x, tau_max, torch.Generator().manual_seed(1), fraction)
    moved = (s != x).all(1)
    assert ((s == x).all(1) | moved).all()  # a row is noised in every coordinate or in none
    p = moved.double().mean().item()
    assert abs(p - fraction) < 5 * math.sqrt(fraction * (1 - fraction) / n) + 1e-12
    d2 = (s - x)[moved].pow(2)
    # moments of tau ~ U(0, tau_max): E tau^k = tau_max^k / (k + 1); d^2 = tau^2 eps^2 per coordinate, the 3
    # coordinates of a row share tau, so the variance of the mean over a row holds their covariance
    tau = {k: tau_max**k / (k + 1) for k in (2, 4, 8)}
    second, fourth = tau[2], 3 * tau[4]
    var_row_d2 = (3 * (fourth - second**2) + 6 * (tau[4] - second**2)) / 9
    var_row_d4 = (3 * (105 * tau[8] - fourth**2) + 6 * (9 * tau[8] - fourth**2)) / 9
    rows = d2.shape[0]
    assert abs(d2.mean().item() - second) < 5 * math.sqrt(var_row_d2 / rows)
    assert abs(d2.pow(2).mean().item() - fourth) < 5 * math.sqrt(var_row_d4 / rows)


def test_noisy_starts_of_zero_noise_are_the_data_itself():
    x = torch.randn(4, 2)
    assert noisy_starts(x, 0.0, None) is x


def _anchor_taus(x, start, target, std):
    """Each row's tau, recovered exactly: start - x = tau eps and target - x = (1 - std^2 / (2 tau^2)) tau eps."""
    ratio = ((target - x) / (start - x))[:, :1]  # 1 - c of the first unit
    return (std[0] ** 2 / (2 * (1 - ratio))).sqrt().squeeze(1)


def test_score_anchor_pairs_draw_tau_with_density_tau_to_the_minus_3():
    """tau on [max(std) / sqrt(2), tau_max] with density proportional to tau^-3 (log-uniform, weighted by
    (tau_min / tau)^2): Kolmogorov-Smirnov against that CDF on 50,000 rows (p > 0.01), the bounds hold, and every
    unit of a row shares its tau and its eps (target - x = (1 - c_i) (start - x), c_i = std_i^2 / (2 tau^2))."""
    from scipy import stats

    n, tau_max = 50_000, 0.7
    std = torch.tensor([0.05, 0.08, 0.03], dtype=torch.float64)
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    start, target = score_anchor_pairs(x, std, tau_max, torch.Generator().manual_seed(1))
    tau = _anchor_taus(x, start, target, std)
    tau_min = 0.08 / math.sqrt(2)
    assert tau.min() >= tau_min * (1 - 1e-9) and tau.max() <= tau_max * (1 + 1e-9)
    c = std**2 / (2 * tau[:, None] ** 2)
    assert torch.allclose(target - x, (1 - c) * (start - x), atol=1e-12)
    assert (c[:, 1] <= 1 + 1e-9).all()  # the widest unit's target is at most the clean point
    cdf = lambda t: (tau_min**-2 - t**-2) / (tau_min**-2 - tau_max**-2)  # noqa: E731
    assert stats.kstest(tau.numpy(), cdf).pvalue > 0.01


def test_score_anchor_targets_have_the_langevin_mean_of_the_smoothed_data():
    """Tweedie's formula, the anchor's reason: for data N(0, s^2) per unit, the target's mean given the start
    and tau is start - (std^2 / 2) start / (s^2 + tau^2), the Langevin step of the smoothed data. Regressing
    target - start on that exact drift over 400,000 rows gives slope 1 within 4 standard errors."""
    n, s = 400_000, 0.3
    std = torch.tensor([0.1, 0.1], dtype=torch.float64)
    x = s * torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    start, target = score_anchor_pairs(x, std, 1.0, torch.Generator().manual_seed(1))
    tau = _anchor_taus(x, start, target, std)[:, None]
    exact = -(std**2 / 2) * start / (s**2 + tau**2)
    y, f = (target - start).reshape(-1), exact.reshape(-1)
    slope = (y * f).sum() / (f * f).sum()
    residual = y - slope * f
    se = (residual.pow(2).mean() / (f * f).sum()).sqrt()
    assert abs(slope.item() - 1) < 4 * se.item()
    assert se.item() < 0.02  # the test can tell a slope of 1 from the noisy-start law's weaker drift


def test_score_anchor_with_tau_max_below_tau_min_is_pure_denoising_at_tau_min():
    """tau_max below std / sqrt(2): every tau is tau_min, where c = 1 and the target is the clean point."""
    std = torch.tensor([0.2, 0.2], dtype=torch.float64)
    x = torch.randn(1000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    start, target = score_anchor_pairs(x, std, 0.01, torch.Generator().manual_seed(1))
    assert torch.allclose(target, x, atol=1e-12)
    assert abs((start - x).std().item() - 0.2 / math.sqrt(2)) < 0.01


def test_score_anchor_pairs_with_tau_low_draw_tau_on_the_upper_range_only():
    """tau_low raises the lower end (studies/prop1/anchor_regression.py --far draws its far pairs so): tau on
    [tau_low, tau_max] with the same tau^-3 density, Kolmogorov-Smirnov on 50,000 rows (p > 0.01)."""
    from scipy import stats

    n, tau_low, tau_max = 50_000, 0.5, 3.0
    std = torch.tensor([0.05, 0.05], dtype=torch.float64)
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    start, target = score_anchor_pairs(x, std, tau_max, torch.Generator().manual_seed(1), tau_low=tau_low)
    tau = _anchor_taus(x, start, target, std)
    assert tau.min() >= tau_low * (1 - 1e-9) and tau.max() <= tau_max * (1 + 1e-9)
    cdf = lambda t: (tau_low**-2 - t**-2) / (tau_low**-2 - tau_max**-2)  # noqa: E731
    assert stats.kstest(tau.numpy(), cdf).pvalue > 0.01


def test_kernel_langevin_step_is_the_langevin_step_of_the_kernel_density():
    """Against autograd of log sum_i exp(-|x - r_i|^2 / (2 h^2)), the kernel density's log up to a constant,
    in float64, with a different noise level per unit: start + (std^2 / 2) grad log p_h to 1e-12."""
    gen = torch.Generator().manual_seed(0)
    reference = torch.randn(300, 2, generator=gen, dtype=torch.float64)
    x = (3 * torch.randn(40, 2, generator=gen, dtype=torch.float64)).requires_grad_()
    std = torch.tensor([0.05, 0.2], dtype=torch.float64)
    for h in (0.07, 0.5):
        (grad,) = torch.autograd.grad(torch.logsumexp(-torch.cdist(x, reference).pow(2) / (2 * h**2), 1).sum(), x)
        step = kernel_langevin_step(x.detach(), reference, h, std)
        assert torch.allclose(step, x.detach() + 0.5 * std**2 * grad, rtol=0, atol=1e-12)


def test_kernel_langevin_step_far_from_the_data_points_to_the_nearest_point():
    """Far from two reference points, the kernel density's drift points to the nearer one with the size
    (std^2 / 2) distance / h^2 (its weight is 1 to within exp(-70)): the pull grows with the distance, where
    the denoising targets of a wide tau give the weak drift of a wide smoothing."""
    reference = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    x = torch.tensor([[4.0, 3.0]], dtype=torch.float64)
    std, h = torch.tensor([0.1, 0.1], dtype=torch.float64), 0.1
    drift = kernel_langevin_step(x, reference, h, std) - x
    assert torch.allclose(drift, 0.005 * (reference[:1] - x) / h**2, rtol=1e-12, atol=0)


def test_widen_starts_moves_the_given_fraction_to_data_plus_the_given_noise():
    """widen_starts: about a fraction F of the rows (within 4 binomial sd) become data + N(0, 0.3^2),
    whose offsets have sd 0.3 (within 3 %); the others stay; F = 0 returns the starts and draws nothing."""
    gen = torch.Generator().manual_seed(0)
    clean = torch.randn(20000, 2, generator=gen, dtype=torch.float64)
    start = clean + 0.01
    wide = widen_starts(start, clean, 0.3, 0.3, gen)
    moved = (wide != start).any(dim=1)
    assert abs(moved.double().mean().item() - 0.3) < 4 * (0.3 * 0.7 / 20000) ** 0.5
    assert (wide - clean)[moved].std().item() == pytest.approx(0.3, rel=0.03)
    state = gen.get_state()
    assert widen_starts(start, clean, 0.0, 0.3, gen) is start
    assert torch.equal(gen.get_state(), state)

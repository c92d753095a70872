"""The local STDP / reverse-STDP rule equals autograd's VW gradient, and its learning window."""

import pytest
import torch

from asymnet import plasticity, schedule, walkback
from asymnet.networks import RecurrentNetwork
from asymnet.operators import BernoulliOperator, GaussianOperator
from asymnet.anchor import add_anchor, score_anchor_loss, score_anchor_pairs
from asymnet.model import build_model


def _network(n_visible=5, n_hidden=4, phi="tanh", learn_sigma=True, seed=0, temperature_input=True):
    gen = torch.Generator().manual_seed(seed)
    net = RecurrentNetwork(n_visible, n_hidden, phi=phi, sigma_init=0.3, learn_sigma=learn_sigma, generator=gen,
                           temperature_input=temperature_input).double()
    with torch.no_grad():
        net.b.copy_(torch.randn(net.n_units, generator=gen, dtype=torch.float64) * 0.3)
        if temperature_input:
            net.w_T.copy_(torch.randn(net.n_units, generator=gen, dtype=torch.float64) * 0.3)
        net.sigma_visible.add_(torch.randn(n_visible, generator=gen, dtype=torch.float64) * 0.2)
    return net, gen


def _trajectory(net, operator, gen, temperatures, binary=False):
    x = torch.rand(16, net.n_visible, generator=gen, dtype=torch.float64)
    if binary:
        x = (x > 0.5).double()
    s0 = walkback.settle_hidden(net, operator, x, 3, gen)
    return walkback.heating_trajectory_with_drives(net, operator, s0, temperatures, gen)


def _autograd(net, operator, states, temperatures):
    net.zero_grad()
    loss = walkback.walkback_losses(net, operator, states, temperatures).sum()
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}


def _relative_error(a, b):
    return ((a - b).norm() / b.norm()).item()


def _assert_rule_is_autograd(update, loss, grads, names=("W", "b", "sigma_visible", "w_T")):
    """The local update's loss and the gradients ``names`` equal autograd's (float64: 1e-12 / 1e-10)."""
    assert torch.allclose(update.loss, loss, rtol=1e-12)
    for name in names:
        assert _relative_error(getattr(update, "grad_" + name), grads[name]) < 1e-10, name


@pytest.mark.parametrize("noise_scaling", ["sqrt_T", "T"])
@pytest.mark.parametrize("temperatures", [[1.0], [4.0], [1.0, 1.0, 2.0, 4.0, 8.0, 16.0]])
@pytest.mark.parametrize("alpha", [0.3, 1.0])
def test_gaussian_rule_equals_autograd_gradient(noise_scaling, temperatures, alpha):
    net, gen = _network()
    operator = GaussianOperator(alpha, noise_scaling)
    states, drives = _trajectory(net, operator, gen, temperatures)
    loss, grads = _autograd(net, operator, states, temperatures)
    update = plasticity.trajectory_update(net, operator, states, temperatures, drives)
    with_w_T = temperatures != [1.0]  # log 1 = 0: no gradient reaches w_T
    _assert_rule_is_autograd(update, loss, grads, ("W", "b", "sigma_visible") + (("w_T",) if with_w_T else ()))


@pytest.mark.parametrize("phi", ["sigmoid", "identity"])
@pytest.mark.parametrize("temperatures", [[1.0], [1.0, 2.0, 4.0]])
def test_bernoulli_rule_equals_autograd_gradient(phi, temperatures):
    net, gen = _network(phi=phi, learn_sigma=False)
    operator = BernoulliOperator(0.6)
    states, drives = _trajectory(net, operator, gen, temperatures, binary=True)
    loss, grads = _autograd(net, operator, states, temperatures)
    update = plasticity.trajectory_update(net, operator, states, temperatures, drives)
    _assert_rule_is_autograd(update, loss, grads, ("W", "b") + (("w_T",) if temperatures != [1.0] else ()))
    assert update.grad_sigma_visible is None



def _stepwise_gradients(net, operator, states, temperatures):
    """Autograd gradients of each step's plain loss alone: the ground truth that weighting must combine."""
    per_step = []
    for t, T in enumerate(temperatures, start=1):
        net.zero_grad()
        (-operator.log_prob(states[t - 1], states[t], net(states[t], T), T).mean()).backward()
        per_step.append({name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None})
    return per_step


@pytest.mark.parametrize("power", [0.5, 1.0])
@pytest.mark.parametrize("noise_scaling", ["sqrt_T", "T"])
def test_step_weights_scale_each_steps_drift_gradient_by_T_to_the_power(power, noise_scaling):
    net, gen = _network()
    operator = GaussianOperator(0.4, noise_scaling)
    temperatures = [1.0, 1.0, 2.0, 4.0, 8.0, 16.0]
    states, drives = _trajectory(net, operator, gen, temperatures)
    per_step = _stepwise_gradients(net, operator, states, temperatures)
    plain_loss = walkback.walkback_losses(net, operator, states, temperatures).detach()
    net.zero_grad()
    weighted_loss = walkback.walkback_losses(net, operator, states, temperatures, power)
    weighted_loss.sum().backward()
    torch.testing.assert_close(weighted_loss.detach(), plain_loss, rtol=1e-14, atol=0)  # the values are the plain ones
    for name in ("W", "b", "w_T"):  # the drift's parameters: sum_t T_t^p grad loss_t
        expected = sum(T**power * grads[name] for T, grads in zip(temperatures, per_step))
        assert _relative_error(getattr(net, name).grad, expected) < 1e-12, name
    expected_sigma = sum(grads["sigma_visible"] for grads in per_step)  # the noise level: unweighted
    assert _relative_error(net.sigma_visible.grad, expected_sigma) < 1e-12
    assert _relative_error(net.b.grad, sum(grads["b"] for grads in per_step)) > 0.05  # the weights do act here
    update = plasticity.trajectory_update(net, operator, states, temperatures, drives, weight_power=power)
    loss, grads = _autograd_weighted(net, operator, states, temperatures, power)
    _assert_rule_is_autograd(update, loss, grads)


def _autograd_weighted(net, operator, states, temperatures, power):
    net.zero_grad()
    loss = walkback.walkback_losses(net, operator, states, temperatures, power).sum()
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}


def test_weighted_bernoulli_rule_equals_autograd_gradient():
    net, gen = _network(phi="sigmoid", learn_sigma=False)
    operator = BernoulliOperator(0.6)
    temperatures = [1.0, 2.0, 4.0, 8.0]
    states, drives = _trajectory(net, operator, gen, temperatures, binary=True)
    loss, grads = _autograd_weighted(net, operator, states, temperatures, 0.5)
    update = plasticity.trajectory_update(net, operator, states, temperatures, drives, weight_power=0.5)
    _assert_rule_is_autograd(update, loss, grads, ("W", "b", "w_T"))
    per_step = _stepwise_gradients(net, operator, states, temperatures)
    expected = sum(T**0.5 * g["W"] for T, g in zip(temperatures, per_step))
    assert _relative_error(update.grad_W, expected) < 1e-10

def test_rule_without_reused_drives_is_the_same():
    net, gen = _network(temperature_input=False)
    operator = GaussianOperator(0.5)
    temperatures = schedule.heating_temperatures(2, 3)
    states, drives = _trajectory(net, operator, gen, temperatures)
    reused = plasticity.trajectory_update(net, operator, states, temperatures, drives)
    fresh = plasticity.trajectory_update(net, operator, states, temperatures)
    assert torch.equal(reused.grad_W, fresh.grad_W)


def test_temporal_and_equal_time_terms_sum_to_the_update():
    net, gen = _network(learn_sigma=False, temperature_input=False)
    operator = GaussianOperator(0.5)
    temperatures = [1.0, 2.0]
    states, drives = _trajectory(net, operator, gen, temperatures)
    update = plasticity.trajectory_update(net, operator, states, temperatures, drives)
    # rebuild the two terms by hand and check their sum is -grad_W
    later, earlier = torch.stack(states[1:]), torch.stack(states[:-1])
    F = torch.stack([net(s).mu for s in states[1:]]).detach()
    T = torch.tensor(temperatures, dtype=torch.float64).view(-1, 1, 1)
    precision = (T.sqrt() * torch.nn.functional.softplus(net.sigma.detach())).pow(-2)
    pre = net.phi(later)
    temporal = torch.einsum("kbi,kbj->ij", 0.5 * (earlier - later) * precision, pre) / 16
    equal_time = torch.einsum("kbi,kbj->ij", 0.25 * (later - F) * precision, pre) / 16
    assert torch.allclose(temporal + equal_time, -update.grad_W, rtol=1e-10, atol=1e-12)
    assert update.temporal_norm == pytest.approx(temporal.norm().item(), rel=1e-10)
    assert update.equal_time_norm == pytest.approx(equal_time.norm().item(), rel=1e-10)


def test_learning_window_is_stdp_in_cooling_order():
    lags = torch.arange(-30, 31)
    window = plasticity.learning_window(lags, membrane_steps=4.0, order="cooling")
    small_positive = window[(lags > 0) & (lags <= 3)]
    small_negative = window[(lags < 0) & (lags >= -3)]
    assert (small_positive > 0).all() and (small_negative < 0).all()
    assert window[lags.abs() >= 30].abs().max() < 1e-2 * window.abs().max()
    # closed form for leaky pulses, r = exp(-1 / tau_m): r^(lag - 1) / (1 + r) for lag > 0
    r = torch.exp(torch.tensor(-1 / 4.0, dtype=torch.float64))
    assert window[lags == 2].item() == pytest.approx((r / (1 + r)).item(), rel=1e-12)
    assert window[lags == -2].item() == pytest.approx((-(r**2) / (1 + r)).item(), rel=1e-12)


def test_learning_window_is_reverse_stdp_in_heating_order():
    lags = torch.arange(-5, 6)
    cooling = plasticity.learning_window(lags, order="cooling")
    heating = plasticity.learning_window(lags, order="heating")
    nonzero = lags != 0
    assert (torch.sign(heating[nonzero]) == -torch.sign(cooling[nonzero])).all()
    assert torch.allclose(heating, cooling.flip(0), rtol=1e-12)


def test_local_rule_refuses_mlp_study_and_network():
    from asymnet.networks import MLPNetwork
    from asymnet.operators import GaussianOperator
    from asymnet.study import StudyError, parse_study

    with pytest.raises(StudyError, match=r"<string>:2: training.learning: local needs network.kind: recurrent .*, "
                                         r"got network.kind: mlp; use training.learning: autograd"):
        parse_study("network: {kind: mlp}\ntraining: {learning: local}\n")
    mlp = MLPNetwork(4, 8, 1, 0.1, True, False, torch.Generator().manual_seed(0))
    with pytest.raises(plasticity.PlasticityError, match="the local rule needs a RecurrentNetwork, got MLPNetwork"):
        plasticity.trajectory_update(mlp, GaussianOperator(0.5), [torch.zeros(2, 4)] * 2, [1.0])


@pytest.mark.parametrize("power, anchor, bandwidth", [(0.0, 0.0, 0.0), (0.5, 0.0, 0.0), (0.0, 0.7, 0.0),
                                                      (0.0, 0.7, 0.1)])
def test_training_with_the_local_rule_and_with_autograd_gives_the_same_weights(tmp_path, power, anchor, bandwidth):
    """20 float64 training steps of the run loop, same seed: the two learning modes end at equal weights
    (with the paper's loss, with walkback.step_weight_power, and with the anchor's term (anchor.weight), which
    trains the mean only while sigma is learned, with its denoising or its kernel-density targets)."""
    from asymnet import run as run_module
    from asymnet.data import load_dataset
    from asymnet.study import parse_study, replace_in

    finals = {}
    for learning in ("local", "autograd"):
        study = parse_study(
            "data: {name: spiral, n_train: 500, n_test: 100}\n"
            f"network: {{kind: recurrent, n_hidden: 5, hidden_units: {'fast' if anchor else 'slow'}}}\n"
            "operator: {sigma: 0.2, learn_sigma: true, noise_scaling: T}\n"
            f"walkback: {{n_extra_max: 2, settle_steps: 3, step_weight_power: {power}}}\n"
            f"anchor: {{weight: {anchor}, bandwidth: {bandwidth}}}\n"
            f"training: {{steps: 20, batch_size: 16, learning_rate: 1.0e-2, learning: {learning}, dtype: float64}}\n"
        )
        data = load_dataset("spiral", 500, 100, None, torch.Generator().manual_seed(0))
        model = build_model(study, data, torch.device("cpu"), torch.float64)
        initial_W = model.network.W.detach().clone()
        for _ in range(study.training.steps):
            run_module.train_step(model, study, data, torch.device("cpu"), torch.float64)
        finals[learning] = {k: v.clone() for k, v in model.network.state_dict().items()}
    for name, value in finals["autograd"].items():
        assert torch.allclose(finals["local"][name], value, rtol=1e-9, atol=1e-12), name
    assert (finals["local"]["W"] - initial_W).abs().max() > 1e-2  # the weights did move
    if anchor:  # and the anchor's term moved them: with a negligible weight (same draws) the run ends elsewhere
        plain = (replace_in(study, "anchor.bandwidth", 0.0) if bandwidth  # the targets matter
                 else replace_in(study, "anchor.weight", 1e-12))
        model = build_model(plain, data, torch.device("cpu"), torch.float64)
        for _ in range(plain.training.steps):
            run_module.train_step(model, plain, data, torch.device("cpu"), torch.float64)
        assert (model.network.W - finals["autograd"]["W"]).abs().max() > 1e-4


def _fast_network(seed=0, phi_visible="identity"):
    gen = torch.Generator().manual_seed(seed)
    net = RecurrentNetwork(3, 7, phi="tanh", sigma_init=0.3, learn_sigma=True, generator=gen, temperature_input=True,
                           phi_visible=phi_visible, hidden_units="fast", hidden_gain=2.0, hidden_bias=1.0).double()
    with torch.no_grad():  # give the learned (visible) rows non-trivial values
        net.W[:3].add_(torch.randn(3, 10, generator=gen, dtype=torch.float64) * 0.5)
        net.b[:3].copy_(torch.randn(3, generator=gen, dtype=torch.float64) * 0.3)
        net.w_T[:3].copy_(torch.randn(3, generator=gen, dtype=torch.float64) * 0.3)
    return net, gen


def test_fast_hidden_units_are_a_fixed_expansion_outside_the_state():
    net, gen = _fast_network()
    assert net.n_units == 3 and net.n_neurons == 10 and net.W.shape == (10, 10)
    assert (net.W[3:, 3:] == 0).all() and (net.b[3:] != 0).all()
    v = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    expected_hidden = torch.tanh(v @ net.W[3:, :3].t() + net.b[3:] + net.w_T[3:] * torch.log(torch.tensor(8.0)))
    rates = net.rates(v, 8.0)
    assert torch.allclose(rates, torch.cat([v, expected_hidden], 1), atol=1e-14)
    drive = net(v, 8.0)
    assert drive.mu.shape == (4, 3) and drive.sigma.shape == (3,)
    assert torch.allclose(drive.mu, rates @ net.W[:3].t() + net.b[:3] + net.w_T[:3] * torch.log(torch.tensor(8.0)))


@pytest.mark.parametrize("phi_visible", ["identity", "tanh"])
@pytest.mark.parametrize("temperatures", [[1.0, 1.5], [1.0, 1.5, 2.25, 3.375, 5.0625]])
def test_rule_with_fast_hidden_units_equals_autograd_and_leaves_hidden_rows_alone(phi_visible, temperatures):
    net, gen = _fast_network(phi_visible=phi_visible)
    operator = GaussianOperator(0.5, "sqrt_T")
    x = torch.randn(16, 3, generator=gen, dtype=torch.float64)
    states, drives = walkback.heating_trajectory_with_drives(net, operator, x, temperatures, gen)
    loss, grads = _autograd(net, operator, states, temperatures)
    update = plasticity.trajectory_update(net, operator, states, temperatures, drives)
    _assert_rule_is_autograd(update, loss, grads)
    for grad in (update.grad_W[3:], update.grad_b[3:], update.grad_w_T[3:], grads["W"][3:], grads["b"][3:]):
        assert (grad == 0).all()  # the expansion is fixed: no rule and no gradient reach the hidden rows
    assert update.temporal_norm > 0 and update.equal_time_norm > 0


def test_drive_from_a_first_unit_is_the_tail_of_the_full_drive():
    net, gen = _network()
    s = torch.randn(7, net.n_units, generator=gen, dtype=torch.float64)
    full, tail = net(s, 4.0), net(s, 4.0, first_unit=net.n_visible)
    assert tail.mu.shape == (7, net.n_hidden) and tail.sigma.shape == (net.n_hidden,)
    assert torch.allclose(tail.mu, full.mu[:, net.n_visible:], rtol=1e-13, atol=1e-13)  # GEMM blocking may differ
    assert torch.equal(tail.sigma, full.sigma[net.n_visible:])


def test_the_anchors_local_update_is_the_gradient_of_the_walk_back_plus_the_weighted_anchor_loss():
    """add_anchor on the one-step trajectory [target, start] at T = 1 equals autograd of
    walkback loss + 0.7 * score_anchor_loss, and the noise level's gradient is the walk back's alone."""
    net, gen = _fast_network()
    operator = GaussianOperator(0.5, "sqrt_T")
    temperatures = [1.0, 1.5, 2.25]
    x = torch.randn(16, 3, generator=gen, dtype=torch.float64)
    states, drives = walkback.heating_trajectory_with_drives(net, operator, x, temperatures, gen)
    start, target = score_anchor_pairs(x, operator.std(net(x), 1.0).detach(), 0.8, gen)
    net.zero_grad()
    walk = walkback.walkback_losses(net, operator, states, temperatures).sum()
    (walk + 0.7 * score_anchor_loss(net, operator, start, target)).backward()
    grads = {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}
    net.zero_grad()
    walk.detach_()
    sigma_alone = torch.autograd.grad(walkback.walkback_losses(net, operator, states, temperatures).sum(),
                                      net.sigma_visible)[0]
    update = add_anchor(plasticity.trajectory_update(net, operator, states, temperatures, drives),
                                   plasticity.trajectory_update(net, operator, [target, start], [1.0], None, False),
                                   0.7)
    _assert_rule_is_autograd(update, walk, grads)
    assert _relative_error(update.grad_sigma_visible, sigma_alone) < 1e-10
    assert _relative_error(grads["W"][:3], update.grad_W[:3]) < 1e-10 and (update.grad_W[3:] == 0).all()

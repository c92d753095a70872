"""The convolutional pathway of fast hidden layers (network.conv_channels): its local rule equals autograd of
the walkback loss in float64 under transpose feedback, and, under random feedback, autograd of a network whose
backward pass reads the feedback kernels (the rule's stated equation); Kolen-Pollack feedback follows the
forward kernels; training by the rule equals training by autograd; bad keys fail in one line."""

import numpy as np
import pytest
import torch
import torch.nn.functional as nnf

from asymnet import plasticity, walkback
from asymnet import run as run_module
from asymnet.brian import BrianExportError, export
from asymnet.data import Dataset
from asymnet.dequantization import DEQUANTIZED
from asymnet.model import build_model
from asymnet.networks import RecurrentNetwork
from asymnet.networks.pathway import ConvPathway
from asymnet.operators import BernoulliOperator, GaussianOperator
from asymnet.study import StudyError, parse_study
from tests.conftest import SHARED, needs_shared, run_main

TEMPERATURES = [1.1, 1.21, 1.331, 1.4641]


def _network(image_shape=(1, 8, 8), channels=(3, 4, 5), feedback="transpose", n_hidden=0, leak=(1.1, 1.0),
             seed=0, phi="tanh", phi_visible="identity", middle=0, residual=False, groups=0):
    """A float64 recurrent network with a pathway, moved off its zero output kernel and zero biases."""
    gen = torch.Generator().manual_seed(seed)
    n_visible = int(np.prod(image_shape))
    learned = dict(hidden_learning="learned", hidden_gain=1.0, hidden_bias=0.3) if n_hidden else {}
    net = RecurrentNetwork(n_visible, n_hidden, phi=phi, sigma_init=0.2, init_scale=0.5, generator=gen,
                           temperature_input=True, phi_visible=phi_visible, hidden_units="fast",
                           posterior_leak=leak, **learned)
    net.attach_pathway(ConvPathway(image_shape, channels, phi, feedback=feedback,
                                   feedback_scale=1.0 if feedback == "random" else 0.0, generator=gen, middle=middle,
                                   residual=residual, groups=groups))
    net = net.double()
    with torch.no_grad():
        for name, p in net.pathway.named_parameters():
            if name.startswith(("bias", "kernel_O")):
                p.normal_(0.0, 0.3, generator=gen)
            if name.startswith("norm_gain"):
                p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.3)
        if n_hidden:
            net.W[:n_visible, n_visible:].normal_(0.0, 0.1, generator=gen)
    return net, gen


def _autograd(net, operator, states, temperatures, targets=None, power=0.0, continuous_q=0.0):
    net.zero_grad()
    loss = walkback.walkback_losses(net, operator, states, temperatures, power, targets, continuous_q).sum()
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}


def _relative_error(a, b):
    return ((a - b).norm() / b.norm()).item()


def _trajectory(net, gen, batch=5):
    x = torch.rand(batch, net.n_visible, generator=gen, dtype=torch.float64)
    heating = walkback.NoiseHeating(0.2)
    return walkback.heating_trajectory(net, GaussianOperator(1.0), x, TEMPERATURES, gen, heating), heating


@pytest.mark.parametrize("image_shape, channels, n_hidden, middle, residual, groups", [
    ((1, 8, 8), (3, 4, 5), 0, 0, False, 0), ((3, 4, 4), (2, 3), 0, 2, False, 0), ((1, 8, 8), (4,), 6, 1, False, 0),
    ((1, 8, 8), (2, 3, 2), 6, 2, False, 0), ((1, 8, 8), (2, 3, 2), 0, 3, True, 0), ((3, 4, 4), (4,), 6, 1, True, 0),
    ((1, 8, 8), (4, 8, 4), 0, 2, False, 2), ((1, 8, 8), (4, 4), 6, 1, True, 4), ((3, 4, 4), (3,), 0, 0, False, 1)])
@pytest.mark.parametrize("power", [0.0, 0.5])
def test_the_pathway_rule_under_transpose_feedback_equals_autograd_for_every_parameter(image_shape, channels,
                                                                                      n_hidden, middle, residual,
                                                                                      groups, power):
    net, gen = _network(image_shape, channels, n_hidden=n_hidden, middle=middle, residual=residual, groups=groups)
    operator = GaussianOperator(1.0)
    states, heating = _trajectory(net, gen)
    targets = walkback.posterior_targets(operator, heating, states, TEMPERATURES)
    q = 1.0 if power else 0.0  # with the step weighting too (walkback.step_weighting: continuous)
    loss, grads = _autograd(net, operator, states, TEMPERATURES, targets, power, q)
    update = plasticity.trajectory_update(net, operator, states, TEMPERATURES, targets=targets, weight_power=power,
                                          continuous_q=q)
    assert torch.allclose(update.loss, loss, rtol=1e-12)
    assert set(update.grad_pathway) == {name for name, _ in net.pathway.named_parameters()}
    for name, grad in update.grad_pathway.items():
        assert grad.abs().max() > 0, name
        assert _relative_error(grad, grads["pathway." + name]) < 1e-10, name
    for name in ("W", "b", "w_T", "sigma_visible"):  # the rest of the network as before
        assert _relative_error(getattr(update, "grad_" + name), grads[name]) < 1e-10, name
    cosines = plasticity.rule_gradient_cosines(net, operator, states, TEMPERATURES, update, power, targets, q)
    assert cosines["pathway_gradient_cosine"] == pytest.approx(1.0, abs=1e-12)
    assert ("rule_gradient_cosine" in cosines) == bool(n_hidden)


def test_the_pathway_rule_takes_each_rows_temperatures_and_the_bernoulli_operator():
    """Per-row temperatures of sampled steps (m, batch, 1), and the Bernoulli operator's error, as autograd."""
    net, gen = _network(leak=None)
    operator = GaussianOperator(1.0)
    x = torch.rand(4, 64, generator=gen, dtype=torch.float64)
    heating = walkback.NoiseHeating(0.2)
    sampled = walkback.sample_steps(operator, heating, x, TEMPERATURES, 2, gen, walkback.noise_source(gen))
    loss, grads = _autograd(net, operator, sampled.states, sampled.temperatures, sampled.targets)
    update = plasticity.trajectory_update(net, operator, sampled.states, sampled.temperatures,
                                          targets=sampled.targets)
    assert sampled.temperatures.shape == (2, 4, 1) and torch.allclose(update.loss, loss, rtol=1e-12)
    for name, grad in update.grad_pathway.items():
        assert _relative_error(grad, grads["pathway." + name]) < 1e-10, name
    binary, gen = _network(leak=None, phi_visible="sigmoid")
    binary.sigma_visible.requires_grad_(False)
    bernoulli = BernoulliOperator(0.5)
    states = walkback.heating_trajectory(binary, bernoulli, (torch.rand(4, 64, generator=gen) > 0.5).double(),
                                         TEMPERATURES, gen)
    loss, grads = _autograd(binary, bernoulli, states, TEMPERATURES)
    update = plasticity.trajectory_update(binary, bernoulli, states, TEMPERATURES)
    for name, grad in update.grad_pathway.items():
        assert _relative_error(grad, grads["pathway." + name]) < 1e-10, name


def test_the_main_studys_update_equals_autograd_with_sampled_steps_and_the_drift_weighting():
    """The main study's combination: each row's own sampled steps, the posterior leak, the drift weighted by
    T^0.25 (walkback.step_weight_power) and by the continuous step weighting, every parameter as autograd."""
    net, gen = _network(middle=1)
    operator = GaussianOperator(1.0)
    x = torch.rand(4, 64, generator=gen, dtype=torch.float64)
    heating = walkback.NoiseHeating(0.2)
    sampled = walkback.sample_steps(operator, heating, x, TEMPERATURES, 3, gen, walkback.noise_source(gen))
    loss, grads = _autograd(net, operator, sampled.states, sampled.temperatures, sampled.targets, 0.25, 1.0)
    update = plasticity.trajectory_update(net, operator, sampled.states, sampled.temperatures,
                                          targets=sampled.targets, weight_power=0.25, continuous_q=1.0)
    assert torch.allclose(update.loss, loss, rtol=1e-12)
    for name, grad in update.grad_pathway.items():
        assert _relative_error(grad, grads["pathway." + name]) < 1e-10, name
    for name in ("W", "b", "w_T", "sigma_visible"):
        assert _relative_error(getattr(update, "grad_" + name), grads[name]) < 1e-10, name
    plain = plasticity.trajectory_update(net, operator, sampled.states, sampled.temperatures,
                                         targets=sampled.targets, continuous_q=1.0)
    assert _relative_error(plain.grad_W, update.grad_W) > 1e-3  # the weighting moves the update


def _feedback_surrogate(net):
    """The same network, each convolution written y = conv(x.detach(), K) + conv(x, B) - conv(x, B).detach():
    its value is conv(x, K), its gradient to x runs through B, to K as the forward pass's. Autograd of it
    is the rule's stated equation under any feedback kernels B."""
    pathway = net.pathway

    def conv(c, x, kernel):
        B = pathway.feedback_kernel(c.name)
        apply = (lambda z, k: nnf.conv_transpose2d(z, k, stride=c.stride, padding=c.padding)) if c.transposed else \
            (lambda z, k: nnf.conv2d(z, k, stride=c.stride, padding=c.padding))
        return apply(x.detach(), kernel) + apply(x, B) - apply(x, B).detach()

    pathway._conv = conv
    return net


def test_the_rule_under_random_feedback_is_its_equation_and_not_the_gradient():
    net, gen = _network(feedback="random", middle=1)
    operator = GaussianOperator(1.0)
    states, heating = _trajectory(net, gen)
    targets = walkback.posterior_targets(operator, heating, states, TEMPERATURES)
    update = plasticity.trajectory_update(net, operator, states, TEMPERATURES, targets=targets)
    cosines = plasticity.rule_gradient_cosines(net, operator, states, TEMPERATURES, update, targets=targets)
    assert cosines["pathway_gradient_cosine"] < 0.99  # the rule is not the gradient ...
    _, grads = _autograd(_feedback_surrogate(net), operator, states, TEMPERATURES, targets)
    for name, grad in update.grad_pathway.items():  # ... but the equation it states
        assert _relative_error(grad, grads["pathway." + name]) < 1e-10, name
    assert _relative_error(update.grad_pathway["kernel_O"], grads["pathway.kernel_O"]) < 1e-12  # no feedback below O
    assert abs(net.pathway.feedback_alignment()) < 0.3


def test_kolen_pollack_feedback_shrinks_its_distance_to_the_forward_kernels_by_the_decay():
    net, _ = _network(feedback="random")
    pathway = net.pathway
    gap = {c.name: pathway.feedback_kernel(c.name) - pathway.kernel(c.name).detach() for c in pathway.connections}
    before = pathway.kernels_before()
    with torch.no_grad():
        for c in pathway.connections:  # an arbitrary optimiser step
            pathway.kernel(c.name).add_(torch.randn_like(pathway.kernel(c.name)))
    pathway.kolen_pollack_step(before, 0.1)  # needs the buffers: random feedback has them too
    for c in pathway.connections:
        after = pathway.feedback_kernel(c.name) - pathway.kernel(c.name).detach()
        torch.testing.assert_close(after, 0.9 * gap[c.name], rtol=1e-12, atol=1e-12)


def test_kolen_pollack_feedback_started_at_the_forward_kernels_stays_there_and_trains_as_autograd():
    """Training by the local rule (Kolen-Pollack from the forward kernels, no decay) equals autograd training
    step for step, and the pathway's feedback stays its forward kernels (alignment 1)."""
    pixels = torch.randint(0, 256, (64, 64), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    data = Dataset("mnist", pixels, pixels[:16], rescaling=DEQUANTIZED, image_shape=(1, 8, 8))
    finals = {}
    for learning in ("local", "autograd"):
        extra = ["network.feedback=kolen_pollack", "network.feedback_scale=0", "network.feedback_decay=0"] \
            if learning == "local" else []
        study = parse_study(PATHWAY_STUDY, overrides=[f"training.learning={learning}", *extra])
        model = build_model(study, data, torch.device("cpu"), torch.float64)
        for step in range(4):
            figures = run_module.train_step(model, study, data, torch.device("cpu"), torch.float64,
                                            gradient_check=step == 3)
        if learning == "local":
            assert figures["pathway_gradient_cosine"] == pytest.approx(1.0, abs=1e-10)
            assert model.network.pathway.feedback_alignment() == pytest.approx(1.0, abs=1e-12)
        finals[learning] = {k: v.clone() for k, v in model.network.state_dict().items() if "feedback_" not in k}
    assert finals["local"].keys() == finals["autograd"].keys()
    for name, value in finals["autograd"].items():
        torch.testing.assert_close(finals["local"][name], value, rtol=1e-9, atol=1e-12)


PATHWAY_STUDY = """\
seed: 4
data: {name: mnist}
network: {kind: recurrent, n_hidden: 0, hidden_units: fast, phi: tanh, phi_visible: identity, posterior_leak: true,
          conv_channels: [3, 4]}
operator: {alpha: 1.0, sigma: 0.05}
walkback: {heating_kernel: noise, target: posterior, heating_factor: 1.5, sampled_steps: 3, n_extra_max: 0,
           sigma_max: 1.0}
training: {steps: 4, batch_size: 8, learning_rate: 1.0e-2}
"""


def test_the_pathway_drive_has_the_visible_shape_for_trajectories_and_per_row_temperatures():
    net, gen = _network(leak=None)
    s = torch.randn(3, 5, 64, generator=gen, dtype=torch.float64)
    T = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64).view(3, 1, 1)
    stacked = net.pathway(s, T)
    assert stacked.shape == (3, 5, 64)
    for k in range(3):
        torch.testing.assert_close(stacked[k], net.pathway(s[k], float(T[k])), rtol=1e-12, atol=1e-12)
    rows = net.pathway(s[0], T[:, 0].expand(3, 1).repeat(2, 1)[:5])
    assert rows.shape == (5, 64)
    untouched = RecurrentNetwork(64, 0, sigma_init=0.2, generator=torch.Generator().manual_seed(0),
                                 temperature_input=True, phi_visible="identity", hidden_units="fast").double()
    untouched.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("pathway.")})
    difference = net(s[0], 2.0).mu - untouched(s[0], 2.0).mu
    torch.testing.assert_close(difference, net.pathway(s[0], 2.0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scaling, q", [("sqrt_T", 1.0), ("T", 2.0)])
def test_the_input_gain_is_one_over_the_spread_of_a_noise_heated_state(scaling, q):
    """k(T)^2 (var + V_t) = 1 along the study's schedule, V_t the variance its noise heating added by step t
    (the sum of NoiseHeating.step_variances), and the pathway reads k(T) r_v (rule = autograd with it)."""
    from asymnet import schedule

    var, sigma0, factor = 0.1, 0.05, 1.3
    pathway = ConvPathway((1, 8, 8), (2, 3), input_gain=(var, sigma0, factor, q))
    temperatures = schedule.heating_temperatures(0, 12, factor)
    added = torch.cumsum(walkback.NoiseHeating(sigma0).step_variances(
        GaussianOperator(1.0, scaling), torch.tensor(temperatures, dtype=torch.float64)), 0)
    for T, V in zip(temperatures, added.tolist()):
        assert pathway.gain(T) ** 2 * (var + V) == pytest.approx(1.0, rel=1e-12)
        assert pathway.gain(torch.tensor(T, dtype=torch.float64)).item() == pytest.approx(pathway.gain(T), rel=1e-12)
    assert pathway.gain(1.0) == pytest.approx(var ** -0.5)
    net, gen = _network(channels=(2, 3))
    net.pathway.input_gain = (var, 0.2, 1.1, 1.0)
    operator = GaussianOperator(1.0)
    states, heating = _trajectory(net, gen)
    targets = walkback.posterior_targets(operator, heating, states, TEMPERATURES)
    _, grads = _autograd(net, operator, states, TEMPERATURES, targets)
    update = plasticity.trajectory_update(net, operator, states, TEMPERATURES, targets=targets)
    for name, grad in update.grad_pathway.items():
        assert _relative_error(grad, grads["pathway." + name]) < 1e-10, name
    cache = net.pathway.rates(states[2], 1.21)
    torch.testing.assert_close(cache["v"].reshape(5, 64), states[2] * net.pathway.gain(1.21), rtol=1e-12, atol=0)


def test_a_new_pathway_adds_nothing_until_it_learns():
    gen = torch.Generator().manual_seed(0)
    pathway = ConvPathway((1, 28, 28), (4, 8, 8), generator=gen)
    assert (pathway(torch.randn(2, 784, generator=gen), 3.0) == 0).all()  # the output kernel O starts at 0


@pytest.mark.parametrize("channels, image_shape, message", [
    ((), (1, 8, 8), "one per level"),
    ((2, 0), (1, 8, 8), "positive counts"),
    ((2, 2, 2, 2), (1, 28, 28), "halve the image 3 times, so its height and width must be divisible by 8; got 28 x 28"),
])
def test_a_pathway_that_cannot_be_built_says_why(channels, image_shape, message):
    with pytest.raises(ValueError, match=message):
        ConvPathway(image_shape, channels)
    with pytest.raises(ValueError, match="middle layers are a count, got -1"):
        ConvPathway((1, 8, 8), (2,), middle=-1)
    with pytest.raises(ValueError, match="residual skips pass the middle layers, but there are none"):
        ConvPathway((1, 8, 8), (2,), residual=True)


def test_a_residual_middle_layer_adds_its_phi_part_to_the_rate_it_reads():
    """m_k = m_{k-1} + tanh(M_k * m_{k-1} + b + w_T log T), checked against the equation written out."""
    net, gen = _network((1, 8, 8), (2, 3), middle=2, residual=True)
    pathway = net.pathway
    v = torch.randn(4, 64, generator=gen, dtype=torch.float64)
    cache = pathway.rates(v, 1.7)
    for k, below in ((1, "h1"), (2, "m1")):
        shift = getattr(pathway, f"bias_m{k}") + getattr(pathway, f"temperature_m{k}") * np.log(1.7)
        part = torch.tanh(nnf.conv2d(cache[below], pathway.kernel(f"M{k}"), padding=1) + shift[None, :, None, None])
        assert torch.allclose(cache[f"m{k}:phi"], part, rtol=0, atol=1e-14)
        assert torch.allclose(cache[f"m{k}"], cache[below] + part, rtol=0, atol=1e-14)
    plain, _ = _network((1, 8, 8), (2, 3), middle=2)  # the same draws without the skips
    assert not torch.allclose(plain.pathway.rates(v, 1.7)["m2"], cache["m2"])


def test_group_normalisation_is_the_equation_and_group_norm_of_the_potentials():
    """n = (a - mean_g a) / sqrt(var_g a + eps) over each row's groups, gamma n + shift under phi: written out,
    and against torch's group_norm of the same potentials; a row's rates do not depend on the other rows."""
    net, gen = _network((1, 8, 8), (4, 8), middle=1, groups=2)
    pathway = net.pathway
    v = torch.randn(3, 64, generator=gen, dtype=torch.float64)
    cache = pathway.rates(v, 2.3)
    a = nnf.conv2d(cache["h0"], pathway.kernel("E1"), stride=2, padding=1)  # h1's potentials: E1 * h0
    grouped = a.reshape(3, 2, -1)
    written = ((grouped - grouped.mean(-1, keepdim=True)) / (grouped.var(-1, correction=0, keepdim=True)
                                                             + 1e-5).sqrt()).reshape(a.shape)
    assert torch.allclose(cache["h1:norm"], written, rtol=0, atol=1e-12)
    assert torch.allclose(cache["h1:norm"], nnf.group_norm(a, 2, eps=1e-5), rtol=0, atol=1e-12)
    gamma, shift = pathway.norm_gain_h1, pathway.bias_h1 + pathway.temperature_h1 * np.log(2.3)
    rate = torch.tanh(gamma[None, :, None, None] * written + shift[None, :, None, None])
    assert torch.allclose(cache["h1"], rate, rtol=0, atol=1e-12)
    assert torch.allclose(pathway.rates(v[:1], 2.3)["g0"], cache["g0"][:1], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"groups must divide every level's channels \[4, 6\]; got 4"):
        ConvPathway((1, 8, 8), (4, 6), groups=4)


def test_group_statistics_stay_float32_under_bfloat16_autocast():
    """Under the coolings' bfloat16 autocast the convolutions run in bfloat16 and the group statistics in
    float32: the normalised potentials part from float32's by bfloat16's rounding, not by a lost variance."""
    gen = torch.Generator().manual_seed(3)
    pathway = ConvPathway((1, 28, 28), (16, 32), middle=1, groups=8, generator=gen)
    v = torch.randn(6, 784, generator=gen) * 3.0 + 5.0  # inputs off zero mean, so the potentials are too
    exact = pathway.rates(v, 1.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rounded = pathway.rates(v, 1.5)
    assert rounded["h1:norm"].dtype == torch.bfloat16 and rounded["h1:istd"].dtype == torch.float32
    for layer in ("h0", "h1", "m1", "g0"):
        gap = (rounded[layer + ":norm"].float() - exact[layer + ":norm"]).abs().max().item()
        assert 1e-4 < gap < 0.1, layer
        assert torch.allclose(rounded[layer + ":istd"], exact[layer + ":istd"], rtol=0.05), layer


def test_the_pathway_is_attached_only_where_it_can_drive_the_visible_units():
    slow = RecurrentNetwork(64, 4, hidden_units="slow")
    with pytest.raises(ValueError, match="use fast hidden units"):
        slow.attach_pathway(ConvPathway((1, 8, 8), (2,)))
    with pytest.raises(ValueError, match=r"the pathway's image \(1, 4, 4\) has 16 pixels, but there are 64"):
        RecurrentNetwork(64, 0).attach_pathway(ConvPathway((1, 4, 4), (2,)))
    with pytest.raises(ValueError, match="replicas=None"):
        RecurrentNetwork(64, 0, replicas=2).attach_pathway(ConvPathway((1, 8, 8), (2,)))


def test_brian_export_refuses_a_pathway_in_one_line():
    net, _ = _network()
    with pytest.raises(BrianExportError, match="no counterpart for a convolutional pathway"):
        export(net.float(), GaussianOperator(0.5))


@pytest.mark.parametrize("text, message", [
    ("network: {conv_channels: 16}\n", "network.conv_channels = 16 is not a list"),
    ("data: {name: mnist}\nnetwork: {conv_channels: [16, 0]}\n", r"must list positive integers"),
    ("data: {name: mnist}\nnetwork: {conv_channels: [16, 2.5]}\n", r"must list positive integers"),
    ("data: {name: mnist}\nnetwork: {conv_channels: [16, true]}\n", r"must list positive integers"),
    ("data: {name: spiral}\nnetwork: {conv_channels: [4]}\n", r"but data.name is spiral"),
    ("data: {name: mnist}\nnetwork: {kind: mlp, conv_channels: [4]}\n", r"but network.kind is mlp"),
    ("data: {name: mnist}\nnetwork: {n_hidden: 8, hidden_units: slow, conv_channels: [4]}\n",
     r"but network.hidden_units is slow"),
    ("data: {name: mnist}\nreplicas: 2\nnetwork: {n_hidden: 0, conv_channels: [4]}\n", r"but replicas is 2"),
    ("data: {name: mnist}\nnetwork: {n_hidden: 0, conv_channels: [4]}\ntraining: {optimizer: least_squares}\n",
     r"but training.optimizer is least_squares"),
    ("data: {name: mnist}\nnetwork: {n_hidden: 0, conv_channels: [4]}\nanchor: {weight: 1.0}\n",
     r"but anchor.weight is 1.0"),
    ("data: {name: mnist}\nnetwork: {n_hidden: 0, conv_channels: [4], conv_gain: 0}\n", r"network.conv_gain = 0"),
    ("data: {name: mnist}\nnetwork: {n_hidden: 0, conv_channels: [4], conv_input_gain: true}\n",
     r"network.conv_input_gain .* but walkback.heating_kernel is model"),
    ("data: {name: mnist}\nnetwork: {conv_middle: 2}\n", r"network.conv_middle = 2 adds layers .*conv_channels is \[\]"),
    ("data: {name: mnist}\nnetwork: {n_hidden: 0, conv_channels: [4], conv_middle: -1}\n", r"network.conv_middle = -1"),
    ("data: {name: mnist}\nnetwork: {n_hidden: 0, conv_channels: [4], conv_residual: true}\n",
     r"network.conv_residual adds skips past the pathway's middle layers, but network.conv_middle is 0"),
    ("data: {name: mnist}\nnetwork: {conv_residual: true}\n", r"network.conv_residual adds skips .* network.conv_channels is \[\]"),
    ("data: {name: mnist}\nnetwork: {n_hidden: 0, conv_channels: [4], conv_middle: 2, conv_residual: 2}\n",
     r"network.conv_residual = 2 is not a boolean"),
    ("data: {name: mnist}\nnetwork: {n_hidden: 0, conv_channels: [16, 24], conv_groups: 16}\n",
     r"network.conv_groups = 16 must divide every entry of network.conv_channels = \[16, 24\]; .*\(e.g. 8\)"),
    ("data: {name: mnist}\nnetwork: {n_hidden: 0, conv_channels: [4], conv_groups: -2}\n", r"network.conv_groups = -2"),
    ("data: {name: mnist}\nnetwork: {n_hidden: 0, conv_channels: [4], conv_groups: 2.5}\n", r"network.conv_groups = 2.5"),
    ("data: {name: mnist}\nnetwork: {conv_groups: 4}\n", r"network.conv_groups = 4 normalises .*conv_channels is \[\]"),
    ("data: {name: mnist}\nnetwork: {conv_input_gain: true}\nwalkback: {heating_kernel: noise}\n",
     r"but network.conv_channels is \[\]"),
    ("data: {name: mnist}\nnetwork: {n_hidden: 0, conv_channels: [4], conv_input_gain: 1}\n",
     r"network.conv_input_gain = 1 is not a boolean"),
    ("data: {name: mnist}\nnetwork: {n_hidden: 0, feedback: random}\ntraining: {learning: local}\n",
     r"no network.conv_channels pathway"),
])
def test_bad_pathway_keys_fail_in_one_line(text, message):
    with pytest.raises(StudyError, match=message) as error:
        parse_study(text)
    assert "\n" not in str(error.value)


@needs_shared
def test_a_pathway_too_deep_for_the_image_stops_the_run_in_one_line(tmp_path, capsys):
    study = tmp_path / "deep.yaml"
    study.write_text(PATHWAY_STUDY.replace("conv_channels: [3, 4]", "conv_channels: [2, 2, 2, 2]")
                     .replace("data: {name: mnist}", "data: {name: mnist, n_train: 100, n_test: 100}"))
    result = run_main(capsys, study, "--out", tmp_path / "run", "--data", SHARED, "--quiet")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "network.conv_channels = [2, 2, 2, 2]: 4 levels halve the image 3 times" in result.stderr
    assert not (tmp_path / "run").exists()

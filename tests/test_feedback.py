"""Learned fast hidden units: autograd trains them by the exact gradient; the local rule carries the visible
errors to them through feedback synapses B (transpose: exact, random: feedback alignment, Kolen-Pollack:
B follows W_vh^T); the log follows the feedback pathway; checkpoints keep B."""

import math

import h5py
import pytest
import torch

from asymnet import plasticity, walkback
from asymnet import run as run_module
from asymnet.brian import BrianExportError, export
from asymnet.data import load_dataset
from asymnet.model import build_model, load_checkpoint, save_checkpoint
from asymnet.networks import RecurrentNetwork
from asymnet.operators import BernoulliOperator, GaussianOperator
from asymnet.study import parse_study
from tests.conftest import run_main


def _learned_network(feedback="transpose", phi="tanh", phi_visible="identity", temperature_input=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    net = RecurrentNetwork(3, 6, phi=phi, sigma_init=0.3, learn_sigma=True, generator=gen,
                           temperature_input=temperature_input, phi_visible=phi_visible, hidden_units="fast",
                           hidden_gain=1.5, hidden_bias=0.5, hidden_learning="learned",
                           feedback=feedback).double()
    with torch.no_grad():  # W_vh starts at 0, where the exact feedback W_vh^T carries nothing: move it
        net.W[:3].add_(torch.randn(3, 9, generator=gen, dtype=torch.float64) * 0.5)
        net.b.add_(torch.randn(9, generator=gen, dtype=torch.float64) * 0.3)
        if temperature_input:
            net.w_T.add_(torch.randn(9, generator=gen, dtype=torch.float64) * 0.3)
    return net, gen


def _autograd(net, operator, states, temperatures, power=0.0):
    net.zero_grad()
    loss = walkback.walkback_losses(net, operator, states, temperatures, power).sum()
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}


def _relative_error(a, b):
    return ((a - b).norm() / b.norm()).item()


TEMPERATURES = [1.0, 1.0, 2.0, 4.0, 8.0]


@pytest.mark.parametrize("power", [0.0, 0.5])
@pytest.mark.parametrize("phi, phi_visible, temperature_input", [("tanh", "identity", True), ("tanh", "tanh", False),
                                                                  ("sigmoid", "identity", True),
                                                                  ("softplus", "tanh", True)])
def test_transpose_feedback_rule_equals_the_autograd_gradient_of_every_weight(power, phi, phi_visible,
                                                                              temperature_input):
    net, gen = _learned_network(phi=phi, phi_visible=phi_visible, temperature_input=temperature_input)
    operator = GaussianOperator(0.4, "sqrt_T")
    x = torch.randn(16, 3, generator=gen, dtype=torch.float64)
    states, drives = walkback.heating_trajectory_with_drives(net, operator, x, TEMPERATURES, gen)
    loss, grads = _autograd(net, operator, states, TEMPERATURES, power)
    update = plasticity.trajectory_update(net, operator, states, TEMPERATURES, drives, weight_power=power)
    assert torch.allclose(update.loss, loss, rtol=1e-12)
    for name in ("W", "b", "sigma_visible") + (("w_T",) if temperature_input else ()):
        assert _relative_error(getattr(update, "grad_" + name), grads[name]) < 1e-10, name
    for name in ("W", "b"):  # the hidden rows (W_hv, b_h) learn, by the exact gradient
        hidden = getattr(update, "grad_" + name)[3:]
        assert hidden.abs().max() > 1e-3 and _relative_error(hidden, grads[name][3:]) < 1e-10, name
    assert (update.grad_W[3:, 3:] == 0).all()  # W_hh takes no part
    cosine = plasticity.rule_gradient_cosines(net, operator, states, TEMPERATURES, update, power)["rule_gradient_cosine"]
    assert cosine == pytest.approx(1.0, abs=1e-12)


def test_transpose_feedback_rule_equals_autograd_under_the_bernoulli_operator():
    net, gen = _learned_network(phi="sigmoid", phi_visible="sigmoid")
    net.sigma_visible.requires_grad_(False)
    operator = BernoulliOperator(0.6)
    x = (torch.rand(16, 3, generator=gen, dtype=torch.float64) > 0.5).double()
    states, drives = walkback.heating_trajectory_with_drives(net, operator, x, [1.0, 2.0, 4.0], gen)
    loss, grads = _autograd(net, operator, states, [1.0, 2.0, 4.0])
    update = plasticity.trajectory_update(net, operator, states, [1.0, 2.0, 4.0], drives)
    for name in ("W", "b", "w_T"):
        assert _relative_error(getattr(update, "grad_" + name), grads[name]) < 1e-10, name


def test_random_feedback_rule_is_its_three_factor_equation():
    """delta_h = (B e_v) * phi'(a_h), dW_hv = delta_h phi_v(v)^T, db_h = delta_h, dw_T,h = delta_h log T, built
    here step by step from the drive, the operator's std and autograd's phi'; the visible rows stay exact."""
    net, gen = _learned_network(feedback="random", phi_visible="tanh")
    operator = GaussianOperator(0.4, "T")
    x = torch.randn(16, 3, generator=gen, dtype=torch.float64)
    states, drives = walkback.heating_trajectory_with_drives(net, operator, x, TEMPERATURES, gen)
    update = plasticity.trajectory_update(net, operator, states, TEMPERATURES, drives)
    B = net.feedback_weights
    assert B.shape == (6, 3)
    dW, db, dw_T = torch.zeros(6, 3, dtype=torch.float64), torch.zeros(6, dtype=torch.float64), torch.zeros(6, dtype=torch.float64)
    with torch.no_grad():
        for t, T in enumerate(TEMPERATURES, start=1):
            v = states[t]
            drive = net(v, T)
            std = T * torch.nn.functional.softplus(drive.sigma)  # noise_scaling T
            mu = 0.6 * v + 0.4 * drive.mu
            error = 0.4 * (states[t - 1] - mu) / std**2  # (batch, 3): the visible postsynaptic factor
            a = torch.tanh(v) @ net.W[3:, :3].t() + net.b[3:] + net.w_T[3:] * math.log(T)
            with torch.enable_grad():
                a_ = a.clone().requires_grad_(True)
                slope = torch.autograd.grad(torch.tanh(a_).sum(), a_)[0]
            delta = torch.einsum("hj,bj->bh", B, error) * slope
            dW += torch.einsum("bh,bj->hj", delta, torch.tanh(v)) / 16
            db += delta.mean(0)
            dw_T += delta.mean(0) * math.log(T)
    assert _relative_error(-update.grad_W[3:, :3], dW) < 1e-12
    assert _relative_error(-update.grad_b[3:], db) < 1e-12
    assert _relative_error(-update.grad_w_T[3:], dw_T) < 1e-12
    _, grads = _autograd(net, operator, states, TEMPERATURES)
    assert _relative_error(update.grad_W[:3], grads["W"][:3]) < 1e-10  # the visible rows: the exact rule
    assert _relative_error(update.grad_W[3:], grads["W"][3:]) > 0.1  # B is not W_vh^T
    assert abs(plasticity.feedback_alignment(net)) < 0.9


def test_kolen_pollack_step_shrinks_the_feedback_mismatch_by_one_minus_decay_whatever_the_step():
    net, gen = _learned_network(feedback="kolen_pollack")
    before = net.feedback_weights.clone() - net.W[:3, 3:].detach().mT
    W_vh_before = net.W[:3, 3:].detach().clone()
    with torch.no_grad():  # any optimiser step u
        net.W[:3, 3:].add_(torch.randn(3, 6, generator=gen, dtype=torch.float64))
    plasticity.kolen_pollack_step(net, W_vh_before, 0.05)
    after = net.feedback_weights - net.W[:3, 3:].detach().mT
    torch.testing.assert_close(after, 0.95 * before, rtol=1e-13, atol=1e-15)


def _study(feedback="transpose", learning="local", replicas=1, extra=""):
    decay = ", feedback_decay: 0.05" if feedback == "kolen_pollack" else ""
    return parse_study(
        f"replicas: {replicas}\n"
        "data: {name: spiral, n_train: 500, n_test: 100}\n"
        f"network: {{kind: recurrent, n_hidden: 5, hidden_units: fast, hidden_learning: learned, feedback: {feedback}"
        f"{decay}}}\n"
        "operator: {sigma: 0.2, learn_sigma: true}\n"
        "walkback: {n_extra_max: 2, settle_steps: 3}\n"
        f"training: {{steps: 10, batch_size: 16, learning_rate: 1.0e-2, learning: {learning}, dtype: float64}}\n"
        + extra)


def _train(study, steps, model=None):
    data = load_dataset("spiral", 500, 100, None, torch.Generator().manual_seed(0))
    model = model or build_model(study, data, torch.device("cpu"), torch.float64)
    for _ in range(steps):
        run_module.train_step(model, study, data, torch.device("cpu"), torch.float64)
    return model, data


def test_autograd_and_the_transpose_rule_train_learned_hidden_units_to_the_same_weights():
    """10 float64 training steps of the run loop, same seed: W_hv, b_h (and everything else) end equal."""
    finals = {}
    for learning in ("local", "autograd"):
        model, data = _train(_study(learning=learning), 10)
        finals[learning] = model.network.state_dict()
    initial = build_model(_study(), data, torch.device("cpu"), torch.float64).network
    for name, value in finals["autograd"].items():
        assert torch.allclose(finals["local"][name], value, rtol=1e-9, atol=1e-12), name
    assert (finals["local"]["W"][2:, :2] - initial.W[2:, :2]).abs().max() > 1e-3  # W_hv learned
    assert (finals["local"]["b"][2:] - initial.b[2:]).abs().max() > 1e-3  # b_h learned


def test_kolen_pollack_training_shrinks_the_mismatch_geometrically():
    """In the run loop, after Adam's steps: B - W_vh^T = (1 - feedback_decay)^steps times its start."""
    study = _study("kolen_pollack")
    model, _ = _train(study, 0)
    net = model.network
    start = (net.feedback_weights - net.W[:2, 2:].detach().mT).clone()
    assert plasticity.feedback_alignment(net) != plasticity.feedback_alignment(net)  # NaN: W_vh starts at 0
    _train(study, 10, model)
    torch.testing.assert_close(net.feedback_weights - net.W[:2, 2:].detach().mT, 0.95**10 * start,
                               rtol=1e-10, atol=1e-13)
    assert (net.W[:2, 2:] != 0).any()


def test_kolen_pollack_started_at_zero_is_the_transpose_rule():
    """feedback_scale 0: B starts at 0 = W_vh^T and, with no decay, moves by exactly W_vh's change, so 10 steps of
    the run loop end where the transpose rule (the exact gradient) ends, each B synapse moved by its partner."""
    started_at_zero = parse_study(
        "data: {name: spiral, n_train: 500, n_test: 100}\n"
        "network: {kind: recurrent, n_hidden: 5, hidden_units: fast, hidden_learning: learned, "
        "feedback: kolen_pollack, feedback_scale: 0.0, feedback_decay: 0.0}\n"
        "operator: {sigma: 0.2, learn_sigma: true}\nwalkback: {n_extra_max: 2, settle_steps: 3}\n"
        "training: {steps: 10, batch_size: 16, learning_rate: 1.0e-2, learning: local, dtype: float64}\n")
    mirrored, _ = _train(started_at_zero, 10)
    exact, _ = _train(_study("transpose"), 10)
    net = mirrored.network
    torch.testing.assert_close(net.feedback_weights, net.W[:2, 2:].detach().mT, rtol=1e-12, atol=1e-14)
    for name, value in exact.network.state_dict().items():
        assert torch.allclose(net.state_dict()[name], value, rtol=1e-9, atol=1e-12), name
    assert (net.W[:2, 2:] != 0).any()


def test_random_feedback_stays_fixed_in_training():
    model, data = _train(_study("random"), 3)
    initial = build_model(_study("random"), data, torch.device("cpu"), torch.float64).network
    assert torch.equal(model.network.feedback_weights, initial.feedback_weights)
    assert not torch.equal(model.network.W[2:, :2], initial.W[2:, :2])


def test_the_replica_axis_runs_each_replicas_feedback_rule():
    singles = [_learned_network("random", seed=r)[0] for r in range(2)]
    stacked = RecurrentNetwork.stack(singles)
    assert stacked.feedback_weights.shape == (2, 6, 3)
    assert not torch.equal(stacked.feedback_weights[0], stacked.feedback_weights[1])
    operator = GaussianOperator(0.5)
    schedules = [[1.0, 2.0, 4.0], [1.0, 2.0]]
    padded = walkback.ReplicaSchedule.pad(schedules, torch.float64, "cpu")
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 8, 3, generator=gen, dtype=torch.float64)
    states = walkback.heating_trajectory(stacked, operator, x, padded,
                                         walkback.ReplicaNoise([torch.Generator().manual_seed(r) for r in range(2)]))
    update = plasticity.trajectory_update(stacked, operator, states, padded)
    for r, temperatures in enumerate(schedules):
        single = plasticity.trajectory_update(singles[r], operator, [s[r] for s in states[: len(temperatures) + 1]],
                                              temperatures)
        for name in ("W", "b", "w_T"):
            assert _relative_error(getattr(update, "grad_" + name)[r], getattr(single, "grad_" + name)) < 1e-12, name
    assert torch.allclose(plasticity.feedback_alignment(stacked),
                          torch.tensor([plasticity.feedback_alignment(net) for net in singles], dtype=torch.float64))


def test_a_resumed_kolen_pollack_run_continues_bit_for_bit(tmp_path):
    study = _study("kolen_pollack")
    straight, _ = _train(study, 6)
    first, _ = _train(study, 3)
    save_checkpoint(tmp_path / "checkpoint.pt", first, 3)
    resumed = build_model(study, _train(study, 0)[1], torch.device("cpu"), torch.float64)
    assert load_checkpoint(tmp_path / "checkpoint.pt", resumed) == 3
    assert torch.equal(resumed.network.feedback_weights, first.network.feedback_weights)
    _train(study, 3, resumed)
    for name, value in straight.network.state_dict().items():
        assert torch.equal(resumed.network.state_dict()[name], value), name


def test_the_log_follows_the_feedback_pathway_of_each_replica(tmp_path, capsys):
    study = tmp_path / "hidden.yaml"
    study.write_text(
        "name: hidden\nreplicas: 2\ndata: {name: mog, n_train: 500, n_test: 100}\n"
        "network: {kind: recurrent, n_hidden: 6, hidden_units: fast, hidden_learning: learned, feedback: random}\n"
        "walkback: {n_extra_max: 1, settle_steps: 1}\n"
        "training: {steps: 8, batch_size: 16, learning: local}\n"
        "logging: {metrics_every: 2, weights_every: 4, checkpoint_every: 8, eval_every: 4}\n"
        "evaluation: {n_samples: 50, n_bound: 50, ep_chains: 0}\n")
    result = run_main(capsys, study, "--out", tmp_path / "run", "--quiet")
    assert result.returncode == 0, result.stderr
    with h5py.File(tmp_path / "run" / "log.h5", "r") as log:
        for r in range(2):
            metrics = log[f"replicas/{r}/metrics"]
            alignment, check = metrics["feedback_alignment"][:], metrics["rule_gradient_cosine"][:]
            assert alignment[:, 0].tolist() == [4, 8] and check[:, 0].tolist() == [4, 8]
            assert (abs(alignment[:, 1]) <= 1).all() and (abs(check[:, 1]) <= 1).all()


def test_brian_export_refuses_learned_fast_hidden_units():
    net, _ = _learned_network(feedback="random")
    with pytest.raises(BrianExportError, match="fast"):
        export(net, GaussianOperator(0.5))


def test_a_zero_random_feedback_is_refused_in_one_line(tmp_path):
    from asymnet.study import StudyError, load_study

    path = tmp_path / "study.yaml"
    path.write_text("network: {hidden_units: fast, n_hidden: 4, hidden_learning: learned, feedback: random, "
                    "feedback_scale: 0}\ntraining: {learning: local}\n")
    with pytest.raises(StudyError, match="feedback_scale = 0 gives a fixed random B of zeros") as error:
        load_study(path)
    assert "\n" not in str(error.value)

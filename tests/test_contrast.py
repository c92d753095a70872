"""The negative phase for the first level's implied energy (asymnet.contrast, walkback.contrast_weight): its
energy gap against energies known in closed form, its local update against autograd in float64, the training
step under both rules, its persistent chains through a checkpoint, and its bad keys."""

import pytest
import torch

from asymnet import contrast
from asymnet import run as run_module
from asymnet.model import build_model, load_checkpoint, load_data, save_checkpoint
from asymnet.operators import Drive, GaussianOperator
from asymnet.study import StudyError, parse_study
from tests.test_pathway import _network

STUDY = """\
name: contrast
seed: 5
data: {name: mog, n_train: 500, n_test: 100}
network: {kind: recurrent, n_hidden: 0, posterior_leak: true}
operator: {family: gaussian, alpha: 1.0, sigma: 0.1, learn_sigma: true}
walkback: {heating_kernel: noise, target: posterior, heating_factor: 1.5, n_extra_max: 0, sampled_steps: 2,
           contrast_weight: 0.5, contrast_chains: 6, contrast_steps: 3}
training: {steps: 10, batch_size: 8, learning_rate: 1.0e-3, learning: LEARNING, dtype: float64}
"""


class Field:
    """A stand-in network whose mean map is s - tau grad E(s) for a given energy gradient."""

    def __init__(self, grad_energy, tau):
        self.grad_energy, self.tau = grad_energy, tau

    def __call__(self, s, T):
        return Drive(s - self.tau * self.grad_energy(s), torch.zeros(s.shape[1], dtype=s.dtype))


def _pairs(x, c, tau, seed=0):
    points, directions = contrast.segment_points(x, c, torch.Generator().manual_seed(seed))
    return contrast.ContrastPairs(points, directions, 1.1, tau, c)


def test_a_linear_energy_gives_its_difference_exactly():
    g = torch.randn(6, dtype=torch.float64)
    tau = 0.003
    x, c = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    gap = contrast.energy_gap(Field(lambda s: g.expand_as(s), tau), GaussianOperator(1.0), _pairs(x, c, tau))
    # E(s) = g . s: the field is constant along every segment, so every draw of u gives the same value
    torch.testing.assert_close(gap, ((x - c) @ g).mean(), rtol=1e-12, atol=0)


def test_a_quadratic_energy_gives_its_difference_in_expectation():
    torch.manual_seed(1)
    m = torch.randn(5, 5, dtype=torch.float64)
    a = m @ m.T / 5 + torch.eye(5, dtype=torch.float64)  # E(s) = s^T a s / 2, grad E = a s
    tau, rows = 0.01, 20_000
    x, c = torch.randn(1, 5, dtype=torch.float64), torch.randn(1, 5, dtype=torch.float64)
    pairs = _pairs(x.expand(rows, 5), c.expand(rows, 5), tau, seed=2)
    assert pairs.points.shape == (contrast.DRAWS * rows, 5)
    gap = contrast.energy_gap(Field(lambda s: s @ a, tau), GaussianOperator(1.0), pairs)
    exact = (x @ a @ x.T - c @ a @ c.T).squeeze() / 2
    # the integrand is linear in u, so each pair's estimate is off by b (mean u - 1/2); the stratified draws'
    # mean is 1/2 with standard deviation 1 / sqrt(12 rows DRAWS^3); four of them allowed
    b = ((x - c) @ a @ (x - c).T).abs().squeeze()
    assert abs(gap - exact) < 4 * b / (12 * rows * contrast.DRAWS**3) ** 0.5


@pytest.mark.parametrize("middle, groups, n_hidden", [(0, 0, 0), (1, 2, 0), (1, 0, 6)])
def test_the_local_update_is_autograds_gradient_of_the_gap(middle, groups, n_hidden):
    net, gen = _network(channels=(4, 4), middle=middle, groups=groups, n_hidden=n_hidden)
    operator, tau = GaussianOperator(1.0), 0.02
    x, c = torch.rand(5, 64, generator=gen, dtype=torch.float64), torch.rand(5, 64, generator=gen, dtype=torch.float64)
    pairs = _pairs(x, c, tau)
    net.zero_grad()
    gap = contrast.energy_gap(net, operator, pairs)
    gap.backward()
    update, value = contrast.local_update(net, operator, pairs)
    torch.testing.assert_close(value, gap.detach(), rtol=1e-12, atol=0)
    grads = {name: p.grad for name, p in net.named_parameters() if p.grad is not None}
    for name, grad in update.grad_pathway.items():
        assert grad.abs().max() > 0, name
        assert ((grad - grads["pathway." + name]).norm() / grads["pathway." + name].norm()).item() < 1e-10, name
    for name in ("W", "b", "w_T"):
        want = grads[name]
        assert ((getattr(update, "grad_" + name) - want).norm() / want.norm()).item() < 1e-10, name
    assert "sigma_visible" not in grads and update.grad_sigma_visible.abs().max() == 0  # the term reads no noise level
    assert update.loss.abs().max() == 0 and update.temporal_norm == 0.0


def _model(learning, weight=0.5, start=0):
    study = parse_study(STUDY.replace("LEARNING", learning).replace(
        "contrast_weight: 0.5", f"contrast_weight: {weight}, contrast_start: {start}"))
    data = load_data(study, None)
    return study, data, build_model(study, data, torch.device("cpu"), torch.float64)


def test_the_training_step_takes_the_same_update_under_both_rules():
    steps = {}
    for learning in ("local", "autograd"):
        study, data, model = _model(learning)
        figures = run_module.train_step(model, study, data, torch.device("cpu"), torch.float64, with_terms=False)
        steps[learning] = figures, {n: p.grad.clone() for n, p in model.network.named_parameters() if p.grad is not None}
        assert model.contrast_chains.shape == (6, model.network.n_visible)
    (local, local_grads), (exact, exact_grads) = steps["local"], steps["autograd"]
    assert local["contrast_gap"] == pytest.approx(exact["contrast_gap"], rel=1e-12)
    assert local["loss"] == pytest.approx(exact["loss"], rel=1e-12)
    for name, grad in exact_grads.items():
        assert ((local_grads[name] - grad).norm() / grad.norm()).item() < 1e-10, name
    study, data, plain = _model("local", weight=0)
    run_module.train_step(plain, study, data, torch.device("cpu"), torch.float64, with_terms=False)
    assert plain.contrast_chains is None
    moved = (plain.network.W.grad - local_grads["W"]).norm() / local_grads["W"].norm()
    assert moved > 1e-3  # the term is in the update


def test_the_term_acts_only_on_the_updates_after_its_start():
    device = torch.device("cpu")
    study, data, late = _model("local", start=0.3)  # of 10 updates: the term from the 4th
    plain_study, _, plain = _model("local", weight=0)
    for step in (1, 2, 3):  # the same draws as a run without the term, and no chains yet
        late_rows = run_module.train_members(late, study, data, device, torch.float64, step, with_terms=False)
        plain_rows = run_module.train_members(plain, plain_study, data, device, torch.float64, step, with_terms=False)
        assert late.contrast_chains is None and "contrast_gap" not in late_rows[0]
        assert late_rows[0]["loss"] == plain_rows[0]["loss"]
        assert torch.equal(late.network.W, plain.network.W)
    rows = run_module.train_members(late, study, data, device, torch.float64, 4, with_terms=False)
    assert late.contrast_chains.shape == (6, late.network.n_visible) and "contrast_gap" in rows[0]
    run_module.train_members(plain, plain_study, data, device, torch.float64, 4, with_terms=False)
    assert not torch.equal(late.network.W, plain.network.W)


def test_the_chains_come_back_from_the_checkpoint_so_a_resumed_run_steps_as_the_uninterrupted_one(tmp_path):
    device = torch.device("cpu")
    study, data, straight = _model("local")
    for _ in range(4):
        run_module.train_step(straight, study, data, device, torch.float64, with_terms=False)
    _, _, first = _model("local")
    for _ in range(2):
        run_module.train_step(first, study, data, device, torch.float64, with_terms=False)
    save_checkpoint(tmp_path / "checkpoint.pt", first, 2)
    _, _, resumed = _model("local")
    assert load_checkpoint(tmp_path / "checkpoint.pt", resumed) == 2
    assert torch.equal(resumed.contrast_chains, first.contrast_chains)
    for _ in range(2):
        run_module.train_step(resumed, study, data, device, torch.float64, with_terms=False)
    assert torch.equal(resumed.contrast_chains, straight.contrast_chains)
    for name, value in straight.network.state_dict().items():
        assert torch.equal(resumed.network.state_dict()[name], value), name


@pytest.mark.parametrize("good, bad, message", [
    ("contrast_weight: 0.5", "contrast_weight: -1", "walkback.contrast_weight = -1"),
    ("contrast_weight: 0.5", "contrast_weight: strong", "walkback.contrast_weight = 'strong'"),
    ("contrast_chains: 6", "contrast_chains: 0", "walkback.contrast_chains = 0"),
    ("contrast_steps: 3", "contrast_steps: 2.5", "walkback.contrast_steps = 2.5"),
    ("contrast_steps: 3", "contrast_step: 3", "contrast_step"),
    ("contrast_steps: 3", "contrast_steps: 3, contrast_start: -0.2", "walkback.contrast_start = -0.2"),
    ("contrast_steps: 3", "contrast_steps: 3, contrast_start: 1", "walkback.contrast_start = 1"),
    ("contrast_steps: 3", "contrast_steps: 3, contrast_start: late", "walkback.contrast_start = 'late'"),
    ("contrast_weight: 0.5", "contrast_weight: 0, contrast_start: 0.4",
     "walkback.contrast_start = 0.4 starts a term that walkback.contrast_weight: 0 leaves out"),
])
def test_bad_values_fail_in_one_line(good, bad, message):
    with pytest.raises(StudyError) as error:
        parse_study(STUDY.replace("LEARNING", "local").replace(good, bad))
    assert message in str(error.value) and "\n" not in str(error.value), str(error.value)


@pytest.mark.parametrize("change, wrong", [
    (("heating_kernel: noise, target: posterior", "heating_kernel: model"), "walkback.heating_kernel is model"),
    (("n_hidden: 0", "n_hidden: 4, hidden_units: slow"), "network.hidden_units is slow"),
    (("learning: LEARNING", "learning: local, optimizer: least_squares"), "training.optimizer is least_squares"),
])
def test_a_study_the_term_cannot_serve_says_what_to_set(change, wrong):
    text = STUDY.replace(*change).replace("LEARNING", "local")
    if "heating_kernel: model" in text or "least_squares" in text:  # the keys those need off, so the term is what fails
        text = text.replace(" sampled_steps: 2,", "").replace("target: posterior, ", "")
        text = text.replace("posterior_leak: true", "posterior_leak: false")
    with pytest.raises(StudyError) as error:
        parse_study(text)
    message = str(error.value)
    assert "walkback.contrast_weight = 0.5" in message and wrong in message, message
    assert message.endswith("set those or walkback.contrast_weight: 0")

"""The grid's stationary law (asymnet.metrics.stationary) against closed forms: a linear Gaussian chain's
Lyapunov covariance, and the mode weights of a Langevin chain on a mixture with unequal weights."""

import math
import shutil

import h5py
import numpy as np
import pytest
import scipy.linalg
import torch

from asymnet.data.toy import TOYS, ToyDistribution
from asymnet.metrics import stationary
from asymnet.networks.recurrent import RecurrentNetwork
from asymnet.operators import GaussianOperator
from asymnet.long_run import measure_long_run


def _moments(pi: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = pi @ centres
    centred = centres - mean
    return mean, (centred * pi[:, None]).T @ centred


@pytest.mark.parametrize("a", [[[0.97, 0.0], [0.0, 0.97]], [[0.95, 0.12], [-0.12, 0.95]], [[0.93, 0.1], [0.0, 0.96]]])
def test_linear_gaussian_chain_has_the_lyapunov_covariance_on_the_grid(a):
    """s' = A s + c + 0.05 xi (asymmetric A in two of the cases, so the chain is not reversible): the grid's law
    has mean (I - A)^-1 c and covariance solving S = A S A^T + 0.05^2 I, to 1e-3 relative, at a cell as wide as
    the noise. Without the rounding correction the covariance would be (0.05^2 + d^2 / 12) / 0.05^2 - 1 = 8 %
    too large here, so the tolerance can tell."""
    a = np.array(a)
    c = np.array([0.02, -0.01])
    std = 0.05
    exact_mean = np.linalg.solve(np.eye(2) - a, c)
    exact_cov = scipy.linalg.solve_discrete_lyapunov(a, std**2 * np.eye(2))
    half = 8.0 * math.sqrt(np.linalg.eigvalsh(exact_cov).max()) + np.abs(exact_mean).max()
    n = int(math.ceil(2 * half / std))
    lo, hi = -half, half
    centres = stationary.cell_centres(lo, hi, n)
    transition, leak = stationary.grid_transition(centres @ a.T + c, np.array([std, std]), lo, hi, n)
    np.testing.assert_allclose(np.asarray(transition.sum(axis=1)).ravel(), 1.0, atol=1e-12)
    pi = stationary.stationary_distribution(transition)
    mean, cov = _moments(pi, centres)
    np.testing.assert_allclose(mean, exact_mean, atol=1e-3 * std)
    np.testing.assert_allclose(cov, exact_cov, rtol=1e-3, atol=1e-3 * np.abs(exact_cov).max())
    assert pi @ leak < 1e-9


def test_langevin_chain_on_an_unequal_mixture_keeps_its_mode_weights():
    """The unadjusted Langevin step x + (s^2 / 2) grad log q(x) + s xi on a mixture of four well-separated
    Gaussians of one width with weights 0.4, 0.3, 0.2, 0.1: every mode's step has the same bias, so the law's
    mode weights are q's. The grid's agree to 2e-3 (the reference itself is exact)."""
    centres = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]], dtype=torch.float64)
    weights = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
    width, std = 0.15, 0.05
    lo, hi = -1.75, 1.75  # five widths beyond each mode's centre
    n = int(round((hi - lo) / std))
    points = torch.from_numpy(stationary.cell_centres(lo, hi, n))
    logits = -torch.cdist(points, centres).pow(2) / (2 * width**2) + weights.log()
    score = (torch.softmax(logits, dim=1) @ centres - points) / width**2
    transition, _ = stationary.grid_transition((points + 0.5 * std**2 * score).numpy(), np.array([std, std]),
                                               lo, hi, n)
    pi = stationary.stationary_distribution(transition)
    nearest = torch.cdist(points, centres).argmin(dim=1).numpy()
    mode_weights = np.bincount(nearest, weights=pi, minlength=4)
    np.testing.assert_allclose(mode_weights, weights.numpy(), atol=2e-3)


class _ExactLangevin(torch.nn.Module):
    """A stand-in network whose T = 1 operator (alpha 1) is the exact Langevin step of a toy."""

    n_units = 2

    def __init__(self, toy: ToyDistribution, std: float):
        super().__init__()
        self.toy, self.std = toy, std
        self.anchor = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))

    def forward(self, s, T):
        from asymnet.operators import Drive

        mu = s + 0.5 * self.std**2 * self.toy.score(s)
        sigma = torch.full_like(s, math.log(math.expm1(self.std)))  # softplus^-1(std)
        return Drive(mu.to(s.dtype), sigma)


def test_exact_langevin_mixture_has_equal_mode_weights_and_the_data_log_density():
    """The mixture's exact Langevin operator at the studies' noise 0.05: eight equal weights to 1e-3, and a mean
    log p within 0.06 nats of the data's own (the step's small bias widens the modes a little). On cells of
    0.08 (68 x 68): the default cell, the noise level, needs 108 x 108 (see the test of too fine a grid), whose
    sparse LU takes many times as long."""
    toy = TOYS["mog"]
    law = stationary.toy_stationary(_ExactLangevin(toy, 0.05), GaussianOperator(alpha=1.0), toy, cell=0.08)
    np.testing.assert_allclose(law["occupancy"], 1 / 8, atol=1e-3)
    assert law["cell"] == 0.08
    data_log_p = toy.log_density(toy.sample(200_000, torch.Generator().manual_seed(0))).mean().item()
    assert data_log_p - 0.06 < law["log_density"] < data_log_p
    assert law["leak"] < 1e-9
    assert law["law"].shape == (68, 68) and law["law"].sum() == pytest.approx(1.0)


def test_a_coarse_cell_and_a_state_with_hidden_units_each_get_one_error():
    toy = TOYS["mog"]
    with pytest.raises(stationary.GridError, match=r"cell of side 0\.2 is too coarse for noise level 0\.05"):
        stationary.toy_stationary(_ExactLangevin(toy, 0.05), GaussianOperator(alpha=1.0), toy, cell=0.2)
    slow = RecurrentNetwork(n_visible=2, n_hidden=4, phi="tanh")
    with pytest.raises(stationary.GridError, match="the network has 6 units"):
        stationary.toy_stationary(slow, GaussianOperator(alpha=0.5), toy)


def test_a_mean_outside_the_box_keeps_its_state_and_counts_as_leak():
    centres = stationary.cell_centres(0.0, 1.0, 4)
    mean = centres.copy()
    mean[0] = [50.0, 50.0]
    transition, leak = stationary.grid_transition(mean, np.array([0.3, 0.3]), 0.0, 1.0, 4)
    assert transition[0, 0] == 1.0 and leak[0] == 1.0
    assert 0 < leak[5] < 1


FAST_STUDY = """\
name: tiny_fast
seed: 3
data: {name: mog, n_train: 2000, n_test: 300}
network: {kind: recurrent, n_hidden: 16, hidden_units: fast, phi_visible: identity}
operator: {family: gaussian, alpha: 0.5, sigma: 0.1, learn_sigma: false}
walkback: {n_extra_max: 2}
training: {steps: 60, batch_size: 32, learning_rate: 1.0e-2, learning: local}
logging: {metrics_every: 5, weights_every: 20, checkpoint_every: 10, eval_every: 30}
evaluation: {n_samples: 300, n_bound: 100}
"""


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    from asymnet import run

    folder = tmp_path_factory.mktemp("fast")
    (folder / "tiny.yaml").write_text(FAST_STUDY)
    assert run.main([str(folder / "tiny.yaml"), "--out", str(folder / "run"), "--quiet"]) == 0
    return folder / "run"


def test_long_run_stores_the_grid_law_and_the_chain_started_from_it_stays_there(fast_run):
    """asymnet.sample writes the grid's law of the trained operator. Then, with the readout fitted to the
    mixture's Langevin step: 20,000 chains drawn from the grid's law (a cell by its mass, then uniformly inside
    it) and run 200 T = 1 steps of the network itself keep its mode weights to within 4 binomial standard
    deviations plus 0.005 (the grid's own error): the law is the chain's."""
    from asymnet import langevin, walkback
    from asymnet.runlog import open_log
    from asymnet.model import load_run

    measure_long_run(fast_run, 30, n_chains=60, seed=1)
    trained = load_run(fast_run)
    net, op, toy = trained.model.network, trained.model.operator, trained.data.toy
    with open_log(fast_run) as log:
        law = log["samples/stationary/law"][()]
        occupancy = log["samples/stationary/occupancy"][()]
        lo, hi, cell = log["samples/stationary/box_and_cell"][()]
        tv = float(log["eval/stationary_occupancy_tv"][()])
        assert "stationary law on a" in log.attrs["long_run"]
    assert law.sum() == pytest.approx(1.0) and cell == pytest.approx(0.1)
    assert tv == pytest.approx(0.5 * np.abs(occupancy - toy.reference_occupancy().numpy()).sum(), rel=1e-6)
    from matplotlib.image import imread

    from asymnet import plots

    with_law = imread(fast_run / "long_run.png").shape[1]  # long_run.png: one panel more, 4 inches wide
    plain = fast_run / "plain.h5"
    shutil.copy(fast_run / "log.h5", plain)
    with h5py.File(plain, "r+") as log:
        del log["samples/stationary"]
    assert with_law / imread(plots.plot_long_run(plain, fast_run / "plain.png")).shape[1] == pytest.approx(5 / 4)
    again = stationary.toy_stationary(net, op, toy)
    np.testing.assert_allclose(again["occupancy"], occupancy, rtol=1e-6, atol=1e-9)
    gen = torch.Generator().manual_seed(0)
    # 60 training steps leave most of the law on one mode: fit the readout to the Langevin step instead, so that
    # the law spreads over the modes and the check below weighs all of them
    points = toy.sample(4000, gen) + 0.3 * torch.randn(4000, 2, generator=gen, dtype=torch.float64)
    langevin.fit_readout_to_langevin(net, op, toy, points.float())
    fitted = stationary.toy_stationary(net, op, toy)
    law, occupancy, (lo, hi), cell = fitted["law"], fitted["occupancy"], fitted["box"], fitted["cell"]
    assert occupancy.min() > 0.02
    n = law.shape[0]
    picked = torch.multinomial(torch.from_numpy(law.ravel()), 20000, replacement=True, generator=gen)
    corner = lo + torch.stack([picked // n, picked % n], 1).double() * cell
    start = (corner + cell * torch.rand(20000, 2, generator=gen, dtype=torch.float64)).float()
    with torch.no_grad():
        end = walkback.run_chain(net, op, start, 200, gen)
    moved = toy.occupancy(end.double()).numpy()
    allowed = 4 * np.sqrt(occupancy * (1 - occupancy) / 20000) + 0.005
    assert (np.abs(moved - occupancy) < allowed).all(), (moved, occupancy)
    assert np.abs(moved - occupancy).max() > 0  # the chains did move


def test_too_fine_a_grid_is_refused_and_a_long_run_keeps_its_figures_without_the_law(fast_run, monkeypatch):
    toy = TOYS["mog"]
    with pytest.raises(stationary.GridError, match=r"needs 108 x 108 cells, above 50 x 50"):
        stationary.toy_stationary(_ExactLangevin(toy, 0.05), GaussianOperator(alpha=1.0), toy, max_side=50)
    from asymnet import long_run
    from asymnet.runlog import open_log

    def refuse(trained):
        raise stationary.GridError("a grid too fine")

    monkeypatch.setattr(long_run, "toy_stationary_law", refuse)
    curves = measure_long_run(fast_run, 10, n_chains=40, seed=4)
    with open_log(fast_run) as log:
        assert log.attrs["long_run"].endswith("; no stationary law: a grid too fine")
        assert "samples/stationary" not in log and "stationary_occupancy_tv" not in log["eval"]  # the earlier law's
        assert float(log["eval/long_run_mmd"][()]) == pytest.approx(curves["mmd"][-1])

"""The measurements made after training: long runs (asymnet.sample), likelihood and detailed balance
(asymnet.measure), inpainting (asymnet.inpaint), and what inspect prints of them."""

import hashlib
import json
import math

import h5py
import numpy as np
import pytest
import torch

from asymnet import measure, run, walkback
from asymnet.data.toy import TOYS
from asymnet.metrics import likelihood, quality
from asymnet.networks.recurrent import RecurrentNetwork
from asymnet.operators import GaussianOperator
from asymnet.runlog import LogError, add_results, open_log
from tests.conftest import SHARED, copy_run, needs_shared, run_cli, run_main
from asymnet.errors import RunError
from asymnet.evaluate import chunks, generate_visible
from asymnet.inpainting import mask_of, measure_inpainting
from asymnet.long_run import log_spaced_steps, long_run, measure_long_run
from asymnet.model import eval_temperatures, generation_temperatures, load_run


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def toy_run(tiny_run, tmp_path_factory):
    """This module's copy of the session's tiny run: its tests add measurements to it, in file order."""
    return copy_run(tiny_run, tmp_path_factory.mktemp("toy") / "run")


def test_log_spaced_steps_are_1_3_per_decade_and_end_at_the_total():
    assert log_spaced_steps(100000) == [10, 30, 100, 300, 1000, 3000, 10000, 30000, 100000]
    assert log_spaced_steps(500) == [10, 30, 100, 300, 500]
    assert log_spaced_steps(7) == [7]
    with pytest.raises(RunError, match="positive integer"):
        log_spaced_steps(0)


def test_masks_cover_the_named_regions():
    bottom = mask_of("bottom_half").reshape(28, 28)
    assert bottom[14:].all() and not bottom[:14].any()
    assert (mask_of("top_half") == ~mask_of("bottom_half")).all()
    assert (mask_of("left_half") == ~mask_of("right_half")).all()
    centre = mask_of("centre_square").reshape(28, 28)
    assert centre.sum() == 14 * 14 and centre[7:21, 7:21].all()
    with pytest.raises(RunError, match="unknown mask 'bottom'; choose one of bottom_half"):
        mask_of("bottom")


def test_long_run_stores_log_spaced_samples_whose_recomputed_mmd_matches_the_curve(toy_run):
    before = open_log(toy_run)
    earlier_evals = {name: float(before["eval"][name][()]) for name in before["eval"]}
    before.close()
    curves = measure_long_run(toy_run, 300, n_chains=100, seed=4)
    trained = load_run(toy_run)
    reference = trained.data.test[:100].to(torch.float64)
    with open_log(toy_run) as log:
        assert list(log["samples/long_run/steps"][()]) == [10, 30, 100, 300]
        stored = torch.from_numpy(log["samples/long_run/step_0000300"][()])
        assert stored.shape == (100, 2)
        assert np.allclose(log["samples/long_run/mmd"][()], curves["mmd"])
        assert float(log["eval/long_run_mmd"][()]) == pytest.approx(curves["mmd"][-1])
        assert float(log["eval/long_run_steps"][()]) == 300
        assert "100 chains, 300 T = 1 steps" in log.attrs["long_run"]
        for name, value in earlier_evals.items():  # measuring adds, never changes what training wrote
            assert float(log["eval"][name][()]) == value or (math.isnan(value) and math.isnan(log["eval"][name][()]))
    assert quality.mmd2_rbf(stored, reference) == pytest.approx(curves["mmd"][-1], rel=1e-5)
    toy = trained.data.toy
    assert quality.total_variation(toy.occupancy(stored.to(torch.float64)), toy.reference_occupancy()) == \
        pytest.approx(curves["occupancy_tv"][-1], rel=1e-12)
    with open_log(toy_run) as log:
        null_mmd = torch.from_numpy(log["samples/long_run_null/mmd"][()])
        null_tv = torch.from_numpy(log["samples/long_run_null/occupancy_tv"][()])
        p_values = log["samples/long_run/mmd_p_value"][()]
        baselines = [float(log[f"eval/long_run_{name}_baseline"][()]) for name in ("mmd", "occupancy_tv")]
        assert "toy baselines and p-values from 20 exact data draws" in log.attrs["long_run"]
    # the baselines are the means of quality.NULL_DRAWS exact draws from the data's law, scored as the chains
    # are (the log stores samples as float32, hence rel=1e-6 on the stored draws)
    generator = torch.Generator().manual_seed(4 + 1)
    draws = [toy.sample(100, generator).to(torch.float64) for _ in range(quality.NULL_DRAWS)]
    exact_mmd = torch.tensor([quality.mmd2_rbf(d, reference) for d in draws], dtype=torch.float64)
    assert null_mmd.tolist() == pytest.approx(exact_mmd.tolist(), rel=1e-6)
    assert null_tv.tolist() == pytest.approx([quality.total_variation(toy.occupancy(d), toy.reference_occupancy())
                                              for d in draws], rel=1e-6)
    assert baselines == pytest.approx([exact_mmd.mean().item(), null_tv.double().mean().item()], rel=1e-6)
    with open_log(toy_run) as log:
        stderr = float(log["eval/long_run_mmd_baseline_stderr"][()])
    assert stderr == pytest.approx(exact_mmd.std().item() / math.sqrt(quality.NULL_DRAWS), rel=1e-6)
    assert 0.0 < baselines[1] < 0.5
    assert p_values.tolist() == pytest.approx([(1 + (exact_mmd >= value).sum().item()) / 21 for value in curves["mmd"]],
                                              rel=1e-6)
    assert curves["mmd_p_value"] == pytest.approx(p_values.tolist(), rel=1e-6)
    assert (toy_run / "long_run.png").stat().st_size > 0


def test_rescoring_a_stored_long_run_recomputes_its_figures_and_keeps_its_states(toy_run, tmp_path, capsys):
    import shutil

    measure_long_run(toy_run, 300, n_chains=20, seed=2)
    curves = measure_long_run(toy_run, 100, n_chains=60, seed=2)
    with open_log(toy_run) as log:  # the longer run before it leaves no state at a step this one did not reach
        assert sorted(log["samples/long_run"]) == sorted(
            ["steps", "step_0000010", "step_0000030", "step_0000100", *curves])
        assert all(len(values) == 20 for values in log["samples/long_run_null"].values())
        states = log["samples/long_run/step_0000100"][()]
        evals = {name: float(log["eval"][name][()]) for name in log["eval"] if name.startswith("long_run")}
    with h5py.File(toy_run / "log.h5", "r+") as log:  # an older log: one data draw as its baseline, no p-value
        log["eval/long_run_mmd_baseline"][()] = 1.0
        mmd_baseline = float(log["eval/mmd_baseline"][()])
        mmd_p_value = float(log["eval/mmd_p_value"][()])
        log["eval/mmd_baseline"][()] = 1.0
        del log["eval/mmd_p_value"]
        del log["samples/long_run/mmd_p_value"], log["samples/long_run_null"]
    result = run_main(capsys, toy_run, "--rescore", "--seed", "2", module="asymnet.sample")
    assert result.returncode == 0, result.stderr
    assert f"long_run_mmd_baseline  {evals['long_run_mmd_baseline']:.6g}" in result.stdout
    with open_log(toy_run) as log:
        assert (log["samples/long_run/step_0000100"][()] == states).all()
        assert log["samples/long_run/mmd_p_value"][()].tolist() == pytest.approx(curves["mmd_p_value"], rel=1e-6)
        assert {name: float(log["eval"][name][()]) for name in evals} == pytest.approx(evals, rel=1e-6)
        assert float(log["eval/mmd_baseline"][()]) == mmd_baseline  # the end of training's, as training wrote it
        assert float(log["eval/mmd_p_value"][()]) == mmd_p_value and 1 / 21 <= mmd_p_value <= 1
        assert log.attrs["long_run"].startswith("60 chains, 100 T = 1 steps after cooling from p*, seed 2")
        assert "; rescored; toy baselines and p-values from 20 exact data draws" in log.attrs["long_run"]
    bare = tmp_path / "bare"
    shutil.copytree(toy_run, bare)
    with h5py.File(bare / "log.h5", "r+") as log:
        del log["samples/long_run"]
    digest = _digest(bare / "log.h5")
    result = run_main(capsys, bare, "--rescore", module="asymnet.sample")
    assert result.returncode == 2
    assert f"asymnet.sample: error: {bare} has no long run to rescore; run one first: python -m asymnet.sample" \
        in result.stderr
    assert _digest(bare / "log.h5") == digest


def test_the_mmd_p_value_of_an_exact_sampler_is_uniform_and_a_wrong_one_is_the_smallest():
    """Monte-Carlo test: an exact sample is exchangeable with the null's draws, so P(p <= k / 20) = k / 20 for
    19 draws (here k = 2: 0.1, within 3 binomial standard deviations over 400 trials); a sample from a
    shifted law scores worse than every exact draw, so its p-value is 1 / 20."""
    generator = torch.Generator().manual_seed(0)
    draw = lambda: torch.randn(40, 2, generator=generator, dtype=torch.float64)  # noqa: E731
    exact, shifted = [], []
    for _ in range(400):
        reference = draw()
        null = quality.mmd2_null([draw() for _ in range(19)], reference)
        exact.append(quality.null_p_value(quality.mmd2_rbf(draw(), reference), null))
        shifted.append(quality.null_p_value(quality.mmd2_rbf(draw() + 1.5, reference), null))
    share = sum(p <= 0.1 + 1e-12 for p in exact) / 400
    assert abs(share - 0.1) < 3 * math.sqrt(0.1 * 0.9 / 400)
    assert set(p for p in exact) <= {k / 20 for k in range(1, 21)}
    assert shifted == [1 / 20] * 400
    assert quality.null_p_value(2.0, torch.tensor([1.0, 2.0, 3.0])) == 3 / 4  # ties count against the sample
    with pytest.raises(ValueError, match="mmd2_null needs at least one draw"):
        quality.mmd2_null([], reference)


def test_regions_are_the_nearest_mode_or_the_tenth_of_the_curve():
    from asymnet.data.toy import TOYS

    mog, spiral = TOYS["mog"], TOYS["spiral"]
    centres = torch.tensor(mog.centres, dtype=torch.float64)
    assert mog.regions(centres).tolist() == list(range(8))
    assert mog.regions(centres * 1.1 + 0.01).tolist() == list(range(8))  # off the centre, same cell
    u = (torch.arange(10, dtype=torch.float64) + 0.5) / 10  # the middle of each tenth of the spiral
    assert spiral.regions(spiral.curve(u)).tolist() == list(range(10))
    assert spiral.regions(spiral.curve(u), n_bins=5).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    # The ring is symmetric: every mode holds 1/8 of the data (Monte Carlo s.e. 1.0e-3 at 100,000 draws).
    assert torch.allclose(mog.reference_occupancy(), torch.full((8,), 1 / 8, dtype=torch.float64), atol=5e-3)
    assert spiral.reference_occupancy().sum().item() == pytest.approx(1.0, abs=1e-12)
    # All chains in one mode: TV is 1 minus that mode's weight.
    piled = centres[[3]].repeat(50, 1)
    reference = mog.reference_occupancy()
    assert quality.total_variation(mog.occupancy(piled), reference) == pytest.approx(1 - reference[3].item(), abs=1e-12)
    assert quality.total_variation(reference, reference) == 0.0
    with pytest.raises(ValueError, match="same regions, got shapes \\(8,\\) and \\(10,\\)"):
        quality.total_variation(reference, spiral.reference_occupancy())


def test_long_run_is_the_cooling_chain_continued_at_T1(toy_run):
    trained = load_run(toy_run)
    m = trained.model
    temps = eval_temperatures(m, trained.study)
    gen = torch.Generator().manual_seed(11)
    _, samples, _ = long_run(trained, 30, 8, gen)
    gen = torch.Generator().manual_seed(11)
    s = walkback.generate(m.network, m.operator, m.p_star, temps, 8, gen)
    s = walkback.run_chain(m.network, m.operator, s, 10, gen)
    assert torch.equal(samples[10], s[:, :2])
    s = walkback.run_chain(m.network, m.operator, s, 20, gen)
    assert torch.equal(samples[30], s[:, :2])


def test_with_final_mean_the_long_run_reads_each_chains_last_mean_and_runs_the_same_chain(toy_run):
    """evaluation.final_mean: each stop stores the mean of the chain's last step, as the cooling's last step
    reads its image, and the chain's draws are those of the plain long run (the same random numbers)."""
    import dataclasses

    from asymnet.study import replace_in

    trained = load_run(toy_run)
    m = trained.model
    reading = dataclasses.replace(trained, study=replace_in(trained.study, "evaluation.final_mean", True))
    _, means, _ = long_run(reading, 30, 8, torch.Generator().manual_seed(11))
    gen = torch.Generator().manual_seed(11)
    s = walkback.generate(m.network, m.operator, m.p_star, eval_temperatures(m, trained.study), 8, gen)
    for stop, steps in ((10, 9), (30, 19)):
        s = walkback.run_chain(m.network, m.operator, s, steps, gen)
        drive = m.network(s, 1.0)
        assert torch.equal(means[stop], m.operator.mean(s, drive)[:, :2])
        s = m.operator.sample(s, drive, 1.0, gen)
    _, draws, _ = long_run(trained, 30, 8, torch.Generator().manual_seed(11))  # the fused sampler: float rounding
    assert torch.allclose(draws[30], s[:, :2], rtol=0, atol=1e-5)
    assert (draws[30] - means[30]).abs().max() > 1e-3  # a draw is not its step's mean


def test_evaluation_rows_run_in_chunks_of_250_on_a_cpu_and_whole_on_a_gpu():
    assert chunks(1000, "cpu") == [250, 250, 250, 250]
    assert chunks(600, torch.device("cpu")) == [250, 250, 100]
    assert chunks(40, "cpu") == [40]
    assert chunks(600, "cuda") == [600]


def test_generation_appends_extra_T1_steps_and_can_end_on_the_mean(toy_run):
    """evaluation.extra_cooling_steps puts that many T = 1 steps at the cold end of the generation schedule
    (the bound's schedule is unchanged); with evaluation.final_mean the image is the last step's mean."""
    from asymnet.study import replace_in

    trained = load_run(toy_run)
    m, study = trained.model, trained.study
    changed = replace_in(study, "evaluation", {"extra_cooling_steps": 3, "final_mean": True})
    temps = generation_temperatures(m, changed)
    assert temps == [1.0] * 3 + eval_temperatures(m, study)
    assert generation_temperatures(m, study) == eval_temperatures(m, study)
    got = generate_visible(m, changed, trained.data, trained.device)
    gen = torch.Generator().manual_seed(study.seed + 7919)
    rows = chunks(study.evaluation.n_samples, trained.device)  # drawn one after the other from one generator
    expected = torch.cat([walkback.generate(m.network, m.operator, m.p_star, temps, n, gen, final_mean=True)[:, :2]
                          for n in rows])
    assert torch.equal(got, expected)
    assert not torch.equal(got, generate_visible(m, study, trained.data, trained.device))


def test_measure_writes_bound_below_importance_estimate_and_ep_figures(toy_run):
    figures = measure.measure(toy_run, n_examples=40, n_trajectories=20, ep_chains=16, ep_steps=200, ep_burn_in=50)
    assert figures["test_bound_nats"] <= figures["test_is_nats"]
    assert math.isfinite(figures["ep"]) and figures["ep_stderr"] > 0
    assert "langevin_drift_slope" not in figures  # slow hidden units: the visible drift depends on them
    with open_log(toy_run) as log:
        for name, value in figures.items():
            stored = float(log["eval"][name][()])
            assert stored == value or (math.isnan(stored) and math.isnan(value))
        assert "log p(s'|s) - log p(s|s')" in log.attrs["ep_convention"]


@pytest.mark.parametrize("name", ["mog", "spiral"])
def test_toy_score_is_the_gradient_of_its_log_density(name):
    toy = TOYS[name]
    x = toy.sample(200, torch.Generator().manual_seed(0)) * 1.3  # data and the space around it
    x.requires_grad_(True)
    (autograd,) = torch.autograd.grad(toy.log_density(x).sum(), x)
    assert torch.allclose(toy.score(x.detach()), autograd, rtol=1e-9, atol=1e-9)


def test_drift_agreement_of_a_scaled_drift_plus_an_orthogonal_error():
    exact = torch.randn(500, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    other = torch.randn(500, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    orthogonal = other - (other * exact).sum() / exact.pow(2).sum() * exact  # <orthogonal, exact> = 0
    figures = quality.drift_agreement(0.7 * exact + orthogonal, exact)
    ratio = orthogonal.pow(2).sum() / exact.pow(2).sum()
    assert figures["drift_slope"] == pytest.approx(0.7, rel=1e-12)
    assert figures["drift_relative_error"] == pytest.approx(math.sqrt(0.3**2 + ratio), rel=1e-12)


def test_langevin_drift_compares_the_T1_mean_with_the_exact_langevin_step(tmp_path):
    """A fast-hidden-unit toy network: the figures equal a recomputation whose exact drift comes from
    autograd of the toy's log-density, and whose learned drift is operator.mean(x) - x."""
    from types import SimpleNamespace

    network = RecurrentNetwork(2, 16, phi="tanh", phi_visible="identity", hidden_units="fast", sigma_init=0.07,
                               generator=torch.Generator().manual_seed(3), temperature_input=True).double()
    operator = GaussianOperator(0.5, "sqrt_T")
    data = SimpleNamespace(toy=TOYS["mog"], n_visible=2,
                           test=TOYS["mog"].sample(300, torch.Generator().manual_seed(4)))
    trained = SimpleNamespace(data=data, model=SimpleNamespace(network=network, operator=operator),
                              device=torch.device("cpu"))
    figures = measure.langevin_drift(trained, 300)

    x = data.test.clone().requires_grad_(True)
    (score,) = torch.autograd.grad(TOYS["mog"].log_density(x).sum(), x)
    with torch.no_grad():
        drive = network(data.test, 1.0)
        drift = operator.mean(data.test, drive) - data.test
        exact = 0.5 * operator.std(drive, 1.0).pow(2) * score
    slope = (drift * exact).sum() / exact.pow(2).sum()
    assert figures["langevin_drift_slope"] == pytest.approx(slope.item(), rel=1e-9)
    assert figures["langevin_drift_relative_error"] == pytest.approx(
        ((drift - exact).norm() / exact.norm()).item(), rel=1e-9)


def test_training_logs_ep_at_every_evaluation(toy_run):
    with open_log(toy_run) as log:
        rows = log["metrics/ep"][()]
        steps = rows[:, 0][np.isfinite(rows[:, 0]) & (rows[:, 0] > 0)]
    assert list(steps) == [30, 60]  # eval_every 30 over 60 steps


def test_visible_likelihood_integrates_hidden_units_out_exactly_on_a_linear_network():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    net = RecurrentNetwork(2, 2, phi="identity", sigma_init=0.4, learn_sigma=False, generator=gen,
                           temperature_input=False).double()
    with torch.no_grad():
        net.W.copy_(0.4 * torch.randn(4, 4, generator=gen, dtype=torch.float64))
        net.b.copy_(0.2 * torch.randn(4, generator=gen, dtype=torch.float64))
    op = GaussianOperator(0.5, "sqrt_T")
    temps = [1.0, 1.0, 2.0, 4.0]
    p_star = walkback.PStar(4).double()
    heated = walkback.heating_trajectory(net, op, torch.randn(20000, 4, generator=gen, dtype=torch.float64), temps, gen)
    p_star.update(heated[-1], 1.0)
    mean, cov = likelihood.exact_marginal(net, op, p_star, temps)
    x = walkback.generate(net, op, p_star, temps, 50, gen)[:, :2]
    exact = likelihood.gaussian_log_density(x, mean[:2], cov[:2, :2])
    few = likelihood.visible_importance_estimate(net, op, p_star, x, temps, 10, gen, settle_steps=3)
    many = likelihood.visible_importance_estimate(net, op, p_star, x, temps, 2000, gen, settle_steps=3)
    assert (few.variational_bound <= few.log_likelihood + 1e-12).all()
    gap_few = (exact - few.log_likelihood).mean().item()
    gap_many = (exact - many.log_likelihood).mean().item()
    # IS is a stochastic lower bound that tightens with M; at M = 2000 within 0.1 nats of the truth
    assert gap_many < gap_few
    assert -3 * many.standard_error.mean().item() - 0.02 < gap_many < 0.1


def test_a_foreign_hdf5_file_is_refused_and_left_alone(tmp_path):
    folder = tmp_path / "foreign"
    folder.mkdir()
    with h5py.File(folder / "log.h5", "w") as f:
        f["x"] = np.arange(3)
    digest = _digest(folder / "log.h5")
    for module, extra in [("asymnet.sample", ["--steps", "10"]), ("asymnet.measure", []), ("asymnet.inpaint", [])]:
        result = run_cli(folder, *extra, module=module)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "not an asymnet run log" in lines[0], result.stderr
    assert _digest(folder / "log.h5") == digest


def test_an_unfinished_run_is_refused_and_left_alone(toy_run, tmp_path, capsys):
    import shutil

    folder = tmp_path / "unfinished"
    shutil.copytree(toy_run, folder)
    with h5py.File(folder / "log.h5", "r+") as f:
        f["status"][()] = np.array(b"running", dtype=f["status"].dtype)
    digest = _digest(folder / "log.h5")
    result = run_main(capsys, folder, "--steps", "10", module="asymnet.sample")
    assert result.returncode == 2
    assert "has no finished model: its run's status is 'running'" in result.stderr
    assert f"--resume {folder}" in result.stderr
    with pytest.raises(LogError, match="not 'finished'"):
        add_results(folder / "log.h5", evals={"x": 1.0})
    assert _digest(folder / "log.h5") == digest
    assert not (folder / "log.h5.tmp").exists()


@pytest.mark.parametrize("args, phrase", [
    (["--steps", "0"], "--steps must be a positive number"),
    (["--steps", "-5"], "--steps must be a positive number"),
    (["--steps", "10", "--chains", "1"], "--chains must be at least 2"),
    (["--steps", "10", "--null-draws", "0"], "--null-draws must be a positive number of exact data draws"),
])
def test_a_non_positive_step_count_is_one_error_and_nothing_changes(toy_run, capsys, args, phrase):
    digest = _digest(toy_run / "log.h5")
    result = run_main(capsys, toy_run, *args, module="asymnet.sample")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"asymnet.sample: error: {result.stderr.strip()[len('asymnet.sample: error: '):]}"]
    assert phrase in result.stderr
    assert _digest(toy_run / "log.h5") == digest


def test_inpainting_refuses_an_unknown_mask_and_a_toy_run(toy_run, capsys):
    digest = _digest(toy_run / "log.h5")
    result = run_main(capsys, toy_run, "--mask", "diagonal", module="asymnet.inpaint")
    assert result.returncode == 2 and "unknown mask 'diagonal'; choose one of bottom_half, top_half" in result.stderr
    result = run_main(capsys, toy_run, module="asymnet.inpaint")
    assert result.returncode == 2 and "not on images" in result.stderr
    assert _digest(toy_run / "log.h5") == digest


def test_inspect_json_holds_the_measured_figures(toy_run, capsys):
    measure_long_run(toy_run, 20, n_chains=50)
    result = run_main(capsys, toy_run, "--json", module="asymnet.inspect")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "finished"
    assert summary["evals"]["long_run_steps"] == 20
    assert "long_run_mmd" in summary["evals"] and "mmd" in summary["evals"]
    text = run_main(capsys, toy_run, module="asymnet.inspect").stdout
    assert "long_run_mmd" in text


@needs_shared
def test_inpainting_keeps_the_known_pixels_and_scores_the_completions(tmp_path, monkeypatch):
    from asymnet.classifier import train_classifier
    from asymnet.data import load_dataset

    data = load_dataset("mnist", 3000, 200, str(SHARED), torch.Generator().manual_seed(0))
    classifier = train_classifier(data.train.float() / 255.0, data.labels_train, epochs=1)
    from asymnet import inpainting

    for module in (run, inpainting):  # the training command's figures and the inpainting's agreement
        monkeypatch.setattr(module, "mnist_classifier", lambda *args: classifier)
    study = tmp_path / "mnist.yaml"
    study.write_text("name: m\ndata: {name: mnist, n_train: 2000, n_test: 200}\n"
                     "network: {kind: recurrent, n_hidden: 16}\noperator: {sigma: 0.05}\n"
                     "training: {steps: 4, batch_size: 20}\n"
                     "logging: {checkpoint_every: 2, eval_every: 2}\n"
                     "evaluation: {n_samples: 40, n_bound: 10, ep_chains: 4, ep_steps: 10, ep_burn_in: 2}\n")
    assert run.main([str(study), "--out", str(tmp_path / "run"), "--quiet", "--data", str(SHARED)]) == 0
    figures = measure_inpainting(tmp_path / "run", "bottom_half", 30, str(SHARED), seed=2)
    assert 0 <= figures["inpaint_bottom_half_agreement"] <= 1
    assert 0 <= figures["inpaint_bottom_half_noise_agreement"] <= 1
    trained = load_run(tmp_path / "run", str(SHARED))
    originals = trained.data.batch(trained.data.test[:30], torch.Generator().manual_seed(2), torch.float32)
    with open_log(tmp_path / "run") as log:
        completions = torch.from_numpy(log["samples/inpaint/bottom_half"][()])
        assert float(log["eval/inpaint_bottom_half_agreement"][()]) == figures["inpaint_bottom_half_agreement"]
    known = ~mask_of("bottom_half")
    assert torch.equal(completions[:, known], originals[:, known])
    assert not torch.equal(completions[:, ~known], originals[:, ~known])
    assert (tmp_path / "run" / "inpaint_bottom_half.png").stat().st_size > 0


def test_the_analysis_notebook_runs_on_a_fresh_run(toy_run):
    import nbclient
    import nbformat

    from tests.conftest import REPO

    notebook = nbformat.read(REPO / "studies" / "notebooks" / "analyse_run.ipynb", as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")  # none committed
    measure.measure(toy_run, n_examples=10, n_trajectories=4, ep_chains=4, ep_steps=20, ep_burn_in=5)
    measure_long_run(toy_run, 30, n_chains=50)
    import os

    os.environ["ASYMNET_RUN"] = str(toy_run)
    try:
        nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                                resources={"metadata": {"path": str(REPO)}}).execute()
    finally:
        del os.environ["ASYMNET_RUN"]
    text = "".join(output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", []))
    assert "finished" in text and "final EP" in text
    images = sum("image/png" in output.get("data", {}) for cell in notebook.cells for output in cell.get("outputs", []))
    assert images >= 3  # symmetry drift, EP over training, samples, long run


def test_the_studys_long_run_runs_on_long_run_chains_chains(tiny_study, tmp_path, capsys):
    result = run_main(capsys, tiny_study, "--out", tmp_path / "run", "--quiet", "--set", "training.steps=10",
                      "--set", "evaluation.long_run_steps=20", "--set", "evaluation.long_run_chains=30")
    assert result.returncode == 0, result.stderr
    with open_log(tmp_path / "run") as log:
        assert log.attrs["long_run"].startswith("30 chains, 20 T = 1 steps")
        assert log["samples/long_run/step_0000020"].shape == (30, 2)
    result = run_main(capsys, tiny_study, "--out", tmp_path / "other", "--set", "evaluation.long_run_chains=1")
    assert result.returncode == 2 and "evaluation.long_run_chains = 1 gives the long run's quality figures one " \
                                      "sample" in result.stderr
    assert not (tmp_path / "other").exists()


@needs_shared
def test_an_image_long_run_scores_as_many_cooled_samples_as_it_has_chains(tmp_path, monkeypatch):
    from asymnet import long_run as long_run_module
    from asymnet.classifier import train_classifier
    from asymnet.data import load_dataset
    from asymnet.evaluate import ImageScorer

    data = load_dataset("mnist", 2000, 200, str(SHARED), torch.Generator().manual_seed(0))
    classifier = train_classifier(data.train.float() / 255.0, data.labels_train, epochs=1)
    for module in (run, long_run_module):
        monkeypatch.setattr(module, "mnist_classifier", lambda *args: classifier)
    study = tmp_path / "mnist.yaml"
    study.write_text("name: m\ndata: {name: mnist, n_train: 2000, n_test: 200}\n"
                     "network: {kind: recurrent, n_hidden: 16}\noperator: {sigma: 0.05}\n"
                     "training: {steps: 2, batch_size: 20}\nlogging: {checkpoint_every: 2, eval_every: 2}\n"
                     "evaluation: {n_samples: 40, n_bound: 10, ep_chains: 0}\n")
    assert run.main([str(study), "--out", str(tmp_path / "run"), "--quiet", "--data", str(SHARED)]) == 0
    measure_long_run(tmp_path / "run", 10, n_chains=25, data_dir=str(SHARED))
    trained = load_run(tmp_path / "run", str(SHARED))
    scorer = ImageScorer.build(classifier, trained.data, 25)  # the long run's scorer: the test images after 25
    with open_log(tmp_path / "run") as log:
        want = scorer.figures(torch.from_numpy(log["samples/final"][:25]))
        got = {name: float(log[f"eval/long_run_cooled_{name}"][()]) for name in want}
        assert "cooled reference: the first 25 of samples/final" in log.attrs["long_run"]
    assert got == pytest.approx(want, rel=1e-12)
    assert 0 < got["frechet_distance"] and 0 <= got["recall"] <= 1

"""The run command end to end: what it writes, every bad input, a kill and a resume, a live reader."""

import hashlib
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import torch

from asymnet.runlog import open_log, read_metric, read_summary, read_weights
from tests.conftest import REPO, TINY_STUDY, run_cli, run_main

# Most of these tests call the command's main in this process: an interpreter start costs more than the
# error it checks. The killed run and its resume, the live reader and the bad override and device go through
# ``python -m asymnet.run`` as a user types it.


def _digest(folder):
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _one_error_line(result, *phrases):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("asymnet.run: error: ")
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def test_a_run_writes_the_log_schema_checkpoint_and_figures(tiny_run):
    summary = read_summary(tiny_run)
    assert summary.status == "finished"
    assert summary.attrs["seed"] == 3 and summary.attrs["device"] == "cpu"
    assert summary.attrs["torch_version"] == torch.__version__
    assert "name: tiny" in summary.attrs["study_yaml"]
    steps, loss = read_metric(tiny_run / "log.h5", "loss")
    assert steps.tolist() == list(range(5, 61, 5)) and np.isfinite(loss).all()
    assert read_metric(tiny_run / "log.h5", "bound")[0].tolist() == [30, 60]
    snap_steps, snapshots = read_weights(tiny_run / "log.h5", "W")
    assert snap_steps.tolist() == [20, 40, 60] and snapshots.shape == (3, 8, 8)
    cos_steps, cosine = read_metric(tiny_run / "log.h5", "symmetry_cosine")
    W = snapshots[-1].astype(np.float64)
    assert cosine[-1] == pytest.approx((W * W.T).sum() / (W * W).sum(), rel=1e-5)
    for name in ("stdp_temporal", "stdp_equal_time"):
        assert (read_metric(tiny_run / "log.h5", name)[1] > 0).all()
    with open_log(tiny_run) as log:
        assert log["samples/final"].shape == (300, 2) and np.isfinite(log["samples/final"][()]).all()
        assert log["samples/data"].shape == (300, 2)
    for name in ("mmd", "mmd_baseline", "bound", "sample_log_density", "data_log_density"):
        assert np.isfinite(summary.evals[name])
    # the samples' rank among the exact draws whose mean is the baseline: (1 + #{draws >= mmd}) / 21
    from asymnet.evaluate import toy_mmd_null
    from asymnet.model import load_run

    trained = load_run(tiny_run)
    null = toy_mmd_null(trained.study, trained.data, trained.data.test[:300].to(torch.float64))
    assert summary.evals["mmd_baseline"] == pytest.approx(null.mean().item(), rel=1e-12)
    assert summary.evals["mmd_p_value"] == (1 + (null >= summary.evals["mmd"]).sum().item()) / 21
    with open_log(tiny_run) as log:
        window = log["samples/learning_window"][()]
    lags = window[:, 0]
    assert (window[(lags > 0) & (lags <= 3), 1] > 0).all() and (window[(lags > 0) & (lags <= 3), 2] < 0).all()
    for figure in ("curves.png", "symmetry.png", "samples.png", "learning_window.png", "stdp_terms.png"):
        assert (tiny_run / figure).stat().st_size > 1000
    state = torch.load(tiny_run / "checkpoint.pt", weights_only=True)
    assert state["step"] == 60
    assert np.allclose(state["network"]["W"].numpy(), snapshots[-1])


def test_inspect_prints_the_study_metrics_and_figures(tiny_run, capsys):
    result = run_main(capsys, tiny_run / "log.h5", module="asymnet.inspect")
    assert result.returncode == 0, result.stderr
    assert "finished" in result.stdout and "name: tiny" in result.stdout
    for name in ("loss", "symmetry_cosine", "mmd", "bound"):
        assert name in result.stdout


def test_an_existing_run_is_never_overwritten(tiny_run, tmp_path, capsys):
    study = tmp_path / "tiny.yaml"
    study.write_text(TINY_STUDY)
    before = _digest(tiny_run)
    result = run_main(capsys, study, "--out", tiny_run, "--quiet")
    _one_error_line(result, "already holds a run log", "--resume")
    assert _digest(tiny_run) == before


@pytest.mark.parametrize(
    "edit,phrases",
    [
        (("operator: {family: gaussian", "operator: {famly: gaussian"), ["unknown key 'operator.famly'", "family"]),
        (("steps: 60", "steps: sixty"), ["training.steps", "'sixty'", "not an integer"]),
        (("alpha: 0.5", "alpha: 1.5"), ["operator.alpha = 1.5", "0 < alpha <= 1"]),
        (("n_hidden: 6", "n_hidden: -2"), ["network.n_hidden = -2", "n_hidden >= 0"]),
        (("sigma: 0.1", "sigma: 0.0"), ["operator.sigma", "sigma > 0"]),
    ],
)
def test_a_bad_study_is_one_error_line_and_no_run_directory(tmp_path, capsys, edit, phrases):
    study = tmp_path / "bad.yaml"
    assert edit[0] in TINY_STUDY
    study.write_text(TINY_STUDY.replace(*edit))
    result = run_main(capsys, study, "--out", tmp_path / "run", "--quiet")
    _one_error_line(result, *phrases)
    assert result.returncode == 2
    assert not (tmp_path / "run").exists()


def test_a_bad_override_and_a_bad_device_are_one_error_line(tiny_study, tmp_path):
    result = run_cli(tiny_study, "--out", tmp_path / "run", "--set", "training.stpes=5", "--quiet")
    _one_error_line(result, "unknown key 'training.stpes'", "steps")
    if not torch.cuda.is_available():
        result = run_cli(tiny_study, "--out", tmp_path / "run", "--device", "cuda", "--quiet")
        _one_error_line(result, "--device cuda", "no CUDA device")
    assert not (tmp_path / "run").exists()


def test_a_missing_data_folder_is_one_error_line(tiny_study, tmp_path, capsys):
    result = run_main(capsys, tiny_study, "--out", tmp_path / "run", "--set", "data.name=mnist", "--data",
                      tmp_path / "nowhere", "--quiet")
    _one_error_line(result, str(tmp_path / "nowhere"), "t10k-images-idx3-ubyte")
    assert not (tmp_path / "run").exists()


def test_local_learning_with_an_mlp_is_refused(tiny_study, tmp_path, capsys):
    result = run_main(capsys, tiny_study, "--out", tmp_path / "run", "--set", "network.kind=mlp", "--quiet")
    _one_error_line(result, "learning: local needs network.kind: recurrent")
    assert not (tmp_path / "run").exists()


def test_divergence_stops_with_the_step_keeps_the_checkpoint_and_a_readable_log(tiny_study, tmp_path, capsys):
    result = run_main(capsys, tiny_study, "--out", tmp_path / "run", "--set", "network.init_scale=1e30",
                      "--set", "network.phi=identity", "--quiet")
    _one_error_line(result, "training diverged at step", "checkpoint")
    assert result.returncode == 1
    summary = read_summary(tmp_path / "run")
    assert summary.status.startswith("failed") and "step 1: the walkback loss became nan" in summary.status
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == 0
    assert all(torch.isfinite(v).all() for v in checkpoint["network"].values())


def _wait_for_rows(log_path, name, at_least, process, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, "the run ended before the test could kill it"
        if log_path.exists():
            try:
                steps, _ = read_metric(log_path, name)
                if len(steps) >= at_least:
                    return steps
            except Exception:
                pass
        time.sleep(0.05)
    raise AssertionError(f"no {at_least} rows of {name} within {timeout} s")


def _start(study, out, *extra):
    return subprocess.Popen([sys.executable, "-m", "asymnet.run", str(study), "--out", str(out), "--quiet", *extra],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.parametrize("optimizer", ["adam", "least_squares"])
def test_killed_run_opens_and_resumes_to_the_same_weights_bit_for_bit(tmp_path, capsys, optimizer):
    study = tmp_path / "tiny.yaml"  # least_squares: its moving averages must come back from the checkpoint too
    study.write_text(TINY_STUDY.replace("steps: 60", "steps: 150").replace("learning: local", f"learning: local, "
                                                                          f"optimizer: {optimizer}"))
    process = _start(study, tmp_path / "killed")
    _wait_for_rows(tmp_path / "killed" / "log.h5", "loss", 9, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    inspected = run_main(capsys, tmp_path / "killed", module="asymnet.inspect")
    assert inspected.returncode == 0 and "running" in inspected.stdout
    resumed = run_cli("--resume", tmp_path / "killed", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    straight = run_main(capsys, study, "--out", tmp_path / "straight", "--quiet")
    assert straight.returncode == 0, straight.stderr
    a = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    for name in b["network"]:
        assert torch.equal(a["network"][name], b["network"][name]), name
    assert torch.equal(a["p_star"]["first_moment"], b["p_star"]["first_moment"])
    steps_a, loss_a = read_metric(tmp_path / "killed" / "log.h5", "loss")
    steps_b, loss_b = read_metric(tmp_path / "straight" / "log.h5", "loss")
    assert np.array_equal(steps_a, steps_b) and np.array_equal(loss_a, loss_b)
    assert read_summary(tmp_path / "killed").status == "finished"
    with h5py.File(tmp_path / "killed" / "log.h5", "r") as plain:  # a clean close clears the SWMR flag
        assert plain["eval/mmd"][()] == pytest.approx(read_summary(tmp_path / "straight").evals["mmd"])


def test_a_reader_sees_the_metrics_grow_while_the_run_writes(tmp_path):
    study = tmp_path / "tiny.yaml"
    study.write_text(TINY_STUDY.replace("steps: 60", "steps: 400"))
    process = _start(study, tmp_path / "live")
    try:
        log_path = tmp_path / "live" / "log.h5"
        first = len(_wait_for_rows(log_path, "loss", 2, process))
        with open_log(log_path) as live:
            dataset = live["metrics/loss"]
            deadline = time.time() + 120
            while time.time() < deadline:
                dataset.refresh()
                if dataset.shape[0] > first + 3:
                    break
                time.sleep(0.05)
            assert dataset.shape[0] > first + 3
            assert live["status"][()].decode().startswith("running")
    finally:
        process.kill()
        process.wait()


def test_an_mlp_run_logs_the_symmetry_of_its_jacobian(tiny_study, tmp_path, capsys):
    result = run_main(capsys, tiny_study, "--out", tmp_path / "mlp", "--set", "network.kind=mlp", "--set",
                      "training.learning=autograd", "--set", "network.mlp_width=16", "--quiet")
    assert result.returncode == 0, result.stderr
    steps, cosine = read_metric(tmp_path / "mlp" / "log.h5", "symmetry_cosine")
    assert steps.tolist() == [20, 40, 60] and ((cosine > -1) & (cosine < 1)).all()
    with open_log(tmp_path / "mlp") as log:
        assert "W" not in log["weights"]


def test_the_cosine_schedule_decays_the_learning_rate_to_zero_as_a_function_of_the_step():
    from asymnet import run
    from asymnet.study import parse_study

    study = parse_study("training: {steps: 100, learning_rate: 0.01, lr_schedule: cosine}")
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    rates = []
    for step in (1, 51, 100):
        run.set_learning_rate(optimizer, study, step)
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates[0] == pytest.approx(0.01) and rates[1] == pytest.approx(0.005) and 0 < rates[2] < 1e-5
    constant = parse_study("training: {steps: 100, learning_rate: 0.01}")
    run.set_learning_rate(optimizer, constant, 100)
    assert optimizer.param_groups[0]["lr"] == 0.01

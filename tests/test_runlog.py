import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from asymnet.runlog import (
    LogError,
    LogLayout,
    RunLog,
    open_log,
    read_metric,
    read_summary,
    read_weights,
)

REPO = Path(__file__).resolve().parents[1]

LAYOUT = LogLayout(
    metrics=("loss", "cosine"),
    weights={"W": (3, 4)},
    samples={"final": (5, 2)},
    evals=("bits_per_dim", "nll"),
)
ATTRS = {
    "seed": 7,
    "device": "cpu",
    "torch_version": torch.__version__,
    "study_yaml": "data:\n  name: spiral\n",
}

# Appends one "loss" row per step, a (2, 3) snapshot of W every 5 steps, flushes, then prints
# the step: a printed step is on disk.
WRITER = """
import sys, time
import numpy as np
from asymnet.runlog import LogLayout, RunLog
layout = LogLayout(metrics=("loss",), weights={"W": (2, 3)}, samples={}, evals=())
log = RunLog.create(sys.argv[1], layout, {"seed": 0, "study_yaml": "x: 1"})
step = 0
while True:
    log.append("loss", step, 1.0 / (step + 1))
    if step % 5 == 0:
        log.snapshot("W", step, np.full((2, 3), step, dtype=np.float32))
    log.flush()
    print(step, flush=True)
    step += 1
    time.sleep(float(sys.argv[2]))
"""


def _start_writer(path, pause_s):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(pause_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_for_step(writer, step):
    """Read the writer's printed steps until ``step``; return the last one read."""
    for line in writer.stdout:
        if int(line) >= step:
            return int(line)
    raise AssertionError(f"writer exited early: {writer.stderr.read()}")


def _kill(writer):
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=10)
    writer.stdout.close()
    writer.stderr.close()


def test_written_values_read_back_exactly(tmp_path):
    path = tmp_path / "log.h5"
    W = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    samples = np.arange(10, dtype=np.float64).reshape(5, 2) / 3
    with RunLog.create(path, LAYOUT, ATTRS) as log:
        for step in range(0, 30, 3):
            log.append("loss", step, 1.0 / (step + 1))
        log.append("cosine", 4, torch.tensor(0.25))
        log.snapshot("W", 0, W)
        log.snapshot("W", 10, 2 * W.numpy())
        log.write_samples("final", samples)
        log.write_eval("bits_per_dim", 1.5)
        log.set_status("finished")

    steps, values = read_metric(path, "loss")
    np.testing.assert_array_equal(steps, np.arange(0, 30, 3))
    np.testing.assert_array_equal(values, 1.0 / (np.arange(0, 30, 3) + 1))
    assert steps.dtype == np.int64 and values.dtype == np.float64

    steps, snapshots = read_weights(tmp_path, "W")
    np.testing.assert_array_equal(steps, [0, 10])
    assert snapshots.shape == (2, 3, 4) and snapshots.dtype == np.float32
    np.testing.assert_array_equal(snapshots[0], W.numpy())
    np.testing.assert_array_equal(snapshots[1], 2 * W.numpy())

    summary = read_summary(path)
    assert summary.status == "finished"
    assert summary.metrics == {"loss": (27, 1.0 / 28), "cosine": (4, 0.25)}
    assert summary.evals == {"bits_per_dim": 1.5}
    assert {k: summary.attrs[k] for k in ATTRS} == ATTRS
    assert summary.attrs["asymnet_version"] == "0.1.0"

    with open_log(path) as f:
        np.testing.assert_array_equal(f["samples/final"][()], samples.astype(np.float32))
        assert np.isnan(f["eval/nll"][()])
    assert sorted(os.listdir(tmp_path)) == ["log.h5"]


def test_unwritten_series_and_evals_are_left_out_of_the_summary(tmp_path):
    RunLog.create(tmp_path / "log.h5", LAYOUT, ATTRS).close()
    summary = read_summary(tmp_path)
    assert summary.status == "running"
    assert summary.metrics == {} and summary.evals == {}
    with open_log(tmp_path) as f:
        assert np.isnan(f["samples/final"][()]).all()


def test_create_refuses_an_existing_path(tmp_path):
    path = tmp_path / "log.h5"
    path.write_text("keep me")
    with pytest.raises(LogError, match="a run log already exists at .*log.h5"):
        RunLog.create(path, LAYOUT, ATTRS)
    assert path.read_text() == "keep me"
    assert not (tmp_path / "log.h5.tmp").exists()


def test_create_rejects_names_with_a_slash_and_non_scalar_attrs(tmp_path):
    with pytest.raises(LogError, match="metric name 'a/b' is not a plain name"):
        RunLog.create(tmp_path / "log.h5", LogLayout(metrics=("a/b",)), {})
    with pytest.raises(LogError, match="root attribute 'study' is a dict"):
        RunLog.create(tmp_path / "log.h5", LAYOUT, {"study": {"a": 1}})
    assert os.listdir(tmp_path) == []


def test_writes_outside_the_layout_name_the_problem(tmp_path):
    with RunLog.create(tmp_path / "log.h5", LAYOUT, ATTRS) as log:
        with pytest.raises(LogError, match="metric 'lr' is not in the log; declare it"):
            log.append("lr", 0, 0.1)
        with pytest.raises(LogError, match=r"weights 'W' expect shape \(3, 4\), got \(4, 3\)"):
            log.snapshot("W", 0, np.zeros((4, 3)))
        with pytest.raises(LogError, match=r"samples 'final' expect shape \(5, 2\), got \(2, 5\)"):
            log.write_samples("final", np.zeros((2, 5)))


def test_an_exception_inside_the_context_marks_the_run_failed(tmp_path):
    with pytest.raises(RuntimeError):
        with RunLog.create(tmp_path / "log.h5", LAYOUT, ATTRS):
            raise RuntimeError("loss is nan")
    assert read_summary(tmp_path).status == "failed: RuntimeError: loss is nan"


def test_a_long_status_is_cut_to_fit_without_breaking_utf8(tmp_path):
    with RunLog.create(tmp_path / "log.h5", LAYOUT, ATTRS) as log:
        log.set_status("failed: " + "é" * 1000)
    status = read_summary(tmp_path).status
    assert status.startswith("failed: éé") and status.endswith("...")
    assert len(status.encode()) <= 512


def test_open_log_errors_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(LogError, match=r"^no run log at .*missing\.h5: the file does not exist"):
        open_log(tmp_path / "missing.h5")
    with pytest.raises(LogError, match=r"^no run log at .*log\.h5"):
        open_log(tmp_path)
    text = tmp_path / "x.h5"
    text.write_text("step,loss\n0,1.0\n")
    with pytest.raises(LogError, match=r"^.*x\.h5 is not an HDF5 file"):
        open_log(text)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["data"] = np.arange(3)
    with pytest.raises(LogError, match=r"^.*foreign\.h5 is an HDF5 file but not an asymnet"):
        open_log(foreign)
    with pytest.raises(LogError, match=r"foreign\.h5 is an HDF5 file but not"):
        read_summary(foreign)
    damaged = tmp_path / "damaged.h5"
    RunLog.create(damaged, LAYOUT, ATTRS).close()
    damaged.write_bytes(damaged.read_bytes()[:600])
    with pytest.raises(LogError, match=r"^.*damaged\.h5 is a damaged HDF5 file \(.*truncated"):
        open_log(damaged)


def test_killed_writer_leaves_a_log_that_opens_and_resumes(tmp_path):
    path = tmp_path / "log.h5"
    writer = _start_writer(path, 0.001)
    last_printed = _wait_for_step(writer, 40)
    _kill(writer)

    with pytest.raises(OSError, match="already open for write"):
        h5py.File(path, "r")  # the SWMR flag a killed writer leaves behind
    with open_log(path) as f:
        steps, _ = read_metric(f, "loss")
    n = len(steps)
    assert n - 1 >= last_printed
    np.testing.assert_array_equal(steps, np.arange(n))
    summary = read_summary(path)
    assert summary.status == "running"
    assert summary.metrics["loss"] == (n - 1, 1.0 / n)

    layout = LogLayout(metrics=("loss", "cosine"), weights={"W": (2, 3)}, evals=("nll",))
    log = RunLog.resume(path, layout, step=22)
    assert not (tmp_path / "log.h5.tmp").exists()
    steps, values = read_metric(path, "loss")  # readable while the resumed log is live
    np.testing.assert_array_equal(steps, np.arange(23))
    np.testing.assert_array_equal(values, 1.0 / (np.arange(23) + 1))
    for step in range(23, 26):
        log.append("loss", step, -1.0)
    log.append("cosine", 25, 0.5)
    log.snapshot("W", 25, np.ones((2, 3)))
    log.set_status("finished")
    log.close()

    with h5py.File(path, "r") as f:
        assert f.attrs["seed"] == 0 and f.attrs["study_yaml"] == "x: 1"
    steps, values = read_metric(path, "loss")
    np.testing.assert_array_equal(steps, np.arange(26))
    np.testing.assert_array_equal(values[23:], -1.0)
    steps, snapshots = read_weights(path, "W")
    np.testing.assert_array_equal(steps, [0, 5, 10, 15, 20, 25])
    np.testing.assert_array_equal(snapshots[:, 0, 0], [0, 5, 10, 15, 20, 1])
    summary = read_summary(path)
    assert summary.status == "finished"
    assert summary.metrics["cosine"] == (25, 0.5)
    assert sorted(os.listdir(tmp_path)) == ["log.h5"]


def test_a_failed_resume_leaves_the_old_log_intact(tmp_path):
    path = tmp_path / "log.h5"
    with RunLog.create(path, LAYOUT, ATTRS) as log:
        log.append("loss", 0, 3.0)
        log.set_status("finished")
    before = path.read_bytes()
    wrong = LogLayout(metrics=("loss",), weights={"W": (4, 4)})
    expected = r"weights 'W' have snapshots of shape \(3, 4\) but the layout declares \(4, 4\)"
    with pytest.raises(LogError, match=expected):
        RunLog.resume(path, wrong, step=0)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["log.h5"]


def test_a_reader_sees_a_live_log_grow(tmp_path):
    path = tmp_path / "log.h5"
    writer = _start_writer(path, 0.01)
    try:
        _wait_for_step(writer, 0)
        with open_log(path) as f:
            first = len(read_metric(f, "loss")[0])
            deadline = time.monotonic() + 10
            while len(read_metric(f, "loss")[0]) < first + 10:
                assert time.monotonic() < deadline, "the reader never saw new rows"
                time.sleep(0.02)
            steps, _ = read_metric(f, "loss")
            np.testing.assert_array_equal(steps, np.arange(len(steps)))
            weight_steps, _ = read_weights(f, "W")
            assert weight_steps[-1] >= 5
        assert read_summary(path).status == "running"
    finally:
        _kill(writer)

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

from asymnet.inspect import main
from asymnet.runlog import LogLayout, RunLog

REPO = Path(__file__).resolve().parents[1]
STUDY = "data:\n  name: spiral\noperator:\n  alpha: 0.5\n"


def _write_log(path, finish=True):
    layout = LogLayout(metrics=("loss", "weight_cosine"), evals=("bits_per_dim", "nll"))
    log = RunLog.create(path, layout, {"seed": 11, "device": "cpu", "study_yaml": STUDY})
    for step in range(100):
        log.append("loss", step, 2.0 + 1.0 / (step + 1))
    log.append("weight_cosine", 90, 0.8125)
    log.write_eval("bits_per_dim", 3.375)
    if finish:
        log.set_status("finished")
        log.close()
    else:
        log.flush()
    return log


def _run_cli(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "asymnet.inspect", *map(str, args)],
        capture_output=True, text=True, env=env, timeout=60,
    )


def test_prints_status_attrs_study_metrics_and_evals_of_a_finished_log(tmp_path, capsys):
    _write_log(tmp_path / "log.h5")
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert f"run log: {tmp_path / 'log.h5'}" in lines
    assert "status:  finished" in lines
    assert any(line.split() == ["seed", "11"] for line in lines)
    assert any(line.split() == ["device", "cpu"] for line in lines)
    assert any(line.split() == ["asymnet_version", "0.1.0"] for line in lines)
    assert "  operator:\n    alpha: 0.5" in out
    assert any(line.split() == ["loss", "99", "2.01"] for line in lines)
    assert any(line.split() == ["weight_cosine", "90", "0.8125"] for line in lines)
    assert any(line.split() == ["bits_per_dim", "3.375"] for line in lines)
    assert "nll" not in out  # never written


def test_foreign_hdf5_file_gives_one_error_line_and_exit_2(tmp_path, capsys):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.zeros(3)
    assert main([str(foreign)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"asymnet.inspect: error: {foreign} is an HDF5 file but not an asymnet run log "
        "(no root attribute 'asymnet_version'); give the log.h5 an asymnet run wrote\n"
    )


def test_missing_and_corrupt_files_give_one_error_line(tmp_path, capsys):
    assert main([str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("asymnet.inspect: error: no run log at ") and err.count("\n") == 1
    corrupt = tmp_path / "log.h5"
    _write_log(corrupt)
    corrupt.write_bytes(corrupt.read_bytes()[:600])
    assert main([str(corrupt)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("asymnet.inspect: error: ") and err.count("\n") == 1


def test_cli_reads_a_live_log_and_reports_a_foreign_one_without_traceback(tmp_path):
    log = _write_log(tmp_path / "log.h5", finish=False)
    try:
        live = _run_cli(tmp_path)
    finally:
        log.close()
    assert live.returncode == 0, live.stderr
    assert "status:  running" in live.stdout
    assert any(line.split() == ["loss", "99", "2.01"] for line in live.stdout.splitlines())

    text = tmp_path / "x.h5"
    text.write_text("not hdf5")
    bad = _run_cli(text)
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert bad.stderr == (
        f"asymnet.inspect: error: {text} is not an HDF5 file; give the log.h5 an asymnet run wrote\n"
    )

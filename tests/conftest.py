"""Shared fixtures: a tiny fast study and its run, trained once per session; the repository root; the
offline MNIST copy."""

import importlib
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

# One intra-op thread for the tests and for the commands they start (set before torch is imported): their
# tensors are small, so a second thread only adds hand-offs, and on a busy 2-core machine each hand-off
# waits for a time slice (see test_balance.py). An OMP_NUM_THREADS set by the caller wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]

# The mixture, not the spiral: its density is 8 Gaussians rather than 4,000, which the figure of the samples
# evaluates on a 200 x 200 grid at the end of every run.
TINY_STUDY = """\
name: tiny
seed: 3
data: {name: mog, n_train: 2000, n_test: 300}
network: {kind: recurrent, n_hidden: 6}
operator: {family: gaussian, alpha: 0.5, sigma: 0.1, learn_sigma: true}
walkback: {n_extra_max: 2, settle_steps: 2}
training: {steps: 60, batch_size: 32, learning_rate: 1.0e-3, learning: local}
logging: {metrics_every: 5, weights_every: 20, checkpoint_every: 10, eval_every: 30}
evaluation: {n_samples: 300, n_bound: 100}
"""


def shared_data_dir() -> Path | None:
    """The offline datasets: $ASYMNET_DATA, else the shared/ folder beside the repository."""
    for candidate in (os.environ.get("ASYMNET_DATA"), REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "mnist").is_dir():
            return Path(candidate)
    return None


SHARED = shared_data_dir() or Path("no-offline-mnist")
needs_shared = pytest.mark.skipif(SHARED.name == "no-offline-mnist",
                                  reason="no offline MNIST copy: set ASYMNET_DATA to a folder holding mnist/")


@pytest.fixture
def tiny_study(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_STUDY)
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The folder of a finished run of TINY_STUDY, trained once per session by ``python -m asymnet.run`` as
    a user runs it. Shared by every test that reads it: never write to it; copy it first (``copy_run``)."""
    folder = tmp_path_factory.mktemp("tiny_run")
    (folder / "tiny.yaml").write_text(TINY_STUDY)
    result = run_cli(folder / "tiny.yaml", "--out", folder / "run", "--quiet")
    assert result.returncode == 0, result.stderr
    return folder / "run"


def copy_run(run_dir: Path, to: Path) -> Path:
    """A copy of the run folder ``run_dir`` at ``to``, for a test that writes to its run."""
    shutil.copytree(run_dir, to)
    return to


def run_cli(*args, module="asymnet.run", timeout=300, env=None) -> subprocess.CompletedProcess:
    """``python -m asymnet.<module> args`` in a subprocess, as a user runs it."""
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env={**os.environ, **(env or {})})


def run_main(capsys, *args, module="asymnet.run") -> subprocess.CompletedProcess:
    """What ``run_cli`` returns, from the command's main called in this process: no interpreter to start,
    which costs more than most of the errors a test checks. The warnings a user would see (Python's default
    filters: not the deprecation, import and resource kinds) come first on its stderr, as they would on the
    user's terminal."""
    main = importlib.import_module(module).main
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for hidden in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", hidden)
        status = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    shown = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line) for w in caught)
    return subprocess.CompletedProcess([module, *args], status, captured.out, shown + captured.err)

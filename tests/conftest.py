"""Shared fixtures: a tiny fast study, the repository root, the offline MNIST copy."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

# One intra-op thread for the tests and for the commands they start (set before torch is imported): their
# tensors are small, so a second thread only adds hand-offs, and on a busy 2-core machine each hand-off
# waits for a time slice (see test_balance.py). An OMP_NUM_THREADS set by the caller wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]

TINY_STUDY = """\
name: tiny
seed: 3
data: {name: spiral, n_train: 2000, n_test: 300}
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


def run_cli(*args, module="asymnet.run", timeout=300, env=None) -> subprocess.CompletedProcess:
    """``python -m asymnet.<module> args`` in a subprocess, as a user runs it."""
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env={**os.environ, **(env or {})})

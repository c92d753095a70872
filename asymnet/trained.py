"""A finished run, loaded back from its directory for the measurements made after training
(``asymnet.measure``, ``asymnet.sample``, ``asymnet.inpaint``).

The log says which study was run; the checkpoint holds the weights and p*; the data are rebuilt
exactly as ``asymnet.run`` built them (same seed), so a toy run's test points are the ones it saw.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from asymnet.data import Dataset, load_dataset
from asymnet.runlog import LOG_NAME, LogError, read_summary
from asymnet.study import Study, parse_study

CHECKPOINT_NAME = "checkpoint.pt"


class RunError(Exception):
    """A run directory or command-line request that cannot be honoured; the message says the fix."""


@dataclass
class TrainedRun:
    run_dir: Path
    study: Study
    data: Dataset
    model: "object"  # asymnet.run.Model
    device: torch.device

    @property
    def log_path(self) -> Path:
        return self.run_dir / LOG_NAME


def pick_device(name: str) -> torch.device:
    """The torch device ``name`` ('cpu' or 'cuda'), with a clear error when CUDA is asked for and absent."""
    if name == "cuda" and not torch.cuda.is_available():
        raise RunError("--device cuda was asked for but torch sees no CUDA device (torch.cuda.is_available() is "
                       "False); use --device cpu or install a CUDA build of torch")
    return torch.device(name)


def load_run(run_dir, data_dir: str | None = None, device: str = "cpu") -> TrainedRun:
    """The finished run in ``run_dir``: its study, data and trained model (weights, p*).

    Raises LogError when ``run_dir`` holds no asymnet log, RunError when its run has not finished
    or its checkpoint is missing, DataError when the data folder is missing.
    """
    from asymnet.run import build_model, load_checkpoint  # run.py wires training; this module reuses it

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir} is not a directory; give the run directory that asymnet.run wrote "
                       f"(it holds {LOG_NAME} and {CHECKPOINT_NAME})")
    summary = read_summary(run_dir)
    status, text = summary.status, summary.attrs.get("study_resolved")
    if text is None:
        raise LogError(f"{run_dir / LOG_NAME} records no study (root attribute 'study_resolved'); "
                       "it was not written by asymnet.run")
    if status != "finished":
        raise RunError(f"{run_dir} has no finished model: its run's status is '{status}'; finish it with "
                       f"python -m asymnet.run --resume {run_dir}, then measure it")
    study = parse_study(text, source=str(run_dir / LOG_NAME))
    if study.replicas > 1:
        raise RunError(f"{run_dir} holds {study.replicas} replicas trained together; the measurement commands read "
                       "a single run: train the replica to measure alone, from a study with replicas: 1 and that "
                       "replica's seed and swept value (the attributes of /replicas/<r> in its log), and measure that run")
    torch_device = pick_device(device)
    data_gen = torch.Generator().manual_seed(study.seed + 104729)
    data = load_dataset(study.data.name, study.data.n_train, study.data.n_test, data_dir, data_gen,
                        study.data.binarize, False)
    model = build_model(study, data, torch_device, getattr(torch, study.training.dtype))
    load_checkpoint(run_dir / CHECKPOINT_NAME, model)
    model.network.eval()
    return TrainedRun(run_dir, study, data, model, torch_device)


def log_spaced_steps(n_steps: int) -> list[int]:
    """10, 30, 100, 300, ... up to and including ``n_steps`` (n_steps itself ends the list)."""
    if n_steps < 1:
        raise RunError(f"the number of steps must be a positive integer, got {n_steps}")
    steps, decade = [], 1
    while True:
        for mantissa in (1, 3):
            step = mantissa * 10**decade
            if step >= n_steps:
                return steps + [n_steps]
            steps.append(step)
        decade += 1


def mask_of(name: str, image_shape: tuple[int, int, int] = (1, 28, 28)) -> torch.Tensor:
    """The (C * H * W,) bool mask of the pixels to fill in (True = unknown), every channel of a pixel
    alike, for images flattened in (C, H, W) order."""
    check_mask(name)
    channels, height, width = image_shape
    rows = torch.arange(height).unsqueeze(1).expand(height, width)
    cols = torch.arange(width).unsqueeze(0).expand(height, width)
    masks = {
        "bottom_half": rows >= height // 2,
        "top_half": rows < height // 2,
        "left_half": cols < width // 2,
        "right_half": cols >= width // 2,
        "centre_square": ((rows >= height // 4) & (rows < height - height // 4)
                          & (cols >= width // 4) & (cols < width - width // 4)),
    }
    return masks[name].expand(channels, height, width).reshape(-1)


MASKS = ("bottom_half", "top_half", "left_half", "right_half", "centre_square")


def check_mask(name: str) -> None:
    """RunError naming the masks when ``name`` is not one of MASKS."""
    if name not in MASKS:
        raise RunError(f"unknown mask '{name}'; choose one of {', '.join(MASKS)}")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """RUN_DIR, --data, --device, --seed and --quiet: the arguments every measurement command takes."""
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished run's directory")
    parser.add_argument("--data", help="data folder (default: $ASYMNET_DATA, then ./data)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=0, help="seed of the measurement (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run_command(prog: str, measurement) -> int:
    """Call ``measurement()``; a bad input becomes one ``prog: error: ...`` line on stderr and exit
    status 2, and the figures it returns (if any) are printed one per line."""
    from asymnet.data import DataError
    from asymnet.study import StudyError

    try:
        figures = measurement()
    except (StudyError, DataError, LogError, RunError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    for name, value in (figures or {}).items():
        print(f"{name}  {value:.6g}")
    return 0

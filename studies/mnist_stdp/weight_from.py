"""The main study trained with walkback.step_weight_power's gain starting at a temperature T0 instead of T = 1:
the drift's gradient at step t times max(T_t / T0, 1)^p (times the continuous weighting's 1 - T_t^-q as
before), so the levels below T0 keep the plain weight and only those above it are weighed up. A trial of
the idea before it is a study key; nothing here enters the package.

    python -m studies.mnist_stdp.weight_from T0 [asymnet.run's arguments]

The local rule (plasticity.trajectory_update) and autograd (walkback.walkback_losses) both read
walkback.drift_gain, which this replaces for the run; a run resumed without this entry point would train
on with the plain gain. Used for studies/mnist_stdp_experiments.md.
"""

from __future__ import annotations

import sys

import torch

from asymnet import plasticity, run, walkback
from studies.mnist_stdp import positional, run_script

USAGE = "python -m studies.mnist_stdp.weight_from T0 [asymnet.run's arguments]"


def gain_from(start: float):
    """walkback.drift_gain with its T^p replaced by max(T / start, 1)^p."""
    plain = walkback.drift_gain

    def gain(T, power: float, continuous_q: float = 0.0):
        base = plain(T, 0.0, continuous_q)
        if not power:
            return base
        ratio = torch.clamp(T / start, min=1.0) if torch.is_tensor(T) else max(T / start, 1.0)
        return base * ratio**power
    return gain


def main(argv: list[str]) -> int:
    start, rest = positional(argv, USAGE, ("T0", float), ("ARGUMENTS ...", str, []))
    walkback.drift_gain = plasticity.drift_gain = gain_from(start)
    return run.main(rest)


if __name__ == "__main__":
    sys.exit(run_script("studies.mnist_stdp.weight_from", main))

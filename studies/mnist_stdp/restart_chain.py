"""A long chain of a finished noise-heated MNIST run that re-cools from a level above T_1 at every round:
s <- the run's own cooling (its corrector steps and bands) from the level at T, started at s heated to that
level (s + sqrt(V) eps, studies.mnist_stdp.class_balance's heating). Where the walk back is exact this is a
Gibbs sweep of the pair (s_0, s_T) and keeps the data's law, as walkback.heated_chain does at T_1; the
difference is how far the model's errors carry, one level's denoiser applied again and again (the heated
chain) against several levels' cooling each round.

    python -m studies.mnist_stdp.restart_chain RUN_DIR T [ROUNDS [CHAINS]]

Starts from CHAINS (default 50) cooled samples, those of studies.mnist_stdp.heated_chain (seed 0), and prints
the image figures (evaluate.ImageScorer) after 1, 3, 10, ..., ROUNDS (default 100) rounds with the network
evaluations spent so far (a T = 1 chain's step is one), and the median distance of the rounds' images to the
nearest of the first 10,000 training images against the nearest of the 10,000 test images (two sets of the
same size, one the model trained on): a chain that copies its training images comes nearer the first, a
chain that only gathers where digits are dense comes nearer both alike. Used for
studies/mnist_stdp_experiments.md.
"""

from __future__ import annotations

import sys
import time

import torch

from asymnet import walkback
from asymnet.metrics.quality import nearest_distance
from asymnet.long_run import log_spaced_steps
from asymnet.model import cooling_corrector, generation_temperatures

from studies.mnist_stdp import positional, positive_int, run_script
from studies.mnist_stdp.class_balance import heat_to, levels_up_to
from studies.mnist_stdp.heated_chain import cooled_starts, row

USAGE = "python -m studies.mnist_stdp.restart_chain RUN_DIR T [ROUNDS [CHAINS]]"


def nearest_pair(images: torch.Tensor, data) -> str:
    """The median distance of images (n, 784) on the [0, 1] scale to the nearest of the first len(test)
    training images and to the nearest test image."""
    n = len(data.test)
    a = nearest_distance(images.clamp(0, 1).float(), data.train[:n].float() / 255.0).median().item()
    b = nearest_distance(images.clamp(0, 1).float(), data.test.float() / 255.0).median().item()
    return f"nearest of {n} training / test images {a:.2f} / {b:.2f}"


@torch.no_grad()
def main(argv: list[str]) -> int:
    run_dir, T_start, n_rounds, n_chains = positional(argv, USAGE, ("RUN_DIR", str), ("T", float),
                                                      ("ROUNDS", positive_int, 100), ("CHAINS", positive_int, 50))
    trained, scorer, s = cooled_starts(run_dir, n_chains, "restart chain")
    model, study = trained.model, trained.study
    levels, top = levels_up_to(generation_temperatures(model, study), T_start)
    if top is None:
        raise SystemExit(f"{run_dir}: T = {T_start:g} is above the schedule's top level")
    corrector = cooling_corrector(model, study)
    per_round = sum(1 + (corrector.steps_at(T) if corrector is not None else 0) for T in levels)
    visible = slice(0, trained.data.n_visible)
    print(f"{run_dir}: {n_chains} chains, each round heated to T = {top:g} and cooled over {len(levels)} levels "
          f"({per_round} network evaluations); figures of the rounds' images")
    print(f"start | {row(scorer.figures(s[:, visible]))} | {nearest_pair(s[:, visible], trained.data)}")
    gen, done, clock = torch.Generator().manual_seed(3), 0, time.perf_counter()
    for stop in sorted({r for r in (1, 3) if r < n_rounds} | set(log_spaced_steps(n_rounds))):
        for _ in range(stop - done):
            s = walkback.cool_levels(model.network, model.operator, heat_to(trained, s, levels, gen), levels, gen,
                                     study.evaluation.final_mean, corrector=corrector)
        done = stop
        print(f"{stop} rounds ({stop * per_round} evaluations) | {row(scorer.figures(s[:, visible]))} | "
              f"{nearest_pair(s[:, visible], trained.data)} | {time.perf_counter() - clock:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_script("studies.mnist_stdp.restart_chain", main))

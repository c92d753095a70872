"""Generation of a finished MNIST run with other numbers of T = 1 steps at the cold end, no retraining:
for each N, cooling from p* (1,000 chains, seed 1) over the run's heating temperatures without their T = 1
steps, then N steps at T = 1, the last one's mean as the image (and, on a second line, the last draw),
scored by the classifier figures, with the clamped mean pixel.

    python -m studies.mnist_stdp.regenerate RUN_DIR N[,N...] [GRID_PREFIX]

GRID_PREFIX: a grid of 100 images per N at GRID_PREFIX_<N>.png. Used for studies/mnist_stdp_experiments.md.
"""

from __future__ import annotations

import sys

from asymnet import schedule
from asymnet.evaluate import ImageScorer, mnist_classifier
from asymnet.model import load_run
from asymnet.plots import plot_image_grid
from studies.mnist_stdp import positional, run_script
from studies.mnist_stdp.reverse_noise import generate

USAGE = "python -m studies.mnist_stdp.regenerate RUN_DIR N[,N...] [GRID_PREFIX]"


def cold_end(run, n_cold: int) -> list[float]:
    """The run's heating temperatures without their T = 1 steps, then n_cold steps at T = 1 (they run last)."""
    return [1.0] * n_cold + schedule.heating_temperatures(0, run.model.n_heating, run.study.walkback.heating_factor)


def cold_counts(text: str) -> list[int]:
    """N[,N...]: numbers of T = 1 steps."""
    try:
        counts = [int(a) for a in text.split(",")]
    except ValueError:
        counts = [-1]
    if min(counts) < 0:
        raise ValueError("a comma-separated list of non-negative integers")
    return counts


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    run_dir, counts, prefix = positional(argv, USAGE, ("RUN_DIR", str), ("N[,N...]", cold_counts),
                                         ("GRID_PREFIX", str, None))
    run = load_run(run_dir)
    scorer = ImageScorer.build(mnist_classifier(None, True), run.data, 1000)
    for n_cold in counts:
        for final_mean in (True, False):
            images = generate(run, temperatures=cold_end(run, n_cold), final_mean=final_mean)
            figures = {k: round(v, 3) for k, v in scorer.figures(images).items()}
            print(n_cold, "mean" if final_mean else "draw", figures,
                  "mean pixel", round(images.clamp(0, 1).mean().item(), 4), flush=True)
            if prefix is not None and final_mean:
                plot_image_grid(images[:100].clamp(0, 1).numpy(), f"{prefix}_{n_cold}.png")


if __name__ == "__main__":
    sys.exit(run_script("studies.mnist_stdp.regenerate", main))

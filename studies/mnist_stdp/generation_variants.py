"""Generation variants on a finished MNIST run, scored with the run's classifier figures (no retraining).

    python -m studies.mnist_stdp.generation_variants RUN_DIR TAG VARIANT [VARIANT ...]

Each VARIANT is a JSON object of keyword arguments of ``generate_variant``, e.g. '{}' (plain cooling),
'{"lam": 0.7}' (generation noise x0.7), '{"prev": true}' (each cooling step drawn with the next-lower
temperature's noise), '{"per_T": 3}' (3 steps per temperature), '{"extra": 30, "final_mean": true}'
(30 more T = 1 steps, the last one's mean as the image). Prints confident fraction, label entropy and
Fréchet distance for 1,000 samples (seed 1) and writes a grid of 100 to
studies/mnist_stdp/results/<TAG>_<variant>.png.
Used for studies/mnist_stdp_experiments.md.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path

import torch

from asymnet.evaluate import ImageScorer, mnist_classifier
from asymnet.model import eval_temperatures, load_run
from asymnet.plots import plot_image_grid
from studies.mnist_stdp import run_script

HERE = Path(__file__).resolve().parent


@torch.no_grad()
def generate_variant(run, lam: float = 1.0, per_T: int = 1, extra: int = 0, final_mean: bool = False,
                     prev: bool = False, n: int = 1000, seed: int = 1) -> torch.Tensor:
    """Visible states (n, n_visible) of a cooling chain from p* with the variant's changes."""
    model = run.model
    network, operator = model.network, model.operator
    generator = torch.Generator().manual_seed(seed)
    s = model.p_star.sample(n, generator)
    hot_to_cold = list(reversed(eval_temperatures(model, run.study)))
    for i, T in enumerate(hot_to_cold):
        noise_T = (hot_to_cold[i + 1] if i + 1 < len(hot_to_cold) else 1.0) if prev else T
        for _ in range(per_T):
            drive = network(s, T)
            s = operator.mean(s, drive) + lam * operator.std(drive, noise_T) * torch.randn(s.shape, generator=generator)
    for k in range(extra):
        drive = network(s, 1.0)
        scale = 0.0 if final_mean and k == extra - 1 else lam
        s = operator.mean(s, drive) + scale * operator.std(drive, 1.0) * torch.randn(s.shape, generator=generator)
    if final_mean and extra == 0:
        s = operator.mean(s, network(s, 1.0))
    return s[:, : run.data.n_visible]


def variant(text: str) -> str:
    """A VARIANT as typed, once it reads as a JSON object of generate_variant's keywords."""
    keywords = list(inspect.signature(generate_variant).parameters)[1:]
    try:
        options = json.loads(text)
    except json.JSONDecodeError:
        options = None
    if not isinstance(options, dict) or not set(options) <= set(keywords):
        raise argparse.ArgumentTypeError(f"{text!r} is not a JSON object of keywords among {', '.join(keywords)}")
    return text


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m studies.mnist_stdp.generation_variants",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("tag", help="the grids' file name prefix")
    parser.add_argument("variants", nargs="+", metavar="VARIANT", type=variant,
                        help="a JSON object of generate_variant's keywords")
    args = parser.parse_args(argv)
    run = load_run(args.run_dir)
    scorer = ImageScorer.build(mnist_classifier(None, True), run.data, 1000)
    for spec in args.variants:
        options = json.loads(spec)
        images = generate_variant(run, **options)
        figures = scorer.figures(images)
        name = "_".join(f"{key}{value}" for key, value in options.items()) or "plain"
        plot_image_grid(images[:100].clamp(0, 1).numpy(), HERE / "results" / f"{args.tag}_{name}.png")
        print(f"{spec:45s} confident {figures['confident_fraction']:.3f}  entropy {figures['label_entropy']:.3f}  "
              f"Fréchet {figures['frechet_distance']:.0f}", flush=True)


if __name__ == "__main__":
    sys.exit(run_script("studies.mnist_stdp.generation_variants", main))

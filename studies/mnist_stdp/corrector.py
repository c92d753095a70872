"""A finished noise-heated MNIST run's samples with other numbers of corrector steps (evaluation.corrector_steps,
walkback.Corrector), no retraining, scored with the run's image figures.

    python -m studies.mnist_stdp.corrector RUN_DIR C [C ...] [--autocast=bf16]

For each C: the run's final evaluation's generation (its n_samples, its seed, its final_mean) with C
corrector steps after each walk-back step; C = 0 is the run's own cooling and repeats the figures its log
holds. C may also be "N1/N2/.../Nk@T1/.../Tk-1" (T1 > T2 > ...): N1 steps at the levels with T_t > T1, N2 at
those with T1 >= T_t > T2, ..., Nk at the rest (a trial of where the steps pay, outside the package's key);
"HOT/COLD@T" is the two-band case. Prints the image figures, the label histogram and the seconds the
cooling took. ``--autocast=bf16`` (or auto, none) replaces the run's evaluation.autocast: the coolings' network
calls in bfloat16. Used for studies/mnist_stdp_experiments.md.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import torch

from asymnet import walkback
from asymnet.metrics import quality
from asymnet.evaluate import ImageScorer, chunks, generate_visible, mnist_classifier
from asymnet.model import generation_temperatures, load_run, sampling_autocast, sampling_generator
from asymnet.study import replace_in
from studies.mnist_stdp import positional, run_script

USAGE = "python -m studies.mnist_stdp.corrector RUN_DIR C [C ...] [--autocast=bf16]"


@torch.no_grad()
def split_cooling(run, counts: list[int], splits: list[float]) -> torch.Tensor:
    """generate_visible's samples with counts[0] corrector steps at the levels above T = splits[0], counts[1]
    at those from there down to splits[1], ..., one level at a time through walkback.Corrector (the same
    draws as the key's when every count is the same)."""
    model, study, device = run.model, run.study, run.device
    gen = sampling_generator(torch.Generator().manual_seed(study.seed + 7919), device)
    temperatures = generation_temperatures(model, study)
    out = []
    for rows in chunks(study.evaluation.n_samples, device):
        s = model.p_star.sample(rows, gen)
        with sampling_autocast(study, device):
            for level, T in enumerate(reversed(temperatures)):
                band = sum(T <= split for split in splits)
                corrector = walkback.Corrector(model.heating, counts[band])
                s = corrector.cool(model.network, model.operator, s, [T], gen,
                                   study.evaluation.final_mean and level == len(temperatures) - 1)
        out.append(s[:, : run.data.n_visible].cpu())
    return torch.cat(out)


def corrector_steps(text: str) -> str:
    """C as typed, once it reads as a count or as N1/.../Nk@T1/.../Tk-1 (k counts, k - 1 temperatures)."""
    counts, at, splits = text.partition("@")
    try:
        n = [int(c) for c in counts.split("/")]
        T = [float(t) for t in splits.split("/")] if at else []
    except ValueError:
        n, T = [], []
    if not n or min(n) < 0 or len(n) != len(T) + 1:
        raise ValueError("a non-negative integer or N1/.../Nk@T1/.../Tk-1 (k counts, k - 1 temperatures)")
    return text


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    autocast = [a.partition("=")[2] for a in argv if a.startswith("--autocast=")]
    run_dir, cs = positional([a for a in argv if not a.startswith("--autocast=")], USAGE, ("RUN_DIR", str),
                             ("C ...", corrector_steps))
    run = load_run(run_dir)
    if autocast:
        run = dataclasses.replace(run, study=replace_in(run.study, "evaluation.autocast", autocast[-1]))
    scorer = ImageScorer.build(mnist_classifier(None, True), run.data, run.study.evaluation.n_samples)
    for steps in cs:
        start = time.perf_counter()
        if "@" in steps:
            counts, splits = steps.split("@")
            images = split_cooling(run, [int(c) for c in counts.split("/")], [float(T) for T in splits.split("/")])
        else:
            study = replace_in(run.study, "evaluation.corrector_steps", int(steps))
            images = generate_visible(run.model, study, run.data, run.device)
        seconds = time.perf_counter() - start
        f = scorer.figures(images)
        histogram = quality.classifier_scores(scorer.classifier, images.clamp(0, 1).float())["label_histogram"]
        print(f"corrector_steps {steps:>2}: confident {f['confident_fraction']:.3f}  entropy {f['label_entropy']:.3f}  "
              f"Fréchet {f['frechet_distance']:.1f}  precision / recall {f['precision']:.3f} / {f['recall']:.3f}  "
              f"nearest {f['nearest_train_distance']:.2f}  labels {histogram}  ({seconds:.0f} s)", flush=True)


if __name__ == "__main__":
    sys.exit(run_script("studies.mnist_stdp.corrector", main))

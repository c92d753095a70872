"""Where a finished noise-heated MNIST run's cooling loses the class balance: heat test images to a level,
cool them back with the run's own cooling (its corrector steps and bands), and read the classes.

    python -m studies.mnist_stdp.class_balance RUN_DIR T [T ...]

For each T: the first n_samples test images, heated by the noise heating to the level of the schedule at or
just above T (s = x + sqrt(V) eps, V the variance the heating has added there: a draw of the heated data's
law at that level), then cooled from that level down with the run's cooling. Prints the label histogram,
the label entropy and the confident fraction of the cooled images, and the fraction whose label is the test
image's own ("kept"). T above the schedule's top starts from p*, as generation does. Used for
studies/mnist_stdp_experiments.md, "Where the ones come from".
"""

from __future__ import annotations

import sys
import time

import torch

from asymnet import walkback
from asymnet.evaluate import chunks, mnist_classifier
from asymnet.metrics import quality
from asymnet.model import cooling_corrector, generation_temperatures, load_run, sampling_generator
from studies.mnist_stdp import number_text, positional, run_script

USAGE = "python -m studies.mnist_stdp.class_balance RUN_DIR T [T ...]"


def levels_up_to(temperatures: list[float], T_start: float) -> tuple[list[float], float | None]:
    """The cooling's levels from the one at or just above T_start down, and that level (None above the top)."""
    below = [T for T in temperatures if T <= T_start]
    top = min((T for T in temperatures if T >= T_start), default=None)
    return (temperatures if top is None else below if top in below else below + [top]), top


def heat_to(run, x: torch.Tensor, levels: list[float], gen) -> torch.Tensor:
    """x heated by the noise heating through levels: x + sqrt(V) eps, V the variance added there."""
    V = sum(run.model.heating.step_variances(run.model.operator, T) for T in levels)
    return x + V**0.5 * torch.randn(x.shape, generator=gen, dtype=x.dtype, device=x.device)


@torch.no_grad()
def heat_and_cool(run, T_start: float) -> torch.Tensor:
    """The first n_samples test images heated to the level at or above T_start, cooled back (n, 784)."""
    model, study, device = run.model, run.study, run.device
    gen = sampling_generator(torch.Generator().manual_seed(study.seed + 7919), device)
    levels, top = levels_up_to(generation_temperatures(model, study), T_start)
    corrector = cooling_corrector(model, study)
    x = run.data.batch(run.data.test[: study.evaluation.n_samples], torch.Generator().manual_seed(study.seed),
                       model.p_star.mean.dtype).to(device)
    out = []
    for rows in x.split(chunks(len(x), device)):
        if top is None:
            s = model.p_star.sample(len(rows), gen)
        else:
            s = heat_to(run, rows, levels, gen)
        s = walkback.cool_levels(model.network, model.operator, s, levels, gen, study.evaluation.final_mean,
                                 corrector=corrector)
        out.append(s[:, : run.data.n_visible].cpu())
    return torch.cat(out)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    run_dir, levels = positional(argv, USAGE, ("RUN_DIR", str), ("T ...", number_text))
    run = load_run(run_dir)
    classifier = mnist_classifier(None, True)
    labels = run.data.labels_test[: run.study.evaluation.n_samples]
    print(f"test images: labels {torch.bincount(labels, minlength=10).tolist()}", flush=True)
    for T in levels:
        start = time.perf_counter()
        images = heat_and_cool(run, float(T)).clamp(0, 1).float()
        scores = quality.classifier_scores(classifier, images)
        kept = (classifier(images).argmax(1) == labels).double().mean().item()
        print(f"from T = {T:>5}: labels {scores['label_histogram']}  entropy {scores['label_entropy']:.3f}  "
              f"confident {scores['confident_fraction']:.3f}  kept {kept:.3f}  "
              f"({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    sys.exit(run_script("studies.mnist_stdp.class_balance", main))

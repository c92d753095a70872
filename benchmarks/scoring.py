"""Time of the MNIST scorer (asymnet.evaluate.ImageScorer) on n images, by part, with the figures of real test
images: what a run logs as test_* and what each extra figure costs per call.

    python benchmarks/scoring.py [--data DIR] [--samples 1000] [--repeats 3] [--threads 1]

The scored images are the first n test images (the run's test_* figures), then as many uniform-noise images;
the reference features are the test images after the first n, the training images all the data folder holds
(the offline copy: the first 24,345). Each part is timed ``--repeats`` times, the best kept. Prints a table,
writes benchmarks/results/scoring.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def best_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        clock = time.perf_counter()
        function()
        times.append(time.perf_counter() - clock)
    return min(times)


def main() -> None:
    from asymnet.data import load_dataset
    from asymnet.evaluate import ImageScorer, mnist_classifier
    from asymnet.metrics import quality

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="data folder (default: $ASYMNET_DATA, then ./data)")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("mnist", 60_000, 10_000, args.data, torch.Generator())
    classifier = mnist_classifier(args.data, quiet=True)
    clock = time.perf_counter()
    scorer = ImageScorer.build(classifier, data, args.samples)
    build_seconds = time.perf_counter() - clock
    real = data.test[: args.samples].float() / 255.0
    noise = torch.rand(args.samples, 784, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = classifier.features(real)
    parts = {
        "figures (all)": lambda: scorer.figures(real),
        "classifier figures (confident, entropy, Frechet)": lambda: quality.classifier_scores(
            classifier, real, scorer.reference_features, reference_radii=scorer.reference_radii),
        "precision_recall (reference radii cached)": lambda: quality.precision_recall(
            scorer.reference_features, features, real_radii=scorer.reference_radii),
        "memorisation_figures": lambda: quality.memorisation_figures(real, scorer.training_images),
    }
    seconds = {name: best_time(part, args.repeats) for name, part in parts.items()}
    seconds["classifier figures (confident, entropy, Frechet)"] -= seconds["precision_recall (reference radii cached)"]
    extra = seconds["precision_recall (reference radii cached)"] + seconds["memorisation_figures"]
    figures = {"test": scorer.figures(real), "noise": scorer.figures(noise)}
    print(f"{args.samples} images against {len(scorer.reference_features)} reference features and "
          f"{len(scorer.training_images)} training images, {args.threads} thread(s), best of {args.repeats}")
    print(f"{'part':<52} {'seconds':>8}")
    print(f"{'ImageScorer.build (once per run)':<52} {build_seconds:>8.3f}")
    for name, value in seconds.items():
        print(f"{name:<52} {value:>8.3f}")
    print(f"{'extra per call (precision/recall + memorisation)':<52} {extra:>8.3f}")
    print(f"\n{'figure':<28} {'test images':>12} {'uniform noise':>14}")
    for name in figures["test"]:
        print(f"{name:<28} {figures['test'][name]:>12.4g} {figures['noise'][name]:>14.4g}")
    result = {"samples": args.samples, "reference": len(scorer.reference_features),
              "training_images": len(scorer.training_images), "threads": args.threads, "repeats": args.repeats,
              "build_seconds": build_seconds, "seconds": seconds, "extra_seconds": extra, "figures": figures,
              "torch": torch.__version__, "machine": platform.machine()}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "scoring.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

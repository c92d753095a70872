"""A finished noise-heated MNIST run's samples with other numbers of corrector steps (evaluation.corrector_steps,
walkback.Corrector), no retraining, scored with the run's image figures.

    python -m studies.mnist_stdp.corrector RUN_DIR C [C ...]

For each C: the run's final evaluation's generation (its n_samples, its seed, its final_mean) with C
corrector steps after each walk-back step; C = 0 is the run's own cooling and repeats the figures its log
holds. Prints the image figures and the seconds the cooling took. Used for studies/mnist_stdp_experiments.md.
"""

from __future__ import annotations

import sys
import time

from asymnet.evaluate import ImageScorer, generate_visible, mnist_classifier
from asymnet.model import load_run
from asymnet.study import replace_in


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    run = load_run(argv[0])
    scorer = ImageScorer.build(mnist_classifier(None, True), run.data, run.study.evaluation.n_samples)
    for steps in argv[1:]:
        study = replace_in(run.study, "evaluation.corrector_steps", int(steps))
        start = time.perf_counter()
        images = generate_visible(run.model, study, run.data, run.device)
        seconds = time.perf_counter() - start
        f = scorer.figures(images)
        print(f"corrector_steps {steps:>2}: confident {f['confident_fraction']:.3f}  entropy {f['label_entropy']:.3f}  "
              f"Fréchet {f['frechet_distance']:.1f}  precision / recall {f['precision']:.3f} / {f['recall']:.3f}  "
              f"nearest {f['nearest_train_distance']:.2f}  ({seconds:.0f} s)", flush=True)


if __name__ == "__main__":
    main()

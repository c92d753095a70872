"""How much a toy run's end-of-cooling figure moves with the generation seed alone.

    python -m studies.prop1.cooling_spread RUN [RUN ...] [--draws 6]

The end of training scores one draw of the study's n_samples chains cooled from p* (``asymnet.evaluate.
generate_visible``, from the evaluation seed study.seed + 7919). This redraws them with the study's seed
shifted by 1000 k (k = 0 is the logged draw) and prints each draw's MMD^2 over the end of training's baseline
(mean of 20 exact data draws against the same test points) and its occupancy TV, with the exact draws' share
above 3x for comparison. Reads the run; writes nothing. A few seconds per draw on the mixture.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import torch

from asymnet.evaluate import generate_visible, toy_mmd_null
from asymnet.metrics import quality
from asymnet.model import load_run


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m studies.prop1.cooling_spread",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--draws", type=int, default=6)
    args = parser.parse_args(argv)
    for run in args.runs:
        trained = load_run(run)
        toy, study = trained.data.toy, trained.study
        if toy is None:
            sys.exit(f"cooling_spread: {run} is not a toy run; it scores 2-D toys only")
        n = study.evaluation.n_samples
        reference = trained.data.test[:n].to(torch.float64)
        null = toy_mmd_null(study, trained.data, reference)  # the end of training's exact draws
        baseline = null.mean().item()
        cells = []
        for k in range(args.draws):
            shifted = dataclasses.replace(study, seed=study.seed + 1000 * k)
            x = generate_visible(trained.model, shifted, trained.data, torch.device("cpu")).double()
            tv = quality.total_variation(toy.occupancy(x), toy.reference_occupancy())
            cells.append(f"{quality.mmd2_rbf(x, reference) / baseline:.2f} (TV {tv:.3f})")
        above = (null > 3 * baseline).double().mean().item()
        print(f"{run}: MMD^2 / baseline by draw: {', '.join(cells)}; exact draws above 3x: {above:.0%} of "
              f"{quality.NULL_DRAWS}", flush=True)


if __name__ == "__main__":
    main()

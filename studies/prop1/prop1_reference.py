"""What Proposition 1's long-run test asks of an operator: the same test on a Gaussian operator whose
mean uses the data's exact score.

    python -m studies.prop1.prop1_reference [--toys mog spiral] [--sigmas 0.05 0.1] [--steps 100000] [--chains 1000]

For each toy and T = 1 noise level sigma it runs the unadjusted Langevin operator
s' = s + (sigma^2 / 2) grad log p(s) + sigma xi (the Gaussian operator of the studies with the best mean a
fixed-sigma operator can have: for small sigma it is the fixed point of the walkback loss's T = 1 term)
from data draws. At 10, 30, ..., --steps steps it scores the chains with the long run's own figures:
MMD^2 to held-out data over its baseline (the mean of 20 exact draws against the same held-out data, as
``asymnet.sample`` now scores; the spine's bound is 3x) with its Monte-Carlo p-value, and the
total-variation distance of the region occupancy (nearest mode, tenth of the curve) with its baseline.
(studies/prop1/results/prop1_reference.json was written before the baselines came from many draws, by
commit 60c9f91: there the baselines are one data-vs-data draw.) The scores
say whether a perfectly trained operator of this family passes at 10^5 steps, so that a learned operator
that fails does so by its training, not by its form. The mixture's score is exact; the spiral's is that
of the curve blurred by its noise over 400 points of the curve (the curve moves 0.05 between them, less than
the noise 0.08). Prints a table, writes studies/prop1/results/prop1_reference.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from asymnet.data.toy import TOYS
from studies.prop1.common import print_result, score_long_run

HERE = Path(__file__).resolve().parent


def run(toy_name: str, sigma: float, n_steps: int, n_chains: int, seed: int) -> dict:
    toy = TOYS[toy_name]
    gen = torch.Generator().manual_seed(seed)
    score = lambda x: toy.score(x, n_curve_points=400)  # noqa: E731 (400 points of the curve: see above)

    def advance(s, n):
        for _ in range(n):
            s = s + 0.5 * sigma**2 * score(s) + sigma * torch.randn(s.shape, generator=gen, dtype=s.dtype)
        return s

    return {"toy": toy_name, "sigma": sigma, "seed": seed, **score_long_run(toy, advance, n_steps, n_chains, gen)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studies.prop1.prop1_reference",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--toys", nargs="+", default=["mog", "spiral"], choices=["mog", "spiral", "circle"])
    parser.add_argument("--sigmas", nargs="+", type=float, default=[0.05, 0.1])
    parser.add_argument("--steps", type=int, default=100000)
    parser.add_argument("--chains", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(HERE / "results" / "prop1_reference.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = []
    for toy_name in args.toys:
        for sigma in args.sigmas:
            result = run(toy_name, sigma, args.steps, args.chains, args.seed)
            results.append(result)
            print_result(f"{toy_name:7s} sigma {sigma:<5g}", result)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"torch": torch.__version__, "threads": args.threads, "runs": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

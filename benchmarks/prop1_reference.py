"""What Proposition 1's long-run test asks of an operator: the same test on a Gaussian operator whose
mean uses the data's exact score.

    python benchmarks/prop1_reference.py [--toys mog spiral] [--sigmas 0.05 0.1] [--steps 100000] [--chains 1000]

For each toy and T = 1 noise level sigma it runs the unadjusted Langevin operator
s' = s + (sigma^2 / 2) grad log p(s) + sigma xi (the Gaussian operator of the studies with the best mean a
fixed-sigma operator can have: for small sigma it is the fixed point of the walkback loss's T = 1 term)
from data draws. At 10, 30, ..., --steps steps it scores the chains with the long run's own figures:
MMD^2 to held-out data over its baseline (the mean of 20 exact draws against the same held-out data, as
``asymnet.sample`` now scores; the spine's bound is 3x) with its Monte-Carlo p-value, and the
total-variation distance of the region occupancy (nearest mode, tenth of the curve) with its baseline.
(benchmarks/results/prop1_reference.json was written before the baselines came from many draws, by
commit 60c9f91: there the baselines are one data-vs-data draw.) The scores
say whether a perfectly trained operator of this family passes at 10^5 steps, so that a learned operator
that fails does so by its training, not by its form. The mixture's score is exact; the spiral's is that
of the curve blurred by its noise over 400 points of the curve (the curve moves 0.05 between them, less than
the noise 0.08). Prints a table, writes benchmarks/results/prop1_reference.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the checkout's asymnet, installed or not


def fresh_toy_model(study_path: str, overrides: list[str], program: str):
    """(study, generator, data, model) of a 2-D toy study with a recurrent network, built as training builds
    them (the study's seed, so the same fixed hidden expansion), on the CPU in float32; exits otherwise."""
    from asymnet import run as run_module
    from asymnet.data import load_dataset
    from asymnet.study import load_study

    study = load_study(study_path, overrides)[0]
    generator = torch.Generator().manual_seed(study.seed)
    data = load_dataset(study.data.name, study.data.n_train, study.data.n_test, None, generator)
    if data.toy is None or study.network.kind != "recurrent":
        sys.exit(f"{program} needs a 2-D toy study with network.kind: recurrent")
    return study, generator, data, run_module.build_model(study, data, torch.device("cpu"), torch.float32)


def score_long_run(toy, advance, n_steps: int, n_chains: int, generator: torch.Generator) -> dict:
    """Start n_chains chains at data draws, advance them (``advance(s, k)``: s after k more steps) to 10, 30,
    ..., n_steps steps and score each stop with the long run's figures; returns the baselines and the curve."""
    from asymnet.metrics.quality import NULL_DRAWS, mmd2_rbf, null_p_value, total_variation, toy_null
    from asymnet.trained import log_spaced_steps

    reference_occupancy = toy.reference_occupancy()
    held_out = toy.sample(n_chains, generator)
    exact = toy_null(toy, held_out, n_chains, NULL_DRAWS, generator)  # as the long run's baselines
    null, baseline_tv = exact["mmd"], exact["occupancy_tv"].mean().item()
    baseline_mmd = null.mean().item()
    s = toy.sample(n_chains, generator)
    rows, done, clock = [], 0, time.perf_counter()
    for stop in log_spaced_steps(n_steps):
        s = advance(s, stop - done)
        done = stop
        points = s.to(torch.float64)
        mmd = mmd2_rbf(points, held_out)
        rows.append({"step": stop, "mmd_over_baseline": mmd / baseline_mmd, "mmd_p_value": null_p_value(mmd, null),
                     "occupancy_tv": total_variation(toy.occupancy(points), reference_occupancy),
                     "mean_log_density": toy.log_density(points).mean().item()})
    return {"chains": n_chains, "steps": n_steps, "mmd_baseline": baseline_mmd,
            "occupancy_tv_baseline": baseline_tv, "data_mean_log_density": toy.log_density(held_out).mean().item(),
            "seconds": time.perf_counter() - clock, "curve": rows}


def print_result(label: str, result: dict) -> None:
    last = result["curve"][-1]
    print(f"{label} after {last['step']} steps: MMD^2 {last['mmd_over_baseline']:.2f} x "
          f"baseline; occupancy TV {last['occupancy_tv']:.3f} (data {result['occupancy_tv_baseline']:.3f}); "
          f"mean log p {last['mean_log_density']:.3f} (data {result['data_mean_log_density']:.3f}); "
          f"{result['seconds']:.0f} s", flush=True)
    print("        MMD^2 / baseline (p-value) by step: " + " ".join(
        f"{row['step']}:{row['mmd_over_baseline']:.2f} ({row['mmd_p_value']:.2f})" for row in result["curve"]),
        flush=True)


def run(toy_name: str, sigma: float, n_steps: int, n_chains: int, seed: int) -> dict:
    from asymnet.data.toy import TOYS

    toy = TOYS[toy_name]
    gen = torch.Generator().manual_seed(seed)
    score = lambda x: toy.score(x, n_curve_points=400)  # noqa: E731 (400 points of the curve: see above)

    def advance(s, n):
        for _ in range(n):
            s = s + 0.5 * sigma**2 * score(s) + sigma * torch.randn(s.shape, generator=gen, dtype=s.dtype)
        return s

    return {"toy": toy_name, "sigma": sigma, "seed": seed, **score_long_run(toy, advance, n_steps, n_chains, gen)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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

"""How often an exact sampler fails the toys' MMD^2 bound: the long run's test applied to exact draws.

    python -m studies.prop1.mmd_null [--toys spiral mog] [--chains 1000 2000] [--draws 100] [--threads 1]

For each toy and number of chains n it scores ``--draws`` exact n-point draws from the toy's law as
``python -m asymnet.sample`` scores chains (MMD^2 against the study's first n test points), and compares
them with the two baselines the long run has had:
- one data-vs-data draw (before this study: two fresh n-point draws), the ratio's law taken over
  ``--draws`` independent baselines, every pairing of an exact draw with a baseline;
- the mean over ``asymnet.metrics.quality.NULL_DRAWS`` exact draws against the same test points (now), the
  law taken over the means of disjoint groups of 20 of the same draws (a draw is divided by the mean
  of its own group in 1 of every draws / 20 pairings).
It prints, for each, the share of exact draws above 3x the baseline (the spine's bound) and the quantiles
of the ratio, and the 95 % quantile of the exact draws over their mean. Writes
studies/prop1/results/mmd_null.json. About 1.3 s per MMD^2 at 2,000 points on one core.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from asymnet.data import load_dataset
from asymnet.metrics.quality import NULL_DRAWS, mmd2_rbf
from asymnet.study import load_study

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def run(toy_name: str, n_chains: int, n_draws: int) -> dict:
    study = load_study(ROOT / "studies" / f"{toy_name}_prop1.yaml", [])[0]
    data = load_dataset(study.data.name, study.data.n_train, study.data.n_test, None,
                        torch.Generator().manual_seed(study.seed))
    toy, reference = data.toy, data.test[:n_chains].to(torch.float64)
    generator = torch.Generator().manual_seed(1234)
    clock = time.perf_counter()
    exact = torch.tensor([mmd2_rbf(toy.sample(n_chains, generator), reference) for _ in range(n_draws)])
    single = torch.tensor([mmd2_rbf(toy.sample(n_chains, generator), toy.sample(n_chains, generator))
                           for _ in range(n_draws)])
    seconds = time.perf_counter() - clock
    old = (exact[:, None] / single[None, :]).flatten()  # every pairing of a draw with a one-draw baseline
    groups = exact[: n_draws // NULL_DRAWS * NULL_DRAWS].reshape(-1, NULL_DRAWS).mean(1)
    new = (exact[:, None] / groups[None, :]).flatten()
    quantiles = [0.5, 0.9, 0.95, 0.99]

    def law(ratio):
        return {"share_above_3": (ratio > 3).double().mean().item(),
                "quantiles": dict(zip(map(str, quantiles), ratio.double().quantile(torch.tensor(quantiles,
                                                                             dtype=torch.float64)).tolist()))}

    return {"toy": toy_name, "chains": n_chains, "draws": n_draws, "seconds": seconds,
            "exact_mean": exact.mean().item(), "exact_sd": exact.std().item(),
            "single_draw_baseline_mean": single.mean().item(), "single_draw_baseline_sd": single.std().item(),
            "exact_q95_over_mean": (exact.quantile(0.95) / exact.mean()).item(),
            "one_draw_baseline": law(old), "mean_of_draws_baseline": law(new)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studies.prop1.mmd_null",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--toys", nargs="+", default=["spiral", "mog"], choices=["spiral", "mog"])
    parser.add_argument("--chains", nargs="+", type=int, default=[1000, 2000])
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(HERE / "results" / "mmd_null.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = []
    for toy_name in args.toys:
        for n_chains in args.chains:
            result = run(toy_name, n_chains, args.draws)
            results.append(result)
            old, new = result["one_draw_baseline"], result["mean_of_draws_baseline"]
            print(f"{toy_name:7s} n {n_chains:5d}: exact MMD^2 {result['exact_mean']:.3g} +- {result['exact_sd']:.2g} "
                  f"(95 % quantile {result['exact_q95_over_mean']:.2f}x the mean); exact draws above 3x a one-draw "
                  f"baseline {100 * old['share_above_3']:.1f} %, above 3x the mean of 20 draws "
                  f"{100 * new['share_above_3']:.1f} %; median ratio {old['quantiles']['0.5']:.2f} / "
                  f"{new['quantiles']['0.5']:.2f}; {result['seconds']:.0f} s", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"torch": torch.__version__, "threads": args.threads, "runs": results},
                                         indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

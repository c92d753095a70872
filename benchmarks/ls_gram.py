"""The least-squares readout's Gram matrix: BLAS's symmetric rank-k update against the general product.

    python benchmarks/ls_gram.py [--rows 7700] [--features 516 1028 2052] [--threads 1]

Rows: about one mog_prop1 minibatch (256 examples x 30 walk-back steps). The readout has n_hidden + 4
features (2 visible rates, the bias, log T). Prints seconds per Gram matrix, float64, and the largest
relative difference between the two, as a table; writes benchmarks/results/ls_gram.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def seconds(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    from asymnet.readout import weighted_gram

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=7700)
    parser.add_argument("--features", type=int, nargs="+", default=[516, 1028, 2052])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    print(f"{args.rows} rows, {args.threads} thread(s), float64")
    print("features  general (s)  rank-k update (s)  speed-up  max rel. difference")
    table = []
    for p in args.features:
        rows = torch.rand(args.rows, p, generator=gen, dtype=torch.float64)
        weights = torch.rand(args.rows, generator=gen, dtype=torch.float64)
        general = seconds(lambda: (rows * weights[:, None]).t() @ rows, args.repeats)
        update = seconds(lambda: weighted_gram(rows, weights), args.repeats)
        exact = (rows * weights[:, None]).t() @ rows
        diff = ((weighted_gram(rows, weights) - exact).abs().max() / exact.abs().max()).item()
        print(f"{p:8d}  {general:11.3f}  {update:17.3f}  {general / update:8.2f}  {diff:.1e}")
        table.append({"features": p, "general_seconds": general, "rank_k_seconds": update,
                     "speedup": general / update, "max_relative_difference": diff})
    result = {"rows_per_gram": args.rows, "threads": args.threads, "repeats": args.repeats, "dtype": "float64",
              "rows": table, "machine": platform.processor() or platform.machine(), "torch": torch.__version__}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "ls_gram.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

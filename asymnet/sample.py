"""``python -m asymnet.sample RUN_DIR --steps 100000``: long-run stability of a trained operator.

Generate by cooling from p* (as at the end of training), then keep applying the T = 1 operator (or, with
``--chain heated``, the heated chain at the coldest level: walkback.heated_chain), and score the chains at
log-spaced steps (:mod:`asymnet.long_run` says what is stored and scored).
"""

from __future__ import annotations

import argparse

from asymnet.cli import add_common_arguments, run_command
from asymnet.long_run import STATIONARY_FIGURES, measure_long_run, rescore_long_run
from asymnet.metrics import quality
from asymnet.runlog import open_log


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m asymnet.sample", description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--steps", type=int, default=100000, help="T = 1 steps after generation (default 100000)")
    parser.add_argument("--chains", type=int, help="parallel chains (default: the study's evaluation.n_samples)")
    parser.add_argument("--chain", choices=("operator", "heated"),
                        help="operator: the T = 1 operator's own chain; heated: heat by the coldest level's noise "
                             "and walk back there (noise heating only; default: the study's "
                             "evaluation.long_run_chain)")
    parser.add_argument("--rescore", action="store_true",
                        help="score the long run stored in the log again with this version's figures, without "
                             "running the chain (--steps and --chains are then those stored)")
    parser.add_argument("--null-draws", type=int, default=quality.NULL_DRAWS,
                        help="toys: exact data draws behind the MMD^2 baseline and p-value "
                             f"(default {quality.NULL_DRAWS})")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.rescore:
        measurement = lambda: rescore_long_run(  # noqa: E731
            args.run_dir, args.data, args.device, args.seed, args.quiet, args.null_draws)
    else:
        measurement = lambda: measure_long_run(  # noqa: E731
            args.run_dir, args.steps, args.chains, args.data, args.device, args.seed, args.quiet, args.null_draws,
            args.chain)
    return run_command("asymnet.sample", lambda: printed_figures(args.run_dir, measurement()))


def printed_figures(run_dir, curves: dict[str, list[float]]) -> dict[str, float]:
    """What the command prints: each figure at the last stop, and the toys' baselines beside them."""
    figures = {f"long_run_{name}": values[-1] for name, values in curves.items()}
    with open_log(run_dir) as log:
        figures.update({name: float(log["eval"][name][()]) for name in ("long_run_mmd_baseline",
                        "long_run_mmd_baseline_stderr", "long_run_occupancy_tv_baseline",
                        *(f"stationary_{name}" for name in STATIONARY_FIGURES)) if name in log["eval"]})
    return figures


if __name__ == "__main__":
    raise SystemExit(main())

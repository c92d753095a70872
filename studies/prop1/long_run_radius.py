"""Where a 2-D ring toy's long-run chains ended: the share of them whose radius lies outside the data's range.

    python -m studies.prop1.long_run_radius RUN [RUN ...] [--step 100000]

For each run directory with a long run (``python -m asymnet.sample RUN --steps N``), it reads the chains
stored at ``--step`` under /samples/long_run/ and the data draws under /samples/data, and prints the 1, 50,
90, 99 and 100 % quantiles of the chains' distance from the origin and the share of chains beyond the data's
smallest and largest radius. On the mixture (a ring of modes around the origin) this separates chains that
wandered to where nothing trained the T = 1 operator from mass moved between the modes, which the occupancy
TV counts alike (every chain counts toward its nearest mode). Reads only; a second per run.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from asymnet.runlog import open_log


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m studies.prop1.long_run_radius",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--step", type=int, default=100000)
    args = parser.parse_args(argv)
    for run in args.runs:
        with open_log(run) as log:
            name = f"samples/long_run/step_{args.step:07d}"
            if name not in log:
                sys.exit(f"long_run_radius: {run} has no chains stored at step {args.step}; run "
                         f"python -m asymnet.sample {run} --steps {args.step}")
            chains = np.linalg.norm(log[name][()], axis=1)
            data = np.linalg.norm(log["samples/data"][()], axis=1)
        beyond = ((chains < data.min()) | (chains > data.max())).mean()
        quantiles = " / ".join(f"{q:.2f}" for q in np.quantile(chains, [0.01, 0.5, 0.9, 0.99, 1.0]))
        print(f"{run}: radius at step {args.step} (1/50/90/99/100 %) {quantiles}; data {data.min():.2f}-"
              f"{data.max():.2f}; beyond the data {100 * beyond:.1f} %")


if __name__ == "__main__":
    main()

"""How well a toy network's fixed expansion can hold the mixture's mode weights: fit the T = 1 readout by
exact least squares to a Langevin target at a cloud of anchor starts, then compute the chain's stationary law
on a grid (asymnet.metrics.stationary) and report its mode weights.

    python -m studies.prop1.anchor_stationary [--study studies/mog_prop1.yaml] [--seeds 0 1 2]
        [--hidden 512] [--target kernel|exact] [--wide 0.0] [--wide-noise 0.3] [--starts 100000]
        [--ridge 1e-6] [--json PATH]

No walk back and no optimiser: the readout is the least-squares optimum, so what this measures is what the
expansion and the choice of starts allow at best. The starts are the score anchor's (anchor.score_anchor_
pairs: data plus noise tau on [min std / sqrt 2, anchor.noise], density tau^-3); ``--wide F`` replaces
a fraction F of them by data plus Gaussian noise of sd ``--wide-noise``, which reaches the gaps between modes.
The target is the exact Langevin step of the training set's kernel density (bandwidth
anchor.bandwidth, as training uses) or, with ``--target exact``, of the toy's own density.
For each seed (the study's seed sets the random expansion) it prints the stationary law's mode weights, their
total-variation distance from the data's, the law's mean log p, and the time (fit plus grid solve).
``--json studies/prop1/results/anchor_stationary.jsonl`` appends them to the stored rows.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from asymnet import anchor
from asymnet.langevin import fit_readout
from asymnet.metrics import stationary
from asymnet.operators import Drive
from studies.prop1.common import fresh_toy_model

ROOT = Path(__file__).resolve().parents[2]


def fit_and_solve(study_path: str, seed: int, n_hidden: int, target: str, wide: float, wide_noise: float,
                  n_starts: int, ridge: float) -> dict:
    clock = time.perf_counter()
    study, gen, data, model = fresh_toy_model(study_path, [f"seed={seed}", f"network.n_hidden={n_hidden}"],
                                              "anchor_stationary")
    net, op = model.network, model.operator
    std = op.std(Drive(None, net.sigma.detach()), 1.0)
    rows = data.train[torch.randint(0, len(data.train), (n_starts,), generator=gen)].float()
    start, _ = anchor.score_anchor_pairs(rows, std, study.anchor.noise, gen)
    n_wide = int(wide * n_starts)
    start[:n_wide] = rows[:n_wide] + wide_noise * torch.randn(n_wide, 2, generator=gen)
    with torch.no_grad():
        if target == "kernel":
            reference = data.train.float()
            mean = torch.cat([anchor.kernel_langevin_step(chunk, reference, study.anchor.bandwidth,
                                                            std) for chunk in start.split(2000)]).double()
        else:
            mean = start.double() + 0.5 * std.double() ** 2 * data.toy.score(start.double())
    fit_readout(net, op, start, mean, ridge, ridge_per="diagonal")
    law = stationary.toy_stationary(net, op, data.toy)
    return {"seed": seed, "hidden": n_hidden, "target": target, "wide": wide, "wide_noise": wide_noise,
            "occupancy": [round(float(w), 4) for w in law["occupancy"]], "occupancy_tv": law["occupancy_tv"],
            "log_density": law["log_density"], "seconds": time.perf_counter() - clock}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studies.prop1.anchor_stationary",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--study", default=str(ROOT / "studies" / "mog_prop1.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--target", choices=["kernel", "exact"], default="kernel")
    parser.add_argument("--wide", type=float, default=0.0)
    parser.add_argument("--wide-noise", type=float, default=0.3)
    parser.add_argument("--starts", type=int, default=100_000)
    parser.add_argument("--ridge", type=float, default=1e-6)
    parser.add_argument("--json", help="append the rows, one JSON object per line, to this file")
    args = parser.parse_args(argv)
    if not 0.0 <= args.wide <= 1.0:
        parser.error(f"--wide is a fraction of the starts, in [0, 1]; got {args.wide}")
    for seed in args.seeds:
        row = fit_and_solve(args.study, seed, args.hidden, args.target, args.wide, args.wide_noise, args.starts,
                            args.ridge)
        print(f"seed {seed}, {args.hidden} hidden, {args.target} target, wide {args.wide:g} (sd {args.wide_noise:g}): "
              f"mode weights {row['occupancy']}, TV {row['occupancy_tv']:.4f}, mean log p {row['log_density']:.3f}, "
              f"{row['seconds']:.0f} s", flush=True)
        if args.json:
            with open(args.json, "a") as out:
                out.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

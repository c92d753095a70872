"""How well a trained toy run's T = 1 drift matches the data's Langevin drift, away from the data too, and
how well its fixed hidden expansion could match it.

    python -m studies.prop1.drift_tails RUN [RUN ...] [--widen 1 1.5 2 2.5] [--points 20000] [--fit]

Proposition 1's long run is decided where the data are scarce: the mode weights of a T = 1 chain are set
by how often chains cross between modes, and so by the drift in the tails and the gaps. For each run
directory (a finished 2-D toy run whose chain state is the visible units: fast hidden units or none) this
prints, at draws of the toy with its noise widened by each factor k (k = 1: the data's own law), the least-
squares slope of the learned drift m(x) - x on the exact Langevin drift (sigma^2 / 2) grad log p(x) and the
relative error ||drift - exact|| / ||exact|| (asymnet.metrics.quality.drift_agreement). ``--fit`` adds what
the run's fixed expansion allows: the same figures for the least-squares optimum, over the rates of the
run's network at T = 1 (visible and hidden) and a constant, of (a) the exact drift itself, fitted on
200,000 draws at k = 1 and 2, and (b) the targets of the score anchor (``anchor.weight``; 10^6 pairs from k = 1
draws, tau_max 0.5), which is what the anchor's term converges to with unlimited training.
Writes nothing; 1-2 min per run on 1 thread with ``--fit``.
"""

from __future__ import annotations

import argparse
import sys

import torch

from asymnet import anchor
from asymnet.langevin import drift_against_langevin
from asymnet.metrics.quality import drift_agreement
from asymnet.model import load_run
from asymnet.operators import Drive
from studies.prop1.common import widened


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m studies.prop1.drift_tails",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--widen", type=float, nargs="+", default=[1.0, 1.5, 2.0, 2.5])
    parser.add_argument("--points", type=int, default=20000)
    parser.add_argument("--fit", action="store_true")
    args = parser.parse_args(argv)
    for path in args.runs:
        trained = load_run(path)
        toy, net, op = trained.data.toy, trained.model.network.double(), trained.model.operator
        if toy is None or net.n_units != trained.data.n_visible:
            sys.exit(f"{path}: drift_tails needs a 2-D toy run whose chain state is the visible units")
        gen = torch.Generator().manual_seed(0)
        std = op.std(Drive(None, net.sigma.detach()), 1.0)
        points = {k: widened(toy, args.points, k, gen) for k in args.widen}

        def features(x):
            with torch.no_grad():
                return torch.cat([net.rates(x, 1.0), torch.ones(len(x), 1, dtype=x.dtype)], 1)

        def row(name, agreement_at):
            cells = []
            for k, x in points.items():
                agreement = agreement_at(x)
                cells.append(f"k={k:g}: slope {agreement['drift_slope']:.2f}, error {agreement['drift_relative_error']:.2f}")
            print(f"{path} {name}: " + " | ".join(cells), flush=True)

        def fitted(weights):
            return lambda x: drift_agreement(features(x) @ weights, 0.5 * std.pow(2) * toy.score(x))

        row("learned", lambda x: drift_against_langevin(net, op, toy, x))
        if not args.fit:
            continue
        ridge = 1e-10
        fit_x = torch.cat([widened(toy, 100_000, 1.0, gen), widened(toy, 100_000, 2.0, gen)])
        phi = features(fit_x)
        gram = phi.T @ phi + ridge * len(fit_x) * torch.eye(phi.shape[1], dtype=phi.dtype)
        best = torch.linalg.solve(gram, phi.T @ (0.5 * std.pow(2) * toy.score(fit_x)))
        row("least squares on the exact drift", fitted(best))
        gram, moment = 0.0, 0.0
        for _ in range(10):
            start, target = anchor.score_anchor_pairs(widened(toy, 100_000, 1.0, gen), std, 0.5, gen)
            phi = features(start)
            gram, moment = gram + phi.T @ phi, moment + phi.T @ (target - start)
        anchor_fit = torch.linalg.solve(gram + ridge * 1e6 * torch.eye(phi.shape[1], dtype=phi.dtype), moment)
        row("least squares on the anchor's targets", fitted(anchor_fit))


if __name__ == "__main__":
    main()

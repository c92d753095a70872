"""Train a toy study's fresh network on the score anchor's term alone, and score its T = 1 drift.

    python benchmarks/anchor_regression.py [--study studies/mog.yaml] [--steps 4000] [--set key=value ...]
        [--preconditioned LR [--ridge 1e-4]] [--long-run STEPS [--chains 1000]]

It separates two reasons a trained run's drift can be wrong: that first-order training of the fixed
expansion cannot reach the anchor's least-squares optimum in the run's number of steps, or that the walk
back's own terms pull the T = 1 drift elsewhere. The network, operator, data, batch size, learning rate and
cosine schedule are the study's (with ``--set`` applied); the loss is only ``walkback.score_anchor``'s term
(tau_max: the study's ``walkback.score_anchor_noise``), trained by the local rule with Adam. Four times
along the run it prints the drift's slope and relative error against the exact Langevin drift at the data
(k = 1) and at draws with the noise doubled (k = 2), as ``benchmarks/drift_tails.py`` does for a trained
run, whose ``--fit`` gives the anchor's least-squares optimum to compare. For studies/mog.yaml on 1 thread:
40 s for 4,000 steps, 99 s for 16,000.

With ``--set training.optimizer=least_squares`` the readout is trained by asymnet.readout's running least
squares instead of Adam (the study's ls_step, ls_memory and ls_damping), on the anchor's regression alone.
``--preconditioned LR`` replaces Adam by the same local update multiplied on the presynaptic side by
(C + ridge I)^-1 sigma^2 / alpha^2, C = E[r r^T] the second moment of the presynaptic rates (and a constant
1 for the bias) at the anchor's starts, estimated once from 200,000 starts (the fixed expansion makes it
constant): a Gauss-Newton step of the anchor's quadratic loss, with step size LR on a cosine schedule, as
recursive least squares (FORCE learning) whitens a readout's input. ``--long-run STEPS`` then runs 1,000
T = 1 chains of the trained operator from data draws and scores them at 10, 30, ..., STEPS steps as
``benchmarks/prop1_reference.py`` does (MMD^2 over baseline, occupancy TV, mean log p), so that the mode
weights a training rule gives can be read without the walk back.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the checkout's asymnet, installed or not
sys.path.insert(0, str(ROOT / "benchmarks"))


def main(argv=None) -> None:
    from drift_tails import widened
    from prop1_reference import fresh_toy_model, print_result, score_long_run

    from asymnet import plasticity, readout, walkback
    from asymnet.measure import drift_against_langevin
    from asymnet.operators import Drive

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default=str(ROOT / "studies" / "mog.yaml"))
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--preconditioned", type=float, metavar="LR")
    parser.add_argument("--ridge", type=float, default=1e-4)
    parser.add_argument("--long-run", type=int, metavar="STEPS")
    parser.add_argument("--chains", type=int, default=1000)
    args = parser.parse_args(argv)
    study, gen, data, model = fresh_toy_model(args.study, args.overrides, "anchor_regression")
    net, op, toy = model.network, model.operator, data.toy
    params = [p for p in (net.W, net.b, net.w_T) if p is not None]
    least_squares = study.training.optimizer == "least_squares"
    if least_squares and args.preconditioned is not None:
        parser.error("--preconditioned replaces Adam, and training.optimizer=least_squares replaces it too: give one")
    optimizer = (readout.LeastSquaresReadout(net, op, study.training.learning_rate, study.training.ls_step,
                                             study.training.ls_memory, study.training.ls_damping)
                 if least_squares else torch.optim.Adam(params, lr=study.training.learning_rate))
    std = op.std(Drive(None, net.sigma.detach()), 1.0)
    probes = {k: widened(toy, 20000, k, gen).float() for k in (1.0, 2.0)}
    v = data.n_visible
    if args.preconditioned is not None:
        with torch.no_grad():
            moment = 0.0
            for _ in range(20):
                rows = data.train[torch.randint(0, len(data.train), (10000,), generator=gen)]
                start, _ = walkback.score_anchor_pairs(data.batch(rows, gen, torch.float32), std,
                                                       study.walkback.score_anchor_noise, gen)
                rates = torch.cat([net.rates(start, 1.0), torch.ones(len(start), 1)], 1).double()
                moment = moment + rates.T @ rates / (20 * len(rates))
            whitening = torch.linalg.inv(moment + args.ridge * torch.eye(len(moment), dtype=moment.dtype)).float()
            whitening *= float(std.max()) ** 2 / op.alpha**2
    for step in range(1, args.steps + 1):
        schedule = 0.5 * (1 + math.cos(math.pi * (step - 1) / args.steps))
        for group in optimizer.param_groups:
            group["lr"] = study.training.learning_rate * schedule
        rows = data.train[torch.randint(0, len(data.train), (study.training.batch_size,), generator=gen)]
        start, target = walkback.score_anchor_pairs(data.batch(rows, gen, torch.float32), std,
                                                    study.walkback.score_anchor_noise, gen)
        optimizer.zero_grad()
        plasticity.write_gradients(net, plasticity.trajectory_update(net, op, [target, start], [1.0], None, False))
        if least_squares:
            optimizer.accumulate([readout.regression(net, op, [target, start], [1.0])])
        if args.preconditioned is None:
            optimizer.step()
        else:  # the visible readout (W[:v], b[:v]) only: the rest of the expansion is fixed
            with torch.no_grad():
                step_ = torch.cat([net.W.grad[:v], net.b.grad[:v, None]], 1) @ whitening
                net.W[:v] -= args.preconditioned * schedule * step_[:, :-1]
                net.b[:v] -= args.preconditioned * schedule * step_[:, -1]
        if step % max(args.steps // 4, 1) == 0 or step == args.steps:
            cells = []
            for k, x in probes.items():
                agreement = drift_against_langevin(net, op, toy, x)
                cells.append(f"k={k:g}: slope {agreement['drift_slope']:.2f}, error {agreement['drift_relative_error']:.2f}")
            print(f"step {step}: " + " | ".join(cells), flush=True)
    if args.long_run:
        with torch.no_grad():
            result = score_long_run(toy, lambda s, n: walkback.run_chain(net, op, s.float(), n, gen).double(),
                                    args.long_run, args.chains, gen)
        print_result(study.name, result)


if __name__ == "__main__":
    main()

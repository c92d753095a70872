"""Train a toy study's fresh network on the score anchor's term alone, and score its T = 1 drift.

    python -m studies.prop1.anchor_regression [--study studies/mog.yaml] [--steps 4000] [--set key=value ...]
        [--preconditioned LR [--ridge 1e-4]] [--kernel H] [--far TAU_FAR [--far-weight W]]
        [--long-run STEPS [--chains 1000]] [--save PATH]

It separates two reasons a trained run's drift can be wrong: that first-order training of the fixed
expansion cannot reach the anchor's least-squares optimum in the run's number of steps, or that the walk
back's own terms pull the T = 1 drift elsewhere. The network, operator, data, batch size, learning rate and
cosine schedule are the study's (with ``--set`` applied); the loss is only the score anchor's term
(``anchor.weight``; tau_max: the study's ``anchor.noise``), trained by the local rule with Adam. Four times
along the run it prints the drift's slope and relative error against the exact Langevin drift at the data
(k = 1) and at draws with the noise doubled (k = 2), as ``studies.prop1.drift_tails`` does for a trained
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
``studies.prop1.prop1_reference`` does (MMD^2 over baseline, occupancy TV, mean log p), so that the mode
weights a training rule gives can be read without the walk back.

Two ways to train the far field, where the chains of an exactly fitted readout strayed (studies/prop1_experiments.md).
``--far TAU_FAR`` adds a second batch of denoising pairs with tau on [anchor.noise, TAU_FAR]
(the same tau^-3 density), weighted by ``--far-weight`` (default: their share of the tau^-3 law on
[tau_min, TAU_FAR], so that the two batches together are that law's loss). ``--kernel H`` replaces every
target by the exact Langevin step of the training set's Gaussian kernel density of bandwidth H at the same
start (asymnet.anchor.kernel_langevin_step, as ``anchor.bandwidth`` does in training).
``--save PATH`` writes the trained network's state_dict.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from asymnet import anchor, plasticity, readout, walkback
from asymnet.langevin import drift_against_langevin
from asymnet.operators import Drive
from studies.prop1.common import fresh_toy_model, print_result, score_long_run, widened

ROOT = Path(__file__).resolve().parents[2]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m studies.prop1.anchor_regression",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--study", default=str(ROOT / "studies" / "mog.yaml"))
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--preconditioned", type=float, metavar="LR")
    parser.add_argument("--ridge", type=float, default=1e-4)
    parser.add_argument("--long-run", type=int, metavar="STEPS")
    parser.add_argument("--chains", type=int, default=1000)
    parser.add_argument("--far", type=float, metavar="TAU_FAR")
    parser.add_argument("--far-weight", type=float)
    parser.add_argument("--kernel", type=float, metavar="H",
                        help="targets: the exact Langevin step of the training set's Gaussian KDE of bandwidth H")
    parser.add_argument("--save", metavar="PATH", help="torch.save the trained network's state_dict there")
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
    if args.kernel:
        everything = data.batch(data.train, gen, torch.float32)

        def kde_step(x):
            return anchor.kernel_langevin_step(x, everything, args.kernel, std)
    if args.far:
        t_min, t_max = float(std.max()) / math.sqrt(2.0), study.anchor.noise
        far_weight = args.far_weight if args.far_weight is not None else (
            (t_max**-2 - args.far**-2) / (t_min**-2 - t_max**-2))
        print(f"far pairs: tau in [{t_max:g}, {args.far:g}], weight {far_weight:.3g}", flush=True)
    if args.preconditioned is not None:
        with torch.no_grad():
            moment = 0.0
            for _ in range(20):
                rows = data.train[torch.randint(0, len(data.train), (10000,), generator=gen)]
                start, _ = anchor.score_anchor_pairs(data.batch(rows, gen, torch.float32), std,
                                                     study.anchor.noise, gen)
                rates = torch.cat([net.rates(start, 1.0), torch.ones(len(start), 1)], 1).double()
                moment = moment + rates.T @ rates / (20 * len(rates))
            whitening = torch.linalg.inv(moment + args.ridge * torch.eye(len(moment), dtype=moment.dtype)).float()
            whitening *= float(std.max()) ** 2 / op.alpha**2
    for step in range(1, args.steps + 1):
        schedule = 0.5 * (1 + math.cos(math.pi * (step - 1) / args.steps))
        for group in optimizer.param_groups:
            group["lr"] = study.training.learning_rate * schedule
        rows = data.train[torch.randint(0, len(data.train), (study.training.batch_size,), generator=gen)]
        start, target = anchor.score_anchor_pairs(data.batch(rows, gen, torch.float32), std,
                                                  study.anchor.noise, gen)
        if args.kernel:
            target = kde_step(start)
        optimizer.zero_grad()
        update = plasticity.trajectory_update(net, op, [target, start], [1.0], None, False)
        terms = [readout.regression(net, op, [target, start], [1.0])] if least_squares else []
        if args.far:
            far_start, far_target = anchor.score_anchor_pairs(data.batch(rows, gen, torch.float32), std, args.far,
                                                              gen, tau_low=study.anchor.noise)
            if args.kernel:
                far_target = kde_step(far_start)
            update = anchor.add_anchor(update, plasticity.trajectory_update(
                net, op, [far_target, far_start], [1.0], None, False), far_weight)
            if least_squares:
                terms.append(readout.regression(net, op, [far_target, far_start], [1.0], weight=far_weight))
        plasticity.write_gradients(net, update)
        if least_squares:
            optimizer.accumulate(terms)
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
    if args.save:
        torch.save(net.state_dict(), args.save)
    if args.long_run:
        with torch.no_grad():
            result = score_long_run(toy, lambda s, n: walkback.run_chain(net, op, s.float(), n, gen).double(),
                                    args.long_run, args.chains, gen)
        print_result(study.name, result)


if __name__ == "__main__":
    main()

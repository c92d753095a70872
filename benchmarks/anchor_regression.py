"""Train a toy study's fresh network on the score anchor's term alone, and score its T = 1 drift.

    python benchmarks/anchor_regression.py [--study studies/mog.yaml] [--steps 4000] [--set key=value ...]

It separates two reasons a trained run's drift can be wrong: that first-order training of the fixed
expansion cannot reach the anchor's least-squares optimum in the run's number of steps, or that the walk
back's own terms pull the T = 1 drift elsewhere. The network, operator, data, batch size, learning rate and
cosine schedule are the study's (with ``--set`` applied); the loss is only ``walkback.score_anchor``'s term
(tau_max: the study's ``walkback.score_anchor_noise``), trained by the local rule with Adam. Four times
along the run it prints the drift's slope and relative error against the exact Langevin drift at the data
(k = 1) and at draws with the noise doubled (k = 2), as ``benchmarks/drift_tails.py`` does for a trained
run, whose ``--fit`` gives the anchor's least-squares optimum to compare. For studies/mog.yaml on 1 thread:
40 s for 4,000 steps, 99 s for 16,000.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the checkout's asymnet, installed or not


def main(argv=None) -> None:
    from asymnet import plasticity, walkback
    from asymnet import run as run_module
    from asymnet.data import load_dataset
    from asymnet.measure import drift_against_langevin
    from asymnet.operators import Drive
    from asymnet.study import load_study

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default=str(ROOT / "studies" / "mog.yaml"))
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    study = load_study(args.study, args.overrides)[0]
    gen = torch.Generator().manual_seed(study.seed)
    data = load_dataset(study.data.name, study.data.n_train, study.data.n_test, None, gen)
    if data.toy is None or study.network.kind != "recurrent":
        sys.exit("anchor_regression needs a 2-D toy study with network.kind: recurrent")
    model = run_module.build_model(study, data, torch.device("cpu"), torch.float32)
    net, op, toy = model.network, model.operator, data.toy
    params = [p for p in (net.W, net.b, net.w_T) if p is not None]
    optimizer = torch.optim.Adam(params, lr=study.training.learning_rate)
    std = op.std(Drive(None, net.sigma.detach()), 1.0)
    probes = {}
    for k in (1.0, 2.0):
        x = toy.sample(20000, gen)
        probes[k] = (x + toy.noise * (k * k - 1.0) ** 0.5 * torch.randn(x.shape, generator=gen, dtype=x.dtype)).float()
    for step in range(1, args.steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = study.training.learning_rate * 0.5 * (1 + math.cos(math.pi * (step - 1) / args.steps))
        rows = data.train[torch.randint(0, len(data.train), (study.training.batch_size,), generator=gen)]
        start, target = walkback.score_anchor_pairs(data.batch(rows, gen, torch.float32), std,
                                                    study.walkback.score_anchor_noise, gen)
        optimizer.zero_grad()
        plasticity.write_gradients(net, plasticity.trajectory_update(net, op, [target, start], [1.0], None, False))
        optimizer.step()
        if step % max(args.steps // 4, 1) == 0 or step == args.steps:
            cells = []
            for k, x in probes.items():
                agreement = drift_against_langevin(net, op, toy, x)
                cells.append(f"k={k:g}: slope {agreement['drift_slope']:.2f}, error {agreement['drift_relative_error']:.2f}")
            print(f"step {step}: " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()

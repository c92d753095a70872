"""Can a study's own network hold Proposition 1? Its fixed expansion, with the readout fitted to the exact
Langevin step, run through the long-run test.

    python -m studies.prop1.expansion_reference [--study studies/mog.yaml] [--set key=value ...]
        [--steps 100000] [--chains 1000]

The study's network is built as training builds it (same seed, so the same fixed hidden expansion); only its
visible readout W[:v], b[:v] is then set, by least squares, to the exact T = 1 Langevin step
x + (sigma^2 / 2) grad log p(x) of the toy (``asymnet.langevin.fit_readout_to_langevin``), at 100,000 data
draws, 100,000 draws with the noise doubled and 20,000 with it tripled (the gaps between modes). It prints
the fit's drift slope and relative error at draws widened by k = 1, 2, 2.5 (as ``studies.prop1.drift_tails``
scores a trained run), then runs ``--chains`` T = 1 chains of the fitted operator from data draws and scores
them at 10, 30, ..., ``--steps`` steps with the figures of ``studies.prop1.prop1_reference``: MMD^2 over its
data baseline (the bound is 3x), occupancy TV (with its data baseline) and mean log p. A pass here and a
failure of the trained run mean the failure is in training, not in what the network can represent.
Writes studies/prop1/results/expansion_reference.json. For studies/mog.yaml with a fixed sigma of 0.05:
about 5 minutes on 1 thread.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from asymnet import walkback
from asymnet.langevin import drift_against_langevin, fit_readout_to_langevin
from studies.prop1.common import fresh_toy_model, print_result, score_long_run, widened

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studies.prop1.expansion_reference",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--study", default=str(ROOT / "studies" / "mog.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--steps", type=int, default=100000)
    parser.add_argument("--chains", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(HERE / "results" / "expansion_reference.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    study, gen, data, model = fresh_toy_model(args.study, args.overrides, "expansion_reference")
    net, op, toy = model.network.double(), model.operator, data.toy
    fit_points = torch.cat([widened(toy, 100_000, 1.0, gen), widened(toy, 100_000, 2.0, gen),
                            widened(toy, 20_000, 3.0, gen)])
    fit_readout_to_langevin(net, op, toy, fit_points)
    drift = {k: drift_against_langevin(net, op, toy, widened(toy, 20_000, k, gen)) for k in (1.0, 2.0, 2.5)}
    print(f"{study.name}: least-squares readout, drift at k = 1 / 2 / 2.5: slope "
          + " / ".join(f"{d['drift_slope']:.2f}" for d in drift.values()) + ", relative error "
          + " / ".join(f"{d['drift_relative_error']:.2f}" for d in drift.values()), flush=True)
    net = net.float()
    result = score_long_run(toy, lambda s, n: walkback.run_chain(net, op, s.float(), n, gen).double(),
                            args.steps, args.chains, gen)
    print_result(f"{study.name} (n_hidden {study.network.n_hidden})", result)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"torch": torch.__version__, "threads": args.threads,
                                          "study": args.study, "overrides": args.overrides,
                                          "drift": {str(k): d for k, d in drift.items()}, **result}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

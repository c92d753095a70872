"""Time training updates of one 100-unit recurrent network against 16 replicas of it trained as one batch.

    python benchmarks/replicas.py [--replicas 16] [--batch-size 32 128] [--updates N] [--threads T]

The network: 2 visible + 98 slow hidden units (100 units, full W) on the spiral toy, local STDP rule,
float32, the default walkback schedule (settle 10 steps, n ~ U{0..4} extra steps, heating to T_max), as in
training between metric rows (no STDP-term diagnostics). Both go through asymnet.run.train_members (one
step of asymnet.run.train_step with the learning-rate schedule); with replicas the same code runs with a
leading replica axis, each replica with its own generator, so each equals the single run with its seed to
round-off. Same process, same warm-up, interleaved repeats (best of each kept); prints a table and writes
benchmarks/results/replicas.json. Target: 16 replicas in at most 3x the time of one.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent

STUDY = """\
seed: 0
replicas: {replicas}
data: {{name: spiral, n_train: 20000, n_test: 2000}}
network: {{kind: recurrent, n_hidden: 98}}
training: {{batch_size: {batch_size}, learning: local, dtype: float32}}
"""


def seconds_per_update(replicas: int, batch_size: int, updates: int, repeats: int) -> float:
    """Best over ``repeats`` of the mean wall time of ``updates`` training steps (after 3 warm-up steps)."""
    from asymnet import run
    from asymnet.model import build_model, build_replica_model, load_data
    from asymnet.study import parse_study

    cpu, dtype = torch.device("cpu"), torch.float32
    study = parse_study(STUDY.format(replicas=replicas, batch_size=batch_size))
    data = load_data(study, None)
    model = build_replica_model(study, data, None, cpu, dtype) if replicas > 1 else build_model(study, data, cpu, dtype)
    step = lambda i: run.train_members(model, study, data, cpu, dtype, i, with_terms=False)  # noqa: E731
    for i in range(1, 4):
        step(i)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(updates):
            step(4 + i)
        best = min(best, (time.perf_counter() - start) / updates)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=16)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for batch_size in args.batch_size:
        one = seconds_per_update(1, batch_size, args.updates, args.repeats)
        many = seconds_per_update(args.replicas, batch_size, args.updates, args.repeats)
        rows.append({"batch_size": batch_size, "seconds_per_update_1": one, f"seconds_per_update_{args.replicas}": many,
                     "time_ratio": many / one, "network_updates_per_second_1": 1 / one,
                     f"network_updates_per_second_{args.replicas}": args.replicas / many})
    print(f"100-unit recurrent network (2 visible + 98 slow hidden), local rule, float32, {args.threads} threads, "
          f"{args.updates} updates x {args.repeats} repeats (best)")
    print(f"{'batch':>6}{'ms/update, 1':>15}{f'ms/update, {args.replicas}':>16}{'time ratio':>12}"
          f"{'network updates/s, 1':>22}{f'network updates/s, {args.replicas}':>23}")
    for row in rows:
        print(f"{row['batch_size']:>6}{1000 * row['seconds_per_update_1']:>15.1f}"
              f"{1000 * row[f'seconds_per_update_{args.replicas}']:>16.1f}{row['time_ratio']:>12.2f}"
              f"{row['network_updates_per_second_1']:>22.1f}{row[f'network_updates_per_second_{args.replicas}']:>23.1f}")
    result = {"replicas": args.replicas, "threads": args.threads, "updates": args.updates, "repeats": args.repeats,
              "rows": rows, "target_time_ratio": 3.0, "machine": platform.processor() or platform.machine(),
              "torch": torch.__version__}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "replicas.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

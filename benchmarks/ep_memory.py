"""Peak memory of the streamed EP estimator: a 10^5-step chain against a 10^3-step one, MNIST network.

    python benchmarks/ep_memory.py [--chains 16] [--long 100000] [--short 1000] [--threads 2]

The network is the earlier mnist_stdp one (784 visible + 256 slow hidden units, Gaussian operator, tanh), with
random weights: memory does not depend on their values. Each chain length runs in its own
subprocess, so its peak resident memory (ru_maxrss) is that run's alone. The target: the long
chain's peak within 10% of the short one's. Prints a table, writes benchmarks/results/ep_memory.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def measure(n_steps: int, n_chains: int, threads: int) -> dict:
    from asymnet.metrics.balance import entropy_production
    from asymnet.networks.recurrent import RecurrentNetwork
    from asymnet.operators import GaussianOperator

    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    network = RecurrentNetwork(784, 256, "tanh", 0.05, True, 0.5, gen)
    operator = GaussianOperator(0.5, "sqrt_T")
    s0 = torch.rand(n_chains, network.n_units, generator=gen)
    clock = time.perf_counter()
    estimate = entropy_production(network, operator, s0, n_steps, burn_in=10, n_batches=20, generator=gen)
    seconds = time.perf_counter() - clock
    return {"n_steps": n_steps, "n_chains": n_chains, "seconds": seconds, "ep": estimate.ep,
            "ep_stderr": estimate.ep_stderr,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--long", type=int, default=100_000)
    parser.add_argument("--short", type=int, default=1_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.chains, args.threads)))
        return
    rows = []
    for n_steps in (args.short, args.long):
        out = subprocess.run([sys.executable, __file__, "--child", str(n_steps), "--chains", str(args.chains),
                              "--threads", str(args.threads)], check=True, capture_output=True, text=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    ratio = rows[1]["peak_rss_mib"] / rows[0]["peak_rss_mib"]
    print(f"{'steps':>8} {'chains':>7} {'seconds':>9} {'peak RSS MiB':>13} {'EP nats/step':>14}")
    for row in rows:
        print(f"{row['n_steps']:>8} {row['n_chains']:>7} {row['seconds']:>9.1f} {row['peak_rss_mib']:>13.1f} "
              f"{row['ep']:>9.3f} +- {row['ep_stderr']:.3f}")
    print(f"peak memory, long / short: {ratio:.3f} (target <= 1.10)")
    result = {"rows": rows, "ratio": ratio, "torch": torch.__version__, "machine": platform.machine(),
              "threads": args.threads}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "ep_memory.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

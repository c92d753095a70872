"""Chain-steps per second of the T = 1 chain: asymnet's fused sampler, the bare GEMM, and Brian2.

    python benchmarks/sampling.py [--sizes 100 1000 4000] [--chains 1 256] [--threads T] [--seconds S]
                                  [--brian numpy cython] [--device cpu|cuda]

One random recurrent network (N visible units, tanh, a log T input, the Gaussian operator, alpha 0.5)
per size N, all in one run so every comparison shares the machine's state:

- asymnet: ``ChainSampler.run`` (in-place rates, noise and GEMM; see asymnet/sampler.py), float32 and
  float64, with 1 and 256 chains;
- the GEMM bound: chains / (time of ``torch.mm`` of the (chains, N) rates by the (N, N) weights alone),
  the rate no sampler built on that GEMM can beat; the sampler's fraction of it is printed;
- Brian2 (float64, its default): ``asymnet.brian.export(...)`` on the numpy, cython and cpp_standalone
  targets, each in its own process, with 1 chain and with as many chains as fit (the block-diagonal
  synapses of many chains grow as chains x N^2; above 20 million synapses a size is skipped). A target
  that cannot run here (no compiler) prints why and is left out.

Each asymnet figure is the best of 3 timed repeats, each at least ``--seconds`` long, after a warm-up;
Brian2's code generation and compilation are excluded (see ``brian_rate``). Prints a table; writes benchmarks/results/sampling.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from asymnet.networks import RecurrentNetwork
from asymnet.operators import GaussianOperator
from asymnet.sampler import ChainSampler

HERE = Path(__file__).resolve().parent
BRIAN_MAX_SYNAPSES = 20_000_000  # chains x N^2 above this are skipped for Brian2 (memory and minutes per step)


def best_rate(run_steps, steps_per_call: int, chains: int, seconds: float, synchronize) -> float:
    """Chain-steps/s: the best of 3 repeats of calling ``run_steps`` until ``seconds`` have passed."""
    run_steps()
    synchronize()
    rates = []
    for _ in range(3):
        calls, start = 0, time.perf_counter()
        while True:
            run_steps()
            calls += 1
            synchronize()
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
        rates.append(calls * steps_per_call * chains / elapsed)
    return max(rates)


def network_of_size(n: int, dtype: torch.dtype, device: torch.device) -> tuple[RecurrentNetwork, GaussianOperator]:
    gen = torch.Generator().manual_seed(n)
    network = RecurrentNetwork(n, 0, "tanh", sigma_init=0.1, generator=gen, temperature_input=True)
    with torch.no_grad():
        network.b.normal_(0.0, 0.1, generator=gen)
        network.w_T.normal_(0.0, 0.1, generator=gen)
    return network.to(device=device, dtype=dtype), GaussianOperator(0.5)


def torch_rates(n: int, chains: int, dtype: torch.dtype, device: torch.device, seconds: float) -> dict:
    network, operator = network_of_size(n, dtype, device)
    start = torch.randn(chains, n, dtype=dtype, device=device, generator=torch.Generator(device).manual_seed(0))
    sampler = ChainSampler(network, operator, start, torch.Generator(device).manual_seed(1))
    steps = max(1, int(2e6 // (chains * n)))  # calls of about a millisecond or more: timer overhead negligible
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sampler_rate = best_rate(lambda: sampler.run(steps), steps, chains, seconds, sync)
    rates, weights, out = torch.tanh(start), network.W.detach().t().contiguous(), torch.empty_like(start)

    def gemm():
        for _ in range(steps):
            torch.mm(rates, weights, out=out)

    gemm_rate = best_rate(gemm, steps, chains, seconds, sync)
    return {"sampler": sampler_rate, "gemm_bound": gemm_rate, "fraction_of_gemm": sampler_rate / gemm_rate}


def brian_rate(n: int, chains: int, target: str, seconds: float) -> float:
    """Brian2 chain-steps/s. Every ``Network.run`` has a fixed cost (a garbage collection, ~0.4 s here), so
    the rate is the difference of a short and a long run: (n_long - n_short) / (t_long - t_short), both
    after a warm-up run that generates and compiles the code. cpp_standalone allows one run and reports
    the binary's own simulation time, which excludes compilation."""
    from asymnet import brian

    network, operator = network_of_size(n, torch.float64, torch.device("cpu"))
    simulation = brian.export(network, operator, n_chains=chains, target=target, seed=0)
    if target == "cpp_standalone":
        steps = max(10, int(seconds * 2e8 // (chains * n * n)))
        simulation.run(steps)
        return steps * chains / simulation.last_run_seconds
    simulation.run(2)
    short = 2
    simulation.run(short)
    t_short = simulation.last_run_seconds
    simulation.run(2 * short)
    per_step = max(simulation.last_run_seconds - t_short, 1e-6) / short  # to size the long run only
    long = short + max(short, int(seconds / per_step))
    simulation.run(long)
    return (long - short) * chains / (simulation.last_run_seconds - t_short)


def step_parts(n: int, chains: int, seconds: float) -> dict:
    """Microseconds per step of each part of a float32 sampler step with (chains, n) states: the normals
    (torch's ``normal_``), torch's ``tanh``, asymnet's tanh (2 sigmoid(2u) - 1) and the GEMM alone."""
    from asymnet.networks.activations import tanh

    gen = torch.Generator().manual_seed(0)
    s, out = torch.randn(chains, n, generator=gen), torch.empty(chains, n)
    weights = torch.randn(n, n, generator=gen) / n**0.5
    parts = {"normal_": lambda: out.normal_(generator=gen), "torch.tanh": lambda: torch.tanh(s, out=out),
             "asymnet tanh": lambda: tanh(s, out=out), "gemm": lambda: torch.mm(s, weights, out=out)}
    return {name: 1e6 * chains / best_rate(part, 1, chains, seconds, lambda: None) for name, part in parts.items()}


def brian_child(n: int, chains: int, target: str, seconds: float) -> float | None:
    """``brian_rate`` in a fresh process (cpp_standalone switches Brian2's global device; each target gets
    a clean Brian2 state); None, with the reason printed, where the target cannot run here."""
    command = [sys.executable, __file__, "--brian-child", target, str(n), str(chains), "--seconds", str(seconds)]
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode != 0:
        print(f"brian2-{target} N={n} chains={chains}: failed ({(out.stderr.strip().splitlines() or ['?'])[-1]})")
        return None
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 4000])
    parser.add_argument("--chains", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seconds", type=float, default=1.0, help="minimum length of each timed repeat")
    parser.add_argument("--brian", nargs="*", default=["numpy", "cython", "cpp_standalone"],
                        help="Brian2 targets (none: skip)")
    parser.add_argument("--brian-child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--parts", action="store_true",
                        help="only time the parts of one step (noise, tanh, GEMM) at 256 chains; writes "
                             "benchmarks/results/sampling_parts.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.brian_child:
        target, n, chains = args.brian_child
        print(brian_rate(int(n), int(chains), target, args.seconds))
        return
    if args.parts:
        parts = {n: step_parts(n, 256, args.seconds) for n in args.sizes}
        for n, row in parts.items():
            print(f"N={n:<6}256 chains, us per step: " + ", ".join(f"{k} {v:,.1f}" for k, v in row.items()))
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / "sampling_parts.json").write_text(json.dumps(
            {"threads": args.threads, "torch": torch.__version__, "us_per_step": parts}, indent=2) + "\n")
        return
    device = torch.device(args.device)
    rows = []
    for n in args.sizes:
        for chains in args.chains:
            for dtype in (torch.float32, torch.float64):
                figures = torch_rates(n, chains, dtype, device, args.seconds)
                rows.append({"engine": "asymnet", "dtype": str(dtype).removeprefix("torch."), "n_units": n,
                             "chains": chains, **figures})
                print(_line(rows[-1]), flush=True)
        if device.type != "cpu":
            continue
        for target in args.brian:
            for chains in [c for c in args.chains if c * n * n <= BRIAN_MAX_SYNAPSES]:
                rate = brian_child(n, chains, target, args.seconds)
                if rate is None:
                    continue
                rows.append({"engine": f"brian2-{target}", "dtype": "float64", "n_units": n, "chains": chains,
                             "sampler": rate})
                print(_line(rows[-1]), flush=True)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"{platform.processor() or platform.machine()}, {args.threads} threads"
    result = {"device": device_name, "torch": torch.__version__, "rows": rows, "seconds": args.seconds}
    (HERE / "results").mkdir(exist_ok=True)
    name = "sampling.json" if device.type == "cpu" else f"sampling_{device.type}.json"
    (HERE / "results" / name).write_text(json.dumps(result, indent=2) + "\n")
    print(f"device: {device_name}")


def _line(row: dict) -> str:
    text = f"{row['engine']:<22}{row['dtype']:<9}N={row['n_units']:<6}chains={row['chains']:<5}" \
           f"{_rate(row['sampler'])} chain-steps/s"
    if "gemm_bound" in row:
        text += f"   GEMM bound {_rate(row['gemm_bound'])}   {100 * row['fraction_of_gemm']:5.1f} % of it"
    return text


def _rate(value: float) -> str:
    return f"{value:>14,.0f}" if value >= 100 else f"{value:>14.3g}"


if __name__ == "__main__":
    main()

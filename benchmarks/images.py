"""Training and generation images/s of the CIFAR-10 operator (a U-Net) on the device it runs on, and
data-parallel training on 1 vs 2 processes.

    python benchmarks/images.py [--study studies/cifar10_vw30.yaml] [--device cpu|cuda] [--batch B]
                                [--steps N] [--autocast none|bf16|fp16] [--processes 1 2]

Training: ``asymnet.run.train_step`` (Algorithm 1: heating, the K-step walkback loss, backward, Adam) on
a global batch of B synthetic 8-bit images of CIFAR's shape (no data folder needed: the cost does not
depend on the pixels), after 2 warm-up steps. Generation: ``walkback.generate`` with the study's cooling
schedule (30 steps for cifar10_vw30) on B images. With ``--processes 1 2`` each count runs under
``torchrun`` (gloo on CPU, NCCL on GPU); the global batch stays B, so the figures compare the same work.
On a CPU the processes share the cores: one process uses every thread, N processes one 1/N each.
Prints a table and writes benchmarks/results/images_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the checkout's asymnet, installed or not


def synthetic_cifar(n: int, seed: int = 0):
    from asymnet.data import Dataset
    from asymnet.dequantization import DEQUANTIZED

    pixels = torch.randint(0, 256, (n, 3 * 32 * 32), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    return Dataset("cifar10", pixels, pixels[: n // 10], rescaling=DEQUANTIZED, image_shape=(3, 32, 32))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(args) -> dict:
    """Images/s of training (every process) and, on rank 0 alone, of generation."""
    from asymnet import distributed, run, walkback
    from asymnet.model import build_model, eval_temperatures
    from asymnet.study import load_study

    shard, device = distributed.start(args.device)
    if device.type == "cpu":
        torch.set_num_threads(max(1, args.threads // shard.world_size))
    study, _ = load_study(args.study, [f"training.batch_size={args.batch}", f"training.autocast={args.autocast}"])
    data = synthetic_cifar(max(4 * args.batch, 512))
    model = build_model(study, data, device, torch.float32, shard)
    for _ in range(2):
        run.train_step(model, study, data, device, torch.float32, with_terms=False)
    _sync(device)
    clock = time.perf_counter()
    for _ in range(args.steps):
        run.train_step(model, study, data, device, torch.float32, with_terms=False)
    _sync(device)
    train_seconds = (time.perf_counter() - clock) / args.steps
    result = {"processes": shard.world_size, "device": str(device), "batch": args.batch,
              "heating_steps": model.n_heating, "n_extra_max": study.walkback.n_extra_max,
              "parameters": sum(p.numel() for p in model.network.parameters()),
              "train_seconds_per_step": train_seconds, "train_images_per_s": args.batch / train_seconds}
    if shard.is_main:
        temperatures = eval_temperatures(model, study)
        gen = torch.Generator().manual_seed(1) if device.type == "cpu" else None
        with torch.no_grad(), torch.autocast(device.type, run.AUTOCAST_DTYPES.get(args.autocast, torch.bfloat16),
                                             enabled=args.autocast != "none"):
            walkback.generate(model.network, model.operator, model.p_star, temperatures, 8, gen)
            _sync(device)
            clock = time.perf_counter()
            walkback.generate(model.network, model.operator, model.p_star, temperatures, args.batch, gen)
            _sync(device)
        generate_seconds = time.perf_counter() - clock
        result.update(cooling_steps=len(temperatures), generate_images_per_s=args.batch / generate_seconds)
        if device.type == "cuda":
            result["gpu"] = torch.cuda.get_device_name(device)
            result["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    distributed.stop(shard)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default=str(HERE.parent / "studies" / "cifar10_vw30.yaml"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--autocast", default="none", choices=["none", "bf16", "fp16"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads in all")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = measure(args)
        if int(os.environ.get("RANK", "0")) == 0:
            print("RESULT " + json.dumps(result), flush=True)
        return
    rows = []
    for count in args.processes:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={count}",
                   __file__, "--worker", "--study", args.study, "--device", args.device, "--batch", str(args.batch),
                   "--steps", str(args.steps), "--autocast", args.autocast, "--threads", str(args.threads)]
        out = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if out.returncode != 0:
            raise SystemExit(f"{count} process(es) failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:]))
    first = rows[0]
    name = first.get("gpu", platform.processor() or platform.machine())
    print(f"study {args.study}: {first['parameters']:,} parameters, {first['heating_steps']} heating steps "
          f"(+ up to {first['n_extra_max']} at T = 1), global batch {args.batch}, autocast {args.autocast}, "
          f"{args.device} ({name}), {args.threads} CPU threads")
    print(f"{'processes':>10}{'train img/s':>14}{'s/step':>10}{'generate img/s':>17}")
    for row in rows:
        print(f"{row['processes']:>10}{row['train_images_per_s']:>14.1f}{row['train_seconds_per_step']:>10.3f}"
              f"{row['generate_images_per_s']:>17.1f}")
    result = {"study": args.study, "device": args.device, "device_name": name, "batch": args.batch,
              "autocast": args.autocast, "threads": args.threads, "rows": rows, "torch": torch.__version__}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"images_{args.device}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

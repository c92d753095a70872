"""Time one training update of a study's network, local STDP rule vs autograd, and their peak memory.

    python benchmarks/training.py [STUDY.yaml] [--updates N] [--threads T] [--device cpu|cuda] [--set KEY=VALUE]

Each mode runs in its own subprocess (so peak resident memory, ru_maxrss, is that mode's alone) on
synthetic 8-bit images of the study's shape (no data folder needed), after warm-up updates, from
the same seed; as in training between metric rows, the local rule skips its STDP-term diagnostics. Each
update is timed as a run's first updates run, so a term that a study starts later (the main study's negative
phase, ``walkback.contrast_start``) is left out; ``--set walkback.contrast_start=0`` times the updates with it. On a
GPU each update is timed to a ``torch.cuda.synchronize`` and the peak is the GPU memory torch allocated.
``--set`` overrides a study key as ``asymnet.run`` does (repeatable), so that two settings can be timed in
turn, e.g. the main study with and without its group normalisation (``--set network.conv_groups=0``). Prints a
table and writes benchmarks/results/training.json (training_cuda.json on a GPU).
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
sys.path.insert(0, str(HERE.parent))  # the checkout's asymnet, installed or not


def measure(study_path: str, learning: str, updates: int, threads: int, device_name: str = "cpu",
            overrides: tuple[str, ...] = ()) -> dict:
    from asymnet import run
    from asymnet.data import Dataset
    from asymnet.dequantization import DEQUANTIZED
    from asymnet.model import build_model
    from asymnet.study import NetworkConfig, load_study, replace_in

    torch.set_num_threads(threads)
    study, _ = load_study(study_path, overrides)
    learned = study.network.hidden_learning == "learned" or study.network.conv_channels
    if learning == "autograd" and learned and study.network.feedback != "transpose":
        # autograd's gradient is the transpose feedback's, the feedback keys of the local rule back at their defaults
        defaults = NetworkConfig()
        study = replace_in(study, "network", {"feedback": "transpose", "feedback_scale": defaults.feedback_scale,
                                              "feedback_decay": defaults.feedback_decay})
    study = replace_in(study, "training.learning", learning)
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (2000, 784), generator=gen, dtype=torch.uint8)
    data = Dataset("synthetic", pixels, pixels[:200], rescaling=DEQUANTIZED, image_shape=(1, 28, 28))
    device = torch.device(device_name)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    model = build_model(study, data, device, torch.float32)
    for _ in range(3):
        run.train_step(model, study, data, device, torch.float32, step=1)
    sync()
    start = time.perf_counter()
    for _ in range(updates):
        run.train_step(model, study, data, device, torch.float32, with_terms=False, step=1)
    sync()
    seconds = (time.perf_counter() - start) / updates
    row = {"learning": learning, "seconds_per_update": seconds, "device": device_name,
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "n_units": model.network.n_units, "batch_size": study.training.batch_size}
    if device.type == "cuda":
        row["gpu"] = torch.cuda.get_device_name(device)
        row["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", nargs="?", default=str(HERE.parent / "studies" / "mnist_stdp.yaml"))
    parser.add_argument("--updates", type=int, default=30)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a study key, as asymnet.run does (repeatable)")
    parser.add_argument("--child", choices=["local", "autograd"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.study, args.child, args.updates, args.threads, args.device,
                                 tuple(args.overrides))))
        return
    rows = []
    for learning in ("local", "autograd"):
        out = subprocess.run([sys.executable, __file__, args.study, "--updates", str(args.updates), "--threads",
                              str(args.threads), "--device", args.device, "--child", learning,
                              *(f"--set={o}" for o in args.overrides)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    local, autograd = rows
    ratio = autograd["seconds_per_update"] / local["seconds_per_update"]
    peak = "peak_gpu_mib" if args.device == "cuda" else "peak_rss_mib"
    overrides = "".join(f" --set {o}" for o in args.overrides)
    print(f"study {args.study}{overrides}: {local['n_units']} units, batch {local['batch_size']}, "
          f"{local.get('gpu', f'{args.threads} CPU threads')}, {args.updates} updates per mode")
    print(f"{'learning':<10}{'ms/update':>12}{'updates/s':>12}{'peak GPU MiB' if args.device == 'cuda' else 'peak RSS MiB':>15}")
    for row in rows:
        print(f"{row['learning']:<10}{1000 * row['seconds_per_update']:>12.1f}{1 / row['seconds_per_update']:>12.2f}"
              f"{row[peak]:>15.0f}")
    print(f"local rule speed-up over autograd: {ratio:.2f}x")
    result = {"study": args.study, "overrides": args.overrides, "device": args.device, "threads": args.threads, "updates": args.updates, "rows": rows,
              "speedup_local_over_autograd": ratio, "machine": platform.processor() or platform.machine(),
              "torch": torch.__version__}
    (HERE / "results").mkdir(exist_ok=True)
    name = "training_cuda.json" if args.device == "cuda" else "training.json"
    (HERE / "results" / name).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

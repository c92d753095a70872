"""The convolutional pathway's memory layout: one network call of a study's network per 1,000 rows, NCHW
against channels-last operands, at the chunk sizes the evaluation could use.

    python benchmarks/layout.py [STUDY.yaml] [--chunks 64 128 250 1000] [--threads T] [--repeats R]

The network is the study's, built untrained on synthetic 8-bit images of its shape (a call's cost does not
depend on the weights). The NCHW rows replace ``networks.pathway._channels_last``, which the pathway calls on
every operand of its convolutions, by the identity; the channels-last rows are the package as it is. The two
layouts alternate, chunk by chunk, so that both share the machine's state; each figure is the minimum over
``--repeats`` passes over 1,000 rows at temperature 2. Prints a table and writes benchmarks/results/layout.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the checkout's asymnet, installed or not

from asymnet.data import Dataset  # noqa: E402
from asymnet.dequantization import DEQUANTIZED  # noqa: E402
from asymnet.model import build_model  # noqa: E402
from asymnet.networks import pathway  # noqa: E402
from asymnet.study import load_study  # noqa: E402

LAYOUTS = {"nchw": lambda x: x, "channels_last": pathway._channels_last}


def seconds_per_1000_rows(network: torch.nn.Module, states: torch.Tensor, chunk: int) -> float:
    """One pass of ``network`` over the 1,000 rows of ``states`` in chunks of ``chunk`` rows, seconds."""
    start = time.perf_counter()
    for first in range(0, states.shape[0], chunk):
        network(states[first:first + chunk], 2.0)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", nargs="?", default=str(HERE.parent / "studies" / "mnist_stdp.yaml"))
    parser.add_argument("--chunks", type=int, nargs="+", default=[64, 128, 250, 1000])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    study, _ = load_study(args.study)
    pixels = torch.randint(0, 256, (1000, 784), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    data = Dataset("synthetic", pixels, pixels[:200], rescaling=DEQUANTIZED, image_shape=(1, 28, 28))
    model = build_model(study, data, torch.device("cpu"), torch.float32)
    if getattr(model.network, "pathway", None) is None:
        raise SystemExit(f"{args.study}: its network has no convolutional pathway (network.conv_channels); "
                         "give a study with one")
    states = data.batch(data.train, torch.Generator().manual_seed(1), torch.float32)
    best: dict[str, dict[int, float]] = {name: {} for name in LAYOUTS}
    with torch.no_grad():
        for _ in range(args.repeats):
            for chunk in args.chunks:
                for name, layout in LAYOUTS.items():
                    pathway._channels_last = layout
                    seconds_per_1000_rows(model.network, states[:chunk], chunk)  # warm-up
                    seconds = seconds_per_1000_rows(model.network, states, chunk)
                    best[name][chunk] = min(seconds, best[name].get(chunk, float("inf")))
    pathway._channels_last = LAYOUTS["channels_last"]
    print(f"study {args.study}: one network call per 1,000 rows, {args.threads} CPU threads, "
          f"min of {args.repeats}")
    print(f"{'rows per call':>14}{'NCHW ms':>10}{'channels-last ms':>18}{'speed-up':>10}")
    for chunk in args.chunks:
        nchw, last = best["nchw"][chunk], best["channels_last"][chunk]
        print(f"{chunk:>14}{1000 * nchw:>10.0f}{1000 * last:>18.0f}{nchw / last:>9.2f}x")
    result = {"study": args.study, "threads": args.threads, "repeats": args.repeats,
              "ms_per_1000_rows": {name: {str(c): 1000 * s for c, s in rows.items()} for name, rows in best.items()},
              "machine": platform.processor() or platform.machine(), "torch": torch.__version__}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "layout.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

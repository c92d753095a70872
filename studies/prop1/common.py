"""What the Proposition-1 scripts share: widened draws of a toy, a toy study's fresh model, and the long-run
test of a T = 1 chain with its printed summary."""

from __future__ import annotations

import sys
import time

import torch

from asymnet.data import load_dataset
from asymnet.long_run import log_spaced_steps
from asymnet.metrics.quality import NULL_DRAWS, mmd2_rbf, null_p_value, total_variation, toy_null
from asymnet.model import build_model
from asymnet.study import load_study


def widened(toy, n: int, k: float, generator: torch.Generator) -> torch.Tensor:
    """n draws of the toy with its noise multiplied by k: the data plus N(0, (k^2 - 1) noise^2)."""
    x = toy.sample(n, generator)
    return x + toy.noise * (k * k - 1.0) ** 0.5 * torch.randn(x.shape, generator=generator, dtype=x.dtype)


def fresh_toy_model(study_path: str, overrides: list[str], program: str):
    """(study, generator, data, model) of a 2-D toy study with a recurrent network, built as training builds
    them (the study's seed, so the same fixed hidden expansion), on the CPU in float32; exits otherwise."""
    study = load_study(study_path, overrides)[0]
    generator = torch.Generator().manual_seed(study.seed)
    data = load_dataset(study.data.name, study.data.n_train, study.data.n_test, None, generator)
    if data.toy is None or study.network.kind != "recurrent":
        sys.exit(f"{program} needs a 2-D toy study with network.kind: recurrent")
    return study, generator, data, build_model(study, data, torch.device("cpu"), torch.float32)


def score_long_run(toy, advance, n_steps: int, n_chains: int, generator: torch.Generator) -> dict:
    """Start n_chains chains at data draws, advance them (``advance(s, k)``: s after k more steps) to 10, 30,
    ..., n_steps steps and score each stop with the long run's figures; returns the baselines and the curve."""
    reference_occupancy = toy.reference_occupancy()
    held_out = toy.sample(n_chains, generator)
    exact = toy_null(toy, held_out, n_chains, NULL_DRAWS, generator)  # as the long run's baselines
    null, baseline_tv = exact["mmd"], exact["occupancy_tv"].mean().item()
    baseline_mmd = null.mean().item()
    s = toy.sample(n_chains, generator)
    rows, done, clock = [], 0, time.perf_counter()
    for stop in log_spaced_steps(n_steps):
        s = advance(s, stop - done)
        done = stop
        points = s.to(torch.float64)
        mmd = mmd2_rbf(points, held_out)
        rows.append({"step": stop, "mmd_over_baseline": mmd / baseline_mmd, "mmd_p_value": null_p_value(mmd, null),
                     "occupancy_tv": total_variation(toy.occupancy(points), reference_occupancy),
                     "mean_log_density": toy.log_density(points).mean().item()})
    return {"chains": n_chains, "steps": n_steps, "mmd_baseline": baseline_mmd,
            "occupancy_tv_baseline": baseline_tv, "data_mean_log_density": toy.log_density(held_out).mean().item(),
            "seconds": time.perf_counter() - clock, "curve": rows}


def print_result(label: str, result: dict) -> None:
    last = result["curve"][-1]
    print(f"{label} after {last['step']} steps: MMD^2 {last['mmd_over_baseline']:.2f} x "
          f"baseline; occupancy TV {last['occupancy_tv']:.3f} (data {result['occupancy_tv_baseline']:.3f}); "
          f"mean log p {last['mean_log_density']:.3f} (data {result['data_mean_log_density']:.3f}); "
          f"{result['seconds']:.0f} s", flush=True)
    print("        MMD^2 / baseline (p-value) by step: " + " ".join(
        f"{row['step']}:{row['mmd_over_baseline']:.2f} ({row['mmd_p_value']:.2f})" for row in result["curve"]),
        flush=True)

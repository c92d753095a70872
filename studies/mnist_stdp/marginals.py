"""Where does the cooling chain leave the states it was trained on? On a finished MNIST run, per step of the
evaluation schedule: the heated test digits' state s_t (the run's own heating kernel, 1,000 digits) beside
the generated chain's state at the same temperature (1,000 chains from p*, seed 1), as the mean pixel
value, the mean per-pixel variance across the batch, and the mean squared distance to the batch mean of
the other side (a two-sample energy figure: near the within-batch figure when the two sides agree).

    python -m studies.mnist_stdp.marginals RUN_DIR [GRID.png] [--matched]

GRID.png: ten chains' states at every step, hot (left) to cold (right). --matched: the generated chain's
noise above T = 1 scaled as reverse_noise's "matched above T = 1" generation scales it. Used for
studies/mnist_stdp_experiments.md.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from asymnet import walkback
from asymnet.model import eval_temperatures, load_run
from asymnet.plots import plot_image_grid
from studies.mnist_stdp import positional, run_script

USAGE = "python -m studies.mnist_stdp.marginals RUN_DIR [GRID.png] [--matched]"


@torch.no_grad()
def marginals(run, n: int = 1000, scale: dict | None = None):
    model, data = run.model, run.data
    net, op, v = model.network, model.operator, data.n_visible
    temps = eval_temperatures(model, run.study)
    g = torch.Generator().manual_seed(1)
    x = data.batch(data.test[:n], g, torch.float32)
    s0 = walkback.settle_hidden(net, op, x, run.study.walkback.settle_steps, g)
    heated = walkback.heating_trajectory(net, op, s0, temps, g, model.heating)
    s = model.p_star.sample(n, g)
    cooled = [None] * (len(temps) + 1)
    cooled[len(temps)] = s
    for t in range(len(temps), 0, -1):
        T = temps[t - 1]
        drive = net(s, T)
        s = op.mean(s, drive) + (scale or {}).get(T, 1.0) * op.std(drive, T) * torch.randn(s.shape, generator=g)
        cooled[t - 1] = s
    rows = []
    for t in range(len(temps), -1, -1):
        a, b = heated[t][:, :v], cooled[t][:, :v]
        cross = (b - a.mean(0)).pow(2).sum(1).mean().item()
        within = (a - a.mean(0)).pow(2).sum(1).mean().item()
        rows.append((temps[t - 1] if t else 0.0, a.mean().item(), b.mean().item(), a.var(0).mean().item(),
                     b.var(0).mean().item(), within, cross))
    return rows, cooled


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    matched = "--matched" in argv
    run_dir, grid = positional([a for a in argv if a != "--matched"], USAGE, ("RUN_DIR", str), ("GRID.png", str, None))
    run = load_run(run_dir)
    scale = None
    if matched:
        from studies.mnist_stdp.reverse_noise import error_ratios
        scale = {T: (error / variance) ** 0.5 for T, error, variance in error_ratios(run) if T > 1.0}
    rows, cooled = marginals(run, scale=scale)
    print("step T (0: the data end)  mean pixel heated / generated  variance heated / generated  "
          "distance to the heated mean: heated / generated")
    for T, ma, mb, va, vb, within, cross in rows:
        print(f"T {T:6.1f}  {ma:7.4f} {mb:7.4f}   {va:7.4f} {vb:7.4f}   {within:8.2f} {cross:8.2f}")
    if grid is not None:
        v = run.data.n_visible
        frames = np.stack([c[:10, :v].numpy() for c in reversed(cooled)], 1).reshape(-1, v)
        plot_image_grid(np.clip(frames, 0, 1), grid, n_cols=len(cooled))


if __name__ == "__main__":
    sys.exit(run_script("studies.mnist_stdp.marginals", main))

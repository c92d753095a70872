"""Is the walk back's noise level right at every temperature? On a finished MNIST run, per step t of the
evaluation schedule: the walk back's squared error per pixel, |s_{t-1} - mu(s_t)|^2, on heating trajectories
of 500 test digits (the run's own heating kernel), against the variance the operator draws with, std_t^2;
their ratio r_t is 1 where the learned noise level fits that temperature. Then generation (1,000 samples,
seed 1, the run's evaluation settings) with each cooling step's noise std multiplied by sqrt(r_t) ("matched"),
or only the steps above T = 1 so ("matched above T = 1"), beside the plain one, scored by the classifier figures.

    python -m studies.mnist_stdp.reverse_noise RUN_DIR [GRID.png]

Used for studies/mnist_stdp_experiments.md.
"""

from __future__ import annotations

import sys

import torch

from asymnet import walkback
from asymnet.evaluate import ImageScorer, mnist_classifier
from asymnet.model import eval_temperatures, generation_temperatures, load_run
from asymnet.plots import plot_image_grid
from studies.mnist_stdp import positional, run_script

USAGE = "python -m studies.mnist_stdp.reverse_noise RUN_DIR [GRID.png]"


@torch.no_grad()
def error_ratios(run, n: int = 500) -> list[tuple[float, float, float]]:
    """(T_t, walk-back squared error per pixel, operator variance per pixel) for t = 1..K."""
    model, data = run.model, run.data
    net, op, v = model.network, model.operator, data.n_visible
    g = torch.Generator().manual_seed(1)
    x = data.batch(data.test[:n], g, torch.float32)
    temps = eval_temperatures(model, run.study)
    s0 = walkback.settle_hidden(net, op, x, run.study.walkback.settle_steps, g)
    states = walkback.heating_trajectory(net, op, s0, temps, g, model.heating)
    rows = []
    for t, T in enumerate(temps, 1):
        drive = net(states[t], T)
        error = (states[t - 1][:, :v] - op.mean(states[t], drive)[:, :v]).pow(2).mean().item()
        variance = op.std(drive, T)[..., :v].pow(2).mean().item()
        rows.append((T, error, variance))
    return rows


@torch.no_grad()
def generate(run, scale: dict[float, float] | None = None, n: int = 1000, seed: int = 1,
             temperatures: list[float] | None = None, final_mean: bool | None = None) -> torch.Tensor:
    """Cooling from p* over ``temperatures`` (default: the run's generation schedule), the noise std at T
    multiplied by scale[T] (1 where absent), the last step's mean as the image when ``final_mean`` (default: the
    run's evaluation setting)."""
    model, study = run.model, run.study
    net, op = model.network, model.operator
    g = torch.Generator().manual_seed(seed)
    temps = generation_temperatures(model, study) if temperatures is None else temperatures
    s = model.p_star.sample(n, g)
    final_mean = study.evaluation.final_mean if final_mean is None else final_mean
    for i, T in enumerate(reversed(temps)):
        drive = net(s, T)
        last = i == len(temps) - 1
        lam = 0.0 if (last and final_mean) else (scale or {}).get(T, 1.0)
        s = op.mean(s, drive) + lam * op.std(drive, T) * torch.randn(s.shape, generator=g)
    return s[:, : run.data.n_visible]


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    run_dir, grid = positional(argv, USAGE, ("RUN_DIR", str), ("GRID.png", str, None))
    run = load_run(run_dir)
    rows = error_ratios(run)
    for T, error, variance in rows:
        print(f"T {T:6.1f}  error {error:.5f}  variance {variance:.5f}  ratio {error / variance:.3f}")
    scale = {}
    for T, error, variance in rows:  # one T appears several times at T = 1: keep the last (the step nearest data)
        scale[T] = (error / variance) ** 0.5
    scorer = ImageScorer.build(mnist_classifier(None, True), run.data, 1000)
    hot = {T: r for T, r in scale.items() if T > 1.0}  # the T = 1 steps keep their learned level
    for name, s in (("plain", None), ("matched", scale), ("matched above T = 1", hot)):
        images = generate(run, s)
        figures = scorer.figures(images)
        print(name, {k: round(v, 4) for k, v in figures.items()})
        if grid is not None and name == "matched above T = 1":
            plot_image_grid(images[:100].clamp(0, 1).numpy(), grid)


if __name__ == "__main__":
    sys.exit(run_script("studies.mnist_stdp.reverse_noise", main))

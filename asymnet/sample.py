"""``python -m asymnet.sample RUN_DIR --steps 100000``: long-run stability of a trained operator.

Generate by cooling from p* (as at the end of training), then keep applying the T = 1 operator.
At log-spaced steps (10, 30, 100, ..., ``--steps``) the visible states are stored under
``/samples/long_run/step_<n>`` and scored with the run's quality figures: MMD^2 to the data for toys
(with the data's own baseline) and ``occupancy_tv``, the total-variation distance between where the
chains sit (nearest mixture mode, or tenth of the curve) and where the data sits (with the TV of as many
data draws as its baseline), the classifier figures for MNIST, pixel-space MMD^2 to test images for
other image datasets. The curves go to
``/samples/long_run/<figure>`` (one value per stored step, steps in ``/samples/long_run/steps``), the
last step's figures to ``/eval/long_run_<figure>``, and a figure to ``RUN_DIR/long_run.png``.
Proposition 1 of the paper says a converged T = 1 chain keeps the data distribution: the curve shows
whether it does. Memory does not grow with the number of steps (only the current states are held).
"""

from __future__ import annotations

import argparse
import time

import torch
from tqdm import tqdm

from asymnet import plots, walkback
from asymnet.metrics import quality
from asymnet.runlog import add_results
from asymnet.trained import RunError, TrainedRun, add_common_arguments, load_run, log_spaced_steps, run_command


def quality_figures(trained: TrainedRun, visible: torch.Tensor, scorer) -> dict[str, float]:
    """The run's quality figures of generated visible states (n, n_visible): MMD^2 to the test data for
    toys and for images without a classifier (pixel space, images clamped to [0, 1]), the classifier
    figures for MNIST."""
    data = trained.data
    if data.toy is not None:
        reference, points = data.test[: len(visible)].to(torch.float64), visible.to(torch.float64)
        return {"mmd": quality.mmd2_rbf(visible, reference),
                "sample_log_density": data.toy.log_density(points).mean().item(),
                "occupancy_tv": quality.total_variation(data.toy.occupancy(points), data.toy.reference_occupancy())}
    if scorer is None:
        reference = data.test[: len(visible)].to(torch.float64) / 255.0
        return {"pixel_mmd": quality.mmd2_rbf(visible.clamp(0, 1).to(torch.float64), reference)}
    return scorer.figures(visible)


def image_scorer(trained: TrainedRun, data_dir: str | None, quiet: bool, n_reference_skip: int):
    """The MNIST classifier scorer for MNIST runs, None otherwise."""
    from asymnet.run import ImageScorer, has_classifier, mnist_classifier

    if not has_classifier(trained.data):
        return None

    return ImageScorer.build(mnist_classifier(data_dir, quiet), trained.data, n_reference_skip)


def long_run(trained: TrainedRun, n_steps: int, n_chains: int, generator: torch.Generator, scorer=None,
             quiet: bool = True):
    """Cool n_chains samples from p*, then run n_steps T = 1 steps; returns (steps, samples, curves):
    the stored steps, {step: visible states (n_chains, n_visible)} and {figure: [value per step]}."""
    from asymnet.run import eval_temperatures

    model, study, data = trained.model, trained.study, trained.data
    on = generator if trained.device.type == "cpu" else None
    stops = log_spaced_steps(n_steps)
    with torch.no_grad():
        s = walkback.generate(model.network, model.operator, model.p_star, eval_temperatures(model, study),
                              n_chains, on)
    samples, curves, done = {}, {}, 0
    bar = tqdm(total=n_steps, disable=quiet, unit="step", dynamic_ncols=True, desc="T = 1 chain")
    for stop in stops:
        s = walkback.run_chain(model.network, model.operator, s, stop - done, on)
        bar.update(stop - done)
        done = stop
        if not torch.isfinite(s).all():
            raise RunError(f"the T = 1 chain left the finite numbers by step {stop}; the operator is unstable "
                           "over long runs (a finding: report it with the run directory)")
        visible = s[:, : data.n_visible].cpu()
        samples[stop] = visible
        for name, value in quality_figures(trained, visible, scorer).items():
            curves.setdefault(name, []).append(value)
        bar.set_postfix({name: f"{values[-1]:.4g}" for name, values in curves.items()})
    bar.close()
    return stops, samples, curves


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m asymnet.sample", description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--steps", type=int, default=100000, help="T = 1 steps after generation (default 100000)")
    parser.add_argument("--chains", type=int, help="parallel chains (default: the study's evaluation.n_samples)")
    return parser.parse_args(argv)


def measure_long_run(run_dir, n_steps: int, n_chains: int | None = None, data_dir: str | None = None,
                     device: str = "cpu", seed: int = 0, quiet: bool = True) -> dict[str, list[float]]:
    """Run the long chain of the finished run in ``run_dir`` and write its results into the run's log."""
    if n_steps < 1:
        raise RunError(f"--steps must be a positive number of T = 1 steps, got {n_steps}")
    if n_chains is not None and n_chains < 2:
        raise RunError(f"--chains must be at least 2 (the quality figures compare distributions), got {n_chains}")
    trained = load_run(run_dir, data_dir, device)
    n_chains = n_chains or trained.study.evaluation.n_samples
    scorer = image_scorer(trained, data_dir, quiet, n_chains)
    clock = time.perf_counter()
    stops, samples, curves = long_run(trained, n_steps, n_chains, torch.Generator().manual_seed(seed), scorer, quiet)
    seconds = time.perf_counter() - clock
    stored = {"long_run/steps": torch.tensor(stops)}
    stored.update({f"long_run/step_{step:07d}": visible for step, visible in samples.items()})
    stored.update({f"long_run/{name}": torch.tensor(values, dtype=torch.float64) for name, values in curves.items()})
    evals = {f"long_run_{name}": values[-1] for name, values in curves.items()}
    evals["long_run_steps"] = float(n_steps)
    if trained.data.toy is not None:
        gen = torch.Generator().manual_seed(seed + 1)
        toy = trained.data.toy
        evals["long_run_mmd_baseline"] = quality.mmd2_rbf(toy.sample(n_chains, gen), toy.sample(n_chains, gen))
        evals["long_run_occupancy_tv_baseline"] = quality.total_variation(toy.occupancy(toy.sample(n_chains, gen)),
                                                                          toy.reference_occupancy())
    add_results(trained.log_path, evals=evals, samples=stored,
                attrs={"long_run": f"{n_chains} chains, {n_steps} T = 1 steps after cooling from p*, seed {seed}, "
                                   f"{seconds:.1f} s on {trained.device}"})
    plots.plot_long_run(trained.log_path, trained.run_dir / "long_run.png")
    return curves


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_command("asymnet.sample", lambda: {f"long_run_{name}": values[-1] for name, values in measure_long_run(
        args.run_dir, args.steps, args.chains, args.data, args.device, args.seed, args.quiet).items()})


if __name__ == "__main__":
    raise SystemExit(main())

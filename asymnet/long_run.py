"""The long run of a trained operator: Proposition 1 of the paper, measured.

Generate by cooling from p* (as at the end of training), then keep applying the T = 1 operator.
At log-spaced steps (10, 30, 100, ..., ``n_steps``) the visible states (with ``evaluation.final_mean``
the mean of each chain's last step instead, the image the cooling's last step gives) are stored under
``/samples/long_run/step_<n>`` and scored with the run's quality figures: MMD^2 to the test data for
toys and ``occupancy_tv``, the total-variation distance between where the chains sit (nearest mixture
mode, or tenth of the curve) and where the data sits; for MNIST the scorer's figures (evaluate.IMAGE_FIGURES:
the classifier figures, precision and recall, the distance to the nearest training image); pixel-space MMD^2
to test images for other image datasets. A toy's baselines are what an exact sampler scores: the same
figures of ``null_draws`` exact draws of as many points from the data's law (stored as
``/samples/long_run_null/<figure>``), averaged; against them each stop's MMD^2 gets a Monte-Carlo p-value
(``mmd_p_value``: the share of exact draws that score at least as badly). The curves go to
``/samples/long_run/<figure>`` (one value per stored step, steps in ``/samples/long_run/steps``), the
last step's figures to ``/eval/long_run_<figure>``, and a figure to ``RUN_DIR/long_run.png``.
Proposition 1 of the paper says a converged T = 1 chain keeps the data distribution: the curve shows
whether it does. A noise-heated run never scores its operator at T = 1; with ``evaluation.long_run_chain:
heated`` its long run is the chain that walk back was trained for instead (walkback.heated_chain: heat by the
coldest level's step, walk back at that level), whose stationary law is the data's where the walk back is
exact. For a 2-D toy whose chain state is its two coordinates, the chain's stationary law is also
computed outright on a grid (asymnet.metrics.stationary): ``/eval/stationary_occupancy_tv`` (where the law
puts its mass against the data, with no chain noise and no waiting for crossings), ``stationary_log_density``
and ``stationary_leak``; the law itself under ``/samples/stationary/``. Memory does not grow with the number
of steps (only the current states are held).
"""

from __future__ import annotations

import dataclasses
import time

import torch
from tqdm import tqdm

from asymnet import plots, walkback
from asymnet.errors import RunError
from asymnet.evaluate import ImageScorer, has_classifier, mnist_classifier, toy_mmd_figures
from asymnet.metrics import quality, stationary
from asymnet.model import (TrainedRun, cooling_corrector, eval_temperatures, load_run, sampling_autocast,
                           sampling_generator, sampling_precision)
from asymnet.operators import GaussianOperator
from asymnet.runlog import add_results, open_log
from asymnet.study import replace_in


def log_spaced_steps(n_steps: int) -> list[int]:
    """10, 30, 100, 300, ... up to and including ``n_steps`` (n_steps itself ends the list)."""
    if n_steps < 1:
        raise RunError(f"the number of steps must be a positive integer, got {n_steps}")
    steps, decade = [], 1
    while True:
        for mantissa in (1, 3):
            step = mantissa * 10**decade
            if step >= n_steps:
                return steps + [n_steps]
            steps.append(step)
        decade += 1


def quality_figures(trained: TrainedRun, visible: torch.Tensor, scorer) -> dict[str, float]:
    """The run's quality figures of generated visible states (n, n_visible): MMD^2 to the test data for
    toys and for images without a classifier (pixel space, images clamped to [0, 1]), the scorer's
    IMAGE_FIGURES for MNIST."""
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
    if not has_classifier(trained.data):
        return None

    return ImageScorer.build(mnist_classifier(data_dir, quiet), trained.data, n_reference_skip)


def chain_level(trained: TrainedRun) -> float | None:
    """The level T_1 of the heated chain (``evaluation.long_run_chain: heated``, walkback.heated_chain): the
    coldest level of the schedule, at which the walk back's target is the data; None for the T = 1
    operator's own chain."""
    if trained.study.evaluation.long_run_chain != "heated":
        return None
    return eval_temperatures(trained.model, trained.study)[0]


def chain_description(trained: TrainedRun, n_chains: int, n_steps: int) -> str:
    """How many chains ran which steps, for the log's ``long_run`` attribute."""
    level = chain_level(trained)
    steps = "T = 1 steps" if level is None else f"heated steps at T_1 = {level:g}"
    cooled = " (its network calls in bfloat16)" if sampling_precision(trained.study, trained.device) == "bfloat16" else ""
    return f"{n_chains} chains, {n_steps} {steps} after cooling from p*{cooled}"


def long_run(trained: TrainedRun, n_steps: int, n_chains: int, generator: torch.Generator, scorer=None,
             quiet: bool = True):
    """Cool n_chains samples from p*, then run n_steps T = 1 steps (with ``evaluation.long_run_chain: heated``
    steps of the heated chain at the coldest level, :func:`chain_level`); returns (steps, samples, curves):
    the stored steps, {step: visible states (n_chains, n_visible)} and {figure: [value per step]}. With
    ``evaluation.final_mean`` the samples are each chain's last step's mean, the chain's random numbers
    unchanged (its draws too, up to the fused sampler's rounding): the curve then reads the chain as the cooled
    samples are read."""
    model, study, data = trained.model, trained.study, trained.data
    on = sampling_generator(generator, trained.device)
    stops = log_spaced_steps(n_steps)
    with torch.no_grad(), sampling_autocast(study, trained.device):
        s = walkback.generate(model.network, model.operator, model.p_star, eval_temperatures(model, study),
                              n_chains, on, corrector=cooling_corrector(model, study))
    samples, curves, done = {}, {}, 0
    heated = chain_level(trained)
    readout = study.evaluation.final_mean
    bar = tqdm(total=n_steps, disable=quiet, unit="step", dynamic_ncols=True,
               desc="T = 1 chain" if heated is None else f"heated chain at T = {heated:g}")
    for stop in stops:
        n = stop - done - (1 if readout else 0)  # with the readout, the stop's last step runs below
        if heated is None:
            s = walkback.run_chain(model.network, model.operator, s, n, on)
        else:
            s = walkback.heated_chain(model.network, model.operator, model.heating, s, n, heated, on)
        image = s
        if readout:
            s, image = _step_with_mean(trained, s, heated, on)
        bar.update(stop - done)
        done = stop
        if not torch.isfinite(s).all():
            raise RunError(f"the T = 1 chain left the finite numbers by step {stop}; the operator is unstable "
                           "over long runs (a finding: report it with the run directory)")
        visible = image[:, : data.n_visible].cpu()
        samples[stop] = visible
        for name, value in quality_figures(trained, visible, scorer).items():
            curves.setdefault(name, []).append(value)
        bar.set_postfix({name: f"{values[-1]:.4g}" for name, values in curves.items()})
    bar.close()
    return stops, samples, curves


@torch.no_grad()
def _step_with_mean(trained: TrainedRun, s: torch.Tensor, heated: float | None, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the long run's chain from s, as walkback.run_chain (``heated`` None) or walkback.heated_chain
    at T = ``heated`` takes it, drawing the same random numbers: (the draw, the mean of its step), the
    mean being the image ``evaluation.final_mean`` reads, as the cooling's last step does."""
    model = trained.model
    T = 1.0 if heated is None else heated
    if heated is not None:
        s = model.heating.heat(model.operator, s, T, generator)
    drive = model.network(s, T)
    return model.operator.sample(s, drive, T, generator), walkback.operator_mean(model.operator, s, drive, T)


def measure_long_run(run_dir, n_steps: int, n_chains: int | None = None, data_dir: str | None = None,
                     device: str = "cpu", seed: int = 0, quiet: bool = True,
                     null_draws: int = quality.NULL_DRAWS, chain: str | None = None) -> dict[str, list[float]]:
    """Run the long chain of the finished run in ``run_dir`` and write its results into the run's log.
    For toys the MMD^2 baseline and the occupancy baseline are the means over ``null_draws`` exact draws
    (``quality.toy_null``), whose MMD^2 figures also give each stop a Monte-Carlo p-value (``mmd_p_value``).
    ``chain`` (operator or heated) overrides the study's ``evaluation.long_run_chain``."""
    if n_steps < 1:
        raise RunError(f"--steps must be a positive number of T = 1 steps, got {n_steps}")
    _check_null_draws(null_draws)
    if n_chains is not None and n_chains < 2:
        raise RunError(f"--chains must be at least 2 (the quality figures compare distributions), got {n_chains}")
    trained = load_run(run_dir, data_dir, device)
    if chain is not None:
        trained = dataclasses.replace(trained, study=replace_in(trained.study, "evaluation.long_run_chain", chain))
    n_chains = n_chains or trained.study.evaluation.n_samples
    scorer = image_scorer(trained, data_dir, quiet, n_chains)
    clock = time.perf_counter()
    stops, samples, curves = long_run(trained, n_steps, n_chains, torch.Generator().manual_seed(seed), scorer, quiet)
    description = (f"{chain_description(trained, n_chains, n_steps)}, seed {seed}, "
                   f"{time.perf_counter() - clock:.1f} s on {trained.device}")
    if trained.study.evaluation.final_mean:
        description += "; images: each chain's last step's mean (evaluation.final_mean)"
    return _store_long_run(trained, stops, samples, curves, description, seed, null_draws, scorer)


def rescore_long_run(run_dir, data_dir: str | None = None, device: str = "cpu", seed: int = 0, quiet: bool = True,
                     null_draws: int = quality.NULL_DRAWS) -> dict[str, list[float]]:
    """Score the long run already stored in ``run_dir``'s log again with this version's figures (a log
    written before the toy baselines came from many exact draws gets them, and a toy's end-of-training
    ``mmd_baseline`` and ``mmd_p_value`` too), without running the chain; the stored states and steps are kept. ``seed`` seeds
    the long run's exact draws (seed + 1, as in a long run)."""
    _check_null_draws(null_draws)
    trained = load_run(run_dir, data_dir, device)
    with open_log(trained.log_path) as log:
        if "samples/long_run/steps" not in log:
            raise RunError(f"{run_dir} has no long run to rescore; run one first: "
                           f"python -m asymnet.sample {run_dir} --steps 100000")
        stops = [int(step) for step in log["samples/long_run/steps"][()]]
        samples = {step: torch.from_numpy(log[f"samples/long_run/step_{step:07d}"][()]) for step in stops}
        earlier = str(log.attrs.get("long_run", "")).split("; ")[0]
        n_final = log["samples/final"].shape[0]  # the end of training's samples, scored against test[:n_final]
        end_mmd = float(log["eval/mmd"][()]) if "eval/mmd" in log else None
    scorer = image_scorer(trained, data_dir, quiet, len(samples[stops[0]]))
    curves = {}
    for step in stops:
        for name, value in quality_figures(trained, samples[step], scorer).items():
            curves.setdefault(name, []).append(value)
    if trained.data.toy is not None:  # the end of training's baseline, as training now computes it
        reference = trained.data.test[:n_final].to(torch.float64)
        add_results(trained.log_path, evals=toy_mmd_figures(trained.study, trained.data, reference, end_mmd))
    return _store_long_run(trained, stops, samples, curves, f"{earlier}; rescored", seed, null_draws, scorer)


def _check_null_draws(null_draws: int) -> None:
    if null_draws < 1:
        raise RunError(f"--null-draws must be a positive number of exact data draws, got {null_draws}")


def _store_long_run(trained: TrainedRun, stops: list[int], samples: dict, curves: dict, description: str,
                    seed: int, null_draws: int, scorer=None) -> dict[str, list[float]]:
    """Add the toys' exact-draw baselines and p-values to the curves, write everything into the log (the
    states, the curves, the last stop's figures under /eval), draw long_run.png; returns the curves.

    For images, the first n_chains of the end of training's cooled samples (/samples/final) are scored as the
    chains are (/eval/long_run_cooled_<figure>): the reference of the same size that the curve's figures are
    read against, as a Fréchet distance or a recall on 50 images reads worse than on 1,000 of the same law."""
    n_chains = len(samples[stops[-1]])
    if trained.data.toy is not None:
        reference = trained.data.test[:n_chains].to(torch.float64)  # as quality_figures scores the chains
        null = quality.toy_null(trained.data.toy, reference, n_chains, null_draws,
                                torch.Generator().manual_seed(seed + 1))
        curves["mmd_p_value"] = [quality.null_p_value(value, null["mmd"]) for value in curves["mmd"]]
        description += f"; toy baselines and p-values from {null_draws} exact data draws"
    stored = {"long_run/steps": torch.tensor(stops)}
    stored.update({f"long_run/step_{step:07d}": visible for step, visible in samples.items()})
    stored.update({f"long_run/{name}": torch.tensor(values, dtype=torch.float64) for name, values in curves.items()})
    evals = {f"long_run_{name}": values[-1] for name, values in curves.items()}
    evals["long_run_steps"] = float(stops[-1])
    cooled = _cooled_reference(trained, n_chains)
    if cooled is not None:
        evals.update({f"long_run_cooled_{name}": value for name, value in quality_figures(trained, cooled, scorer).items()})
        description += f"; cooled reference: the first {n_chains} of samples/final, scored as the chains are"
    if trained.data.toy is not None:
        evals["long_run_mmd_baseline"] = null["mmd"].mean().item()
        if null_draws > 1:  # the baseline's own standard error: the spread of the draws over sqrt(draws)
            evals["long_run_mmd_baseline_stderr"] = (null["mmd"].std() / null_draws**0.5).item()
        evals["long_run_occupancy_tv_baseline"] = null["occupancy_tv"].mean().item()
        stored.update({f"long_run_null/{name}": values for name, values in null.items()})
        try:
            law = toy_stationary_law(trained)
        except stationary.GridError as error:  # the long run's own figures are kept; the note says why
            law = None
            description += f"; no stationary law: {error}"
        if law is not None:
            evals.update({f"stationary_{name}": law[name] for name in STATIONARY_FIGURES})
            stored.update({"stationary/law": torch.from_numpy(law["law"]),
                           "stationary/occupancy": torch.from_numpy(law["occupancy"]),
                           "stationary/box_and_cell": torch.tensor([*law["box"], law["cell"]], dtype=torch.float64)})
            description += f"; stationary law on a {law['law'].shape[0]}^2 grid of cell {law['cell']:.3g}"
    # An earlier long run's entries go first: its states at steps this run does not stop at, its null draws
    # (a run scored on an image model has none), and its law, which would no longer be this operator's.
    stale = ("samples/long_run", "samples/long_run_null")
    if "stationary/law" not in stored:
        stale += ("samples/stationary", *(f"eval/stationary_{name}" for name in STATIONARY_FIGURES))
    add_results(trained.log_path, evals=evals, samples=stored, attrs={"long_run": description}, remove=stale)
    plots.plot_long_run(trained.log_path, trained.run_dir / "long_run.png")
    return curves


def _cooled_reference(trained: TrainedRun, n: int) -> torch.Tensor | None:
    """The first n of an image run's end-of-training samples (/samples/final), None for a toy or a log that
    holds fewer."""
    if trained.data.toy is not None:
        return None
    with open_log(trained.log_path) as log:
        if "samples/final" not in log or log["samples/final"].shape[0] < n:
            return None
        return torch.from_numpy(log["samples/final"][:n])


STATIONARY_FIGURES = ("occupancy_tv", "log_density", "leak")
"""The grid law's figures a long run writes as /eval/stationary_<figure>."""


def toy_stationary_law(trained: TrainedRun) -> dict | None:
    """The T = 1 chain's stationary law computed on a grid (asymnet.metrics.stationary) for a 2-D toy whose
    chain state is its two coordinates and whose operator is Gaussian; None for any other run."""
    model = trained.model
    if (trained.data.toy is None or model.network.n_units != trained.data.n_visible
            or not isinstance(model.operator, GaussianOperator)):
        return None
    return stationary.toy_stationary(model.network, model.operator, trained.data.toy)

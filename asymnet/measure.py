"""``python -m asymnet.measure RUN_DIR``: likelihood and detailed-balance violation of a trained operator.

- Likelihood of held-out data (paper eqs. 5 and 10): the variational bound and the importance-sampled
  log-likelihood with M heating trajectories per example, of the visible units (hidden units are
  integrated out by importance sampling, :func:`asymnet.metrics.likelihood.visible_importance_estimate`),
  in nats and, for images, in bits/dim on the 8-bit scale (dequantisation and rescaling included);
  beside them the exact bits/dim of a full-covariance Gaussian fitted to the training set.
- Detailed-balance violation (sec. 3.1): EP per step of the stationary T = 1 chain, with its batch-means
  standard error, and the relative irreversibility EP / H (H the conditional entropy of one step). For
  images H is put on the 8-bit scale of the visible units (bins of 1/256 of the [0, 1] range); hidden
  units stay differential. For toys H is differential, so the ratio is reported only where H > 0.
- For 2-D toys (exact score): the learned T = 1 drift against the Langevin drift that keeps the data's law,
  its slope and relative error (``langevin_drift_slope``, ``langevin_drift_relative_error``).

Everything goes into the run's log under ``/eval`` (names below), with the conventions as root
attributes, written atomically.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from tqdm import tqdm

from asymnet.dequantization import bits_per_dim
from asymnet.langevin import drift_against_langevin
from asymnet.metrics import likelihood
from asymnet.operators import GaussianOperator
from asymnet.runlog import add_results
from asymnet.cli import add_common_arguments, run_command
from asymnet.errors import RunError
from asymnet.evaluate import detailed_balance
from asymnet.model import TrainedRun, eval_temperatures, load_run, sampling_generator

EP_CONVENTION = ("EP = mean over stationary T = 1 chains of log p(s'|s) - log p(s|s'), nats per step, full state "
                 "(visible and hidden); H = mean of -log p(s'|s), plus n_visible * log(256) for 8-bit images "
                 "(visible units on the 8-bit scale, hidden units differential); relative irreversibility = EP / H; "
                 "stderr by batch means over (chain, batch) pairs")


def held_out_likelihood(trained: TrainedRun, n_examples: int, n_trajectories: int, generator: torch.Generator,
                        batch: int = 10, quiet: bool = True) -> dict[str, float]:
    """Mean bound and IS log-likelihood (nats, and bits/dim for images) over the first n_examples test points."""
    model, study, data = trained.model, trained.study, trained.data
    dtype = getattr(torch, study.training.dtype)
    on = sampling_generator(generator, trained.device)
    temperatures = eval_temperatures(model, study)
    rows = data.test[:n_examples]
    bounds, estimates, errors = [], [], []
    for start in tqdm(range(0, len(rows), batch), disable=quiet, unit="batch", desc="likelihood", dynamic_ncols=True):
        x = data.batch(rows[start:start + batch], generator, dtype).to(trained.device)
        figure = likelihood.visible_importance_estimate(model.network, model.operator, model.p_star, x, temperatures,
                                                        n_trajectories, on, study.walkback.settle_steps,
                                                        heating=model.heating)
        bounds.append(figure.variational_bound.cpu())
        estimates.append(figure.log_likelihood.cpu())
        errors.append(figure.standard_error.cpu())
    bound, estimate = torch.cat(bounds).double(), torch.cat(estimates).double()
    figures = {"test_bound_nats": bound.mean().item(), "test_is_nats": estimate.mean().item(),
               "test_is_nats_stderr": (estimate.std() / math.sqrt(len(estimate))).item()}
    if data.rescaling is not None:
        figures["test_bound_bits_per_dim"] = bits_per_dim(bound, data.n_visible, data.rescaling).mean().item()
        figures["test_is_bits_per_dim"] = bits_per_dim(estimate, data.n_visible, data.rescaling).mean().item()
        figures["test_is_bits_per_dim_stderr"] = figures["test_is_nats_stderr"] / (data.n_visible * math.log(2))
    return figures


def gaussian_reference(trained: TrainedRun, generator: torch.Generator) -> dict[str, float]:
    """Bits/dim of a full-covariance Gaussian fitted to the training images, on the test images."""
    data = trained.data
    if data.rescaling is None or data.binarized:
        return {}
    return {"gaussian_reference_bits_per_dim": likelihood.gaussian_reference_bits_per_dim(
        data.train, data.test, data.rescaling, generator)}


def langevin_drift(trained: TrainedRun, n_points: int) -> dict[str, float]:
    """For a 2-D toy, whose score is exact: the learned T = 1 drift m(x) - x against the Langevin drift
    (sigma^2 / 2) grad log p(x) that keeps the data's law (to first order in sigma) under a Gaussian step of
    per-unit std sigma, at n_points held-out data points (quality.drift_agreement). Proposition 1 asks for
    that drift; its slope sets how wide the chain's modes come out, and so how often chains cross between
    them. Only where the chain's state is the visible units alone (no slow hidden units); else nothing."""
    data, model = trained.data, trained.model
    if data.toy is None or model.network.n_units != data.n_visible or not isinstance(model.operator, GaussianOperator):
        return {}
    x = data.test[:n_points].to(device=trained.device, dtype=next(model.network.parameters()).dtype)
    figures = drift_against_langevin(model.network, model.operator, data.toy, x)
    return {f"langevin_{name}": value for name, value in figures.items()}


def measure(run_dir, n_examples: int = 1000, n_trajectories: int = 100, ep_chains: int = 100, ep_steps: int = 10000,
            ep_burn_in: int = 1000, data_dir: str | None = None, device: str = "cpu", seed: int = 0,
            quiet: bool = True) -> dict[str, float]:
    """Every figure of this module for the finished run in ``run_dir``, written into its log."""
    for name, value, least in [("--n", n_examples, 1), ("--trajectories", n_trajectories, 1),
                               ("--ep-chains", ep_chains, 2), ("--ep-steps", ep_steps, 1), ("--ep-burn-in", ep_burn_in, 0)]:
        if value < least:
            raise RunError(f"{name} must be an integer >= {least}, got {value}")
    trained = load_run(run_dir, data_dir, device)
    gen = torch.Generator().manual_seed(seed)
    figures, seconds = {}, {}
    for name, measurement in [
        ("likelihood", lambda: held_out_likelihood(trained, n_examples, n_trajectories, gen, quiet=quiet)),
        ("detailed_balance", lambda: detailed_balance(trained.model, trained.study, trained.data, trained.device,
                                                      ep_chains, ep_steps, ep_burn_in, gen)),
        ("gaussian_reference", lambda: gaussian_reference(trained, gen)),
        ("langevin_drift", lambda: langevin_drift(trained, n_examples)),
    ]:
        clock = time.perf_counter()
        figures.update(measurement())
        seconds[name] = time.perf_counter() - clock
    attrs = {
        "measure": f"likelihood: {min(n_examples, len(trained.data.test))} test examples, M = {n_trajectories} "
                   f"trajectories each; EP: {ep_chains} chains, {ep_burn_in} burn-in + {ep_steps} steps; seed {seed}; "
                   + ", ".join(f"{name} {value:.1f} s" for name, value in seconds.items()) + f" on {trained.device}",
        "ep_convention": EP_CONVENTION,
    }
    add_results(trained.log_path, evals=figures, attrs=attrs)
    return figures


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m asymnet.measure", description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--n", type=int, default=1000, help="held-out examples for the likelihood (default 1000)")
    parser.add_argument("--trajectories", type=int, default=100, help="M, trajectories per example (default 100)")
    parser.add_argument("--ep-chains", type=int, default=100, help="parallel chains for EP (default 100)")
    parser.add_argument("--ep-steps", type=int, default=10000, help="recorded T = 1 steps per chain (default 10000)")
    parser.add_argument("--ep-burn-in", type=int, default=1000, help="unrecorded steps first (default 1000)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_command("asymnet.measure", lambda: measure(
        args.run_dir, args.n, args.trajectories, args.ep_chains, args.ep_steps, args.ep_burn_in, args.data,
        args.device, args.seed, args.quiet))


if __name__ == "__main__":
    raise SystemExit(main())

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

from asymnet import walkback
from asymnet.data.mnist import bits_per_dim
from asymnet.metrics import balance, likelihood, quality
from asymnet.operators import GaussianOperator
from asymnet.runlog import add_results
from asymnet.trained import RunError, TrainedRun, add_common_arguments, load_run, run_command

EP_CONVENTION = ("EP = mean over stationary T = 1 chains of log p(s'|s) - log p(s|s'), nats per step, full state "
                 "(visible and hidden); H = mean of -log p(s'|s), plus n_visible * log(256) for 8-bit images "
                 "(visible units on the 8-bit scale, hidden units differential); relative irreversibility = EP / H; "
                 "stderr by batch means over (chain, batch) pairs")


def held_out_likelihood(trained: TrainedRun, n_examples: int, n_trajectories: int, generator: torch.Generator,
                        batch: int = 10, quiet: bool = True) -> dict[str, float]:
    """Mean bound and IS log-likelihood (nats, and bits/dim for images) over the first n_examples test points."""
    from asymnet.run import eval_temperatures

    model, study, data = trained.model, trained.study, trained.data
    dtype = getattr(torch, study.training.dtype)
    on = generator if trained.device.type == "cpu" else None
    temperatures = eval_temperatures(model, study)
    rows = data.test[:n_examples]
    bounds, estimates, errors = [], [], []
    for start in tqdm(range(0, len(rows), batch), disable=quiet, unit="batch", desc="likelihood", dynamic_ncols=True):
        x = data.batch(rows[start:start + batch], generator, dtype).to(trained.device)
        figure = likelihood.visible_importance_estimate(model.network, model.operator, model.p_star, x, temperatures,
                                                        n_trajectories, on, study.walkback.settle_steps)
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


def detailed_balance(model, study, data, device, n_chains: int, n_steps: int, burn_in: int,
                     generator: torch.Generator, n_batches: int = 20) -> dict[str, float]:
    """EP and relative irreversibility of the T = 1 chain of ``model`` (asymnet.run.Model), started from
    generated samples; H on the 8-bit scale of the visible units for images (EP_CONVENTION)."""
    from asymnet.run import eval_temperatures

    on = generator if device.type == "cpu" else None
    with torch.no_grad():
        s0 = walkback.generate(model.network, model.operator, model.p_star, eval_temperatures(model, study),
                               n_chains, on)
    offset = data.n_visible * math.log(1.0 / data.rescaling.scale) if data.rescaling is not None else 0.0
    estimate = balance.entropy_production(model.network, model.operator, s0, n_steps, burn_in,
                                          n_batches=min(n_batches, n_steps), generator=on, entropy_offset=offset)
    return {"ep": estimate.ep, "ep_stderr": estimate.ep_stderr,
            "conditional_entropy": estimate.conditional_entropy,
            "relative_irreversibility": estimate.relative_irreversibility,
            "relative_irreversibility_stderr": estimate.relative_irreversibility_stderr}


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


def drift_against_langevin(network, operator: GaussianOperator, toy, x: torch.Tensor) -> dict[str, float]:
    """quality.drift_agreement of the learned T = 1 drift m(x) - x and the toy's exact Langevin drift
    (sigma^2 / 2) grad log p(x) at the points x (m, 2), given on the network's device and in its dtype."""
    with torch.no_grad():
        drive = network(x, 1.0)
        drift = (operator.mean(x, drive) - x).cpu()
        std = operator.std(drive, 1.0).expand_as(x).cpu()
    return quality.drift_agreement(drift, 0.5 * std.double().pow(2) * toy.score(x.cpu()))


def _require_visible_state(network, x: torch.Tensor, caller: str, what: str, other_mismatch: bool = False) -> None:
    v = network.n_visible
    if getattr(network, "n_units", None) != v or x.shape[1:] != (v,) or other_mismatch:
        raise ValueError(f"{caller} needs a recurrent network whose chain state is its {x.shape[1]} visible units "
                         f"(hidden_units: fast), and {what} of that width")


def fit_readout(network, operator: GaussianOperator, x: torch.Tensor, mean: torch.Tensor, ridge: float = 1e-10,
                ridge_per: str = "row") -> torch.Tensor:
    """Set the visible readout (W[:v], b[:v]) of a recurrent network whose chain state is its visible units
    to the least-squares fit of a given T = 1 mean at the points x (m, v), in place; returns the coefficients
    ((n_neurons + 1, v): rates, then the bias).

    The T = 1 mean is (1 - alpha) x + alpha (W[:v] rates(x, 1) + b[:v]) (log T = 0), so the fit regresses
    (mean - (1 - alpha) x) / alpha on (rates(x, 1), 1). The ridge on the Gram matrix's diagonal is ``ridge``
    times m (``ridge_per="row"``) or times the Gram matrix's mean diagonal (``"diagonal"``). Everything else
    stays, so the result is the best T = 1 drift the network's fixed expansion can hold at those points.
    """
    from asymnet.readout import weighted_gram

    v = network.n_visible
    _require_visible_state(network, x, "fit_readout", "points and means", mean.shape != x.shape)
    if ridge_per not in ("row", "diagonal"):
        raise ValueError(f"ridge_per is 'row' or 'diagonal', got {ridge_per!r}")
    with torch.no_grad():
        target = (mean.double() - (1.0 - operator.alpha) * x.double()) / operator.alpha
        features = torch.cat([network.rates(x.to(network.W.dtype), 1.0).double(),
                              torch.ones(len(x), 1, dtype=torch.float64)], 1)
        gram = weighted_gram(features)
        scale = len(x) if ridge_per == "row" else gram.diagonal().mean()
        gram += ridge * scale * torch.eye(features.shape[1], dtype=torch.float64)
        coefficients = torch.linalg.solve(gram, features.T @ target)
        network.W[:v] = coefficients[:-1].T.to(network.W.dtype)
        network.b[:v] = coefficients[-1].to(network.b.dtype)
    return coefficients


def fit_readout_to_langevin(network, operator: GaussianOperator, toy, x: torch.Tensor,
                            ridge: float = 1e-10) -> torch.Tensor:
    """:func:`fit_readout` to the toy's exact Langevin step x + (sigma^2 / 2) grad log p(x) at the points x,
    with ``ridge`` times m on the Gram matrix's diagonal: the best T = 1 drift the network's fixed expansion
    can hold (``benchmarks/expansion_reference.py``), what training could reach."""
    _require_visible_state(network, x, "fit_readout_to_langevin", "points")  # before the network sees x
    with torch.no_grad():
        drive = network(x.to(network.W.dtype), 1.0)
        std = operator.std(drive, 1.0).expand_as(x).double()
        mean = x.double() + 0.5 * std.pow(2) * toy.score(x.double())
    return fit_readout(network, operator, x, mean, ridge)


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

"""The T = 1 drift of a 2-D toy against its exact Langevin drift, and the best readout a fixed expansion can hold.

Proposition 1 of the paper: a T = 1 chain whose walk back has converged keeps the data distribution. Under a
Gaussian step of per-unit std sigma the mean that keeps the data's law (to first order in sigma) is the
Langevin step x + (sigma^2 / 2) grad log p(x); a 2-D toy's score is exact, so a trained operator's T = 1 drift
m(x) - x can be held against that drift (:func:`drift_against_langevin`). A recurrent network whose chain state
is its visible units has a fixed hidden expansion and a linear visible readout; :func:`fit_readout` sets that
readout to the least-squares fit of a given T = 1 mean, and :func:`fit_readout_to_langevin` to the Langevin
step itself: the best drift the expansion can hold, what training could reach at best.
"""

from __future__ import annotations

import torch

from asymnet.metrics import quality
from asymnet.operators import GaussianOperator


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
    can hold (``studies/prop1/expansion_reference.py``), what training could reach."""
    _require_visible_state(network, x, "fit_readout_to_langevin", "points")  # before the network sees x
    with torch.no_grad():
        drive = network(x.to(network.W.dtype), 1.0)
        std = operator.std(drive, 1.0).expand_as(x).double()
        mean = x.double() + 0.5 * std.pow(2) * toy.score(x.double())
    return fit_readout(network, operator, x, mean, ridge)

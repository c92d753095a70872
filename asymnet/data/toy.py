"""Two-dimensional toy distributions with known densities: spiral, circle, mixture of Gaussians.

Each is a :class:`ToyDistribution` with ``sample(n, generator) -> (n, 2)`` and
``log_density(points (m, 2)) -> (m,)`` in nats. The mixture's density is exact; the spiral and the
circle are a curve c(u), u ~ U[0, 1], blurred by isotropic Gaussian noise, whose density
(1/M) sum_k N(x; c(u_k), noise^2 I) over a fine midpoint grid of M = 4,000 values of u converges
to the exact integral (the curve moves far less than the noise between grid points).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import torch

from asymnet.operators import LOG_2PI

N_CURVE_POINTS = 4000
POINTS_PER_BIN = 40


def _log_isotropic_mixture(points: torch.Tensor, centres: torch.Tensor, std: float, log_weights: torch.Tensor) -> torch.Tensor:
    sq = torch.cdist(points.to(torch.float64), centres.to(torch.float64)).pow(2)
    log_components = -0.5 * sq / std**2 - 2.0 * math.log(std) - LOG_2PI
    return torch.logsumexp(log_components + log_weights, dim=1)


@dataclass(frozen=True)
class ToyDistribution:
    """A curve or a set of centres blurred by N(0, noise^2 I) in 2-D."""

    name: str
    noise: float
    curve: Callable[[torch.Tensor], torch.Tensor] | None = None
    centres: tuple[tuple[float, float], ...] = ()

    def _support(self, n_curve_points: int = N_CURVE_POINTS) -> tuple[torch.Tensor, torch.Tensor]:
        if self.curve is not None:
            u = (torch.arange(n_curve_points, dtype=torch.float64) + 0.5) / n_curve_points
            points = self.curve(u)
        else:
            points = torch.tensor(self.centres, dtype=torch.float64)
        log_weights = torch.full((points.shape[0],), -math.log(points.shape[0]), dtype=torch.float64)
        return points, log_weights

    def sample(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        """(n, 2) float64 draws."""
        if self.curve is not None:
            base = self.curve(torch.rand(n, generator=generator, dtype=torch.float64))
        else:
            centres = torch.tensor(self.centres, dtype=torch.float64)
            base = centres[torch.randint(0, len(self.centres), (n,), generator=generator)]
        return base + self.noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)

    def regions(self, points: torch.Tensor, n_bins: int = 10) -> torch.Tensor:
        """The region of each point (m, 2) -> (m,) int64: for a mixture, the index of the nearest centre;
        for a curve, the bin of u (n_bins equal bins of [0, 1]) of the nearest point of the curve (40 points
        per bin).
        Read as a histogram it shows where a chain's mass sits along the data: the mode weights or the
        mass along the curve, which the MMD folds into one number."""
        if self.curve is None:
            support = torch.tensor(self.centres, dtype=torch.float64)
        else:  # POINTS_PER_BIN midpoints per bin: fine enough beside the noise, far cheaper than the M-point grid
            support = self.curve((torch.arange(n_bins * POINTS_PER_BIN, dtype=torch.float64) + 0.5) / (n_bins * POINTS_PER_BIN))
        nearest = torch.cat([torch.cdist(chunk.to(torch.float64), support).argmin(dim=1) for chunk in points.split(4096)])
        return nearest if self.curve is None else torch.div(nearest, POINTS_PER_BIN, rounding_mode="floor")

    def n_regions(self, n_bins: int = 10) -> int:
        return len(self.centres) if self.curve is None else n_bins

    def occupancy(self, points: torch.Tensor, n_bins: int = 10) -> torch.Tensor:
        """The fraction of the points in each region (see ``regions``): (n_regions,) float64, sums to 1."""
        counts = torch.bincount(self.regions(points, n_bins), minlength=self.n_regions(n_bins))
        return counts.to(torch.float64) / max(len(points), 1)

    def reference_occupancy(self, n_bins: int = 10) -> torch.Tensor:
        """The data's own occupancy, from 100,000 seeded draws (Monte Carlo s.e. about 1e-3 per region);
        computed once per distribution and bin count."""
        return _reference_occupancy(self, n_bins).clone()

    def log_density(self, points: torch.Tensor) -> torch.Tensor:
        """log p(x) in nats for points (m, 2): shape (m,), float64."""
        support, log_weights = self._support()
        return torch.cat([_log_isotropic_mixture(chunk, support, self.noise, log_weights) for chunk in points.split(4096)])

    def score(self, points: torch.Tensor, n_curve_points: int = N_CURVE_POINTS) -> torch.Tensor:
        """grad log p(x) for points (m, 2): sum_k r_k(x) (c_k - x) / noise^2, r_k the responsibility of support
        point c_k; (m, 2) float64. A curve's support is ``n_curve_points`` midpoints of u (the density's own
        4,000 by default; fewer for speed, as long as the curve moves less than the noise between them)."""
        support = self._support(n_curve_points)[0]
        points = points.to(torch.float64)
        # |x - c_k|^2 = |x|^2 - 2 x.c_k + |c_k|^2: the |x|^2 term cancels in the softmax over k
        logits = (points @ support.T - 0.5 * support.pow(2).sum(1)) / self.noise**2
        return (torch.softmax(logits, dim=1) @ support - points) / self.noise**2


@functools.lru_cache(maxsize=None)
def _reference_occupancy(toy: ToyDistribution, n_bins: int) -> torch.Tensor:
    return toy.occupancy(toy.sample(100_000, torch.Generator().manual_seed(12345)), n_bins)


def _spiral(u: torch.Tensor) -> torch.Tensor:
    angle = 3.0 * math.pi * u + 0.5 * math.pi
    radius = 0.3 + 1.7 * u
    return torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)


def _circle(u: torch.Tensor) -> torch.Tensor:
    angle = 2.0 * math.pi * u
    return torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)


def _ring_of_centres(n: int, radius: float) -> tuple[tuple[float, float], ...]:
    return tuple((radius * math.cos(2 * math.pi * k / n), radius * math.sin(2 * math.pi * k / n)) for k in range(n))


TOYS = {
    "spiral": ToyDistribution("spiral", noise=0.08, curve=_spiral),
    "circle": ToyDistribution("circle", noise=0.08, curve=_circle),
    "mog": ToyDistribution("mog", noise=0.15, centres=_ring_of_centres(8, 1.5)),
}

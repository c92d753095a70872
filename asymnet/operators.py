"""Noise families of the transition operator p_T(s' | s) (paper sec. 3.3).

A network F maps a state s (batch, n_units) to a :class:`Drive`: ``mu`` (the deterministic drive
F_mu(s)) and ``sigma`` (the pre-softplus noise level F_sigma(s); ignored by Bernoulli). An operator
turns the drive, the current state and a temperature T >= 1 into the distribution of the next
state, with leak alpha in (0, 1]:

- Gaussian:  mean = (1 - alpha) s + alpha F_mu(s),   std = g(T) softplus(F_sigma(s)),
  g(T) = sqrt(T) ("sqrt_T": variance proportional to T, as Algorithm 1 states) or
  g(T) = T ("T": the paper's sec. 3.3 formula).
- Bernoulli: rho = sigmoid(((1 - alpha) s + alpha F(s)) / T).

``log_prob`` returns nats summed over units, shape (batch,).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as nnf

LOG_2PI = math.log(2.0 * math.pi)


class Drive(NamedTuple):
    """Network output at a state: mu (batch, n) and pre-softplus sigma (batch, n) or (n,)."""

    mu: torch.Tensor
    sigma: torch.Tensor


@dataclass(frozen=True)
class GaussianOperator:
    """s' ~ N((1 - alpha) s + alpha F_mu(s), (g(T) softplus(F_sigma(s)))^2), independently per unit."""

    alpha: float
    noise_scaling: str = "sqrt_T"
    noise_kind = "normal"  # what ``sample``'s optional ``noise`` holds

    def temperature_factor(self, T: float) -> float:
        """g(T): sqrt(T) for "sqrt_T" (variance proportional to T), T for "T"."""
        return T**0.5 if self.noise_scaling == "sqrt_T" else T

    def mean(self, s: torch.Tensor, drive: Drive) -> torch.Tensor:
        """(1 - alpha) s + alpha F_mu(s), shape (batch, n)."""
        return (1.0 - self.alpha) * s + self.alpha * drive.mu

    def std(self, drive: Drive, T: float) -> torch.Tensor:
        """g(T) softplus(F_sigma(s)), shape broadcastable to (batch, n)."""
        return self.temperature_factor(T) * nnf.softplus(drive.sigma)

    def log_prob(self, s_next: torch.Tensor, s: torch.Tensor, drive: Drive, T: float) -> torch.Tensor:
        """log p_T(s_next | s) in nats, summed over units: shape (batch,)."""
        std = self.std(drive, T).expand_as(s_next)
        z = (s_next - self.mean(s, drive)) / std
        return (-0.5 * z.pow(2) - torch.log(std) - 0.5 * LOG_2PI).sum(-1)

    def sample(self, s: torch.Tensor, drive: Drive, T: float, generator: torch.Generator | None,
               noise: torch.Tensor | None = None) -> torch.Tensor:
        """One draw s' ~ p_T(. | s), shape (batch, n). Carries no gradient. ``noise``: the standard normals
        to use (batch, n), e.g. this process's rows of a global draw (asymnet.distributed); drawn from
        ``generator`` when None."""
        with torch.no_grad():
            mean = self.mean(s, drive)
            if noise is None:
                noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
            return mean + self.std(drive, T) * noise


@dataclass(frozen=True)
class BernoulliOperator:
    """s' ~ Bernoulli(sigmoid(((1 - alpha) s + alpha F(s)) / T)), independently per unit."""

    alpha: float
    noise_kind = "uniform"  # what ``sample``'s optional ``noise`` holds

    def logits(self, s: torch.Tensor, drive: Drive, T: float) -> torch.Tensor:
        """((1 - alpha) s + alpha F(s)) / T, shape (batch, n)."""
        return ((1.0 - self.alpha) * s + self.alpha * drive.mu) / T

    def mean(self, s: torch.Tensor, drive: Drive, T: float = 1.0) -> torch.Tensor:
        """rho = sigmoid(logits), the firing probability, shape (batch, n)."""
        return torch.sigmoid(self.logits(s, drive, T))

    def log_prob(self, s_next: torch.Tensor, s: torch.Tensor, drive: Drive, T: float) -> torch.Tensor:
        """log p_T(s_next | s) in nats for s_next in {0, 1}, summed over units: shape (batch,)."""
        logits = self.logits(s, drive, T)
        return -nnf.binary_cross_entropy_with_logits(logits, s_next, reduction="none").sum(-1)

    def sample(self, s: torch.Tensor, drive: Drive, T: float, generator: torch.Generator | None,
               noise: torch.Tensor | None = None) -> torch.Tensor:
        """One draw s' in {0, 1}, shape (batch, n). Carries no gradient. ``noise``: uniforms on [0, 1)
        (batch, n), s' = [noise < rho]; torch.bernoulli with ``generator`` when None."""
        with torch.no_grad():
            rho = self.mean(s, drive, T)
            if noise is not None:
                return (noise < rho).to(rho.dtype)
            return torch.bernoulli(rho, generator=generator)


Operator = GaussianOperator | BernoulliOperator

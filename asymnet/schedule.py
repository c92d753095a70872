"""Temperature schedules of Algorithm 1: heating for training, cooling for generation.

Step t (1-based) of a heating trajectory uses temperature T_t; generation runs the same steps
backwards, s_{t-1} ~ p_{T_t}(. | s_t), so every operator the loss trains is the one that samples.
"""

from __future__ import annotations

import math

import torch


def max_temperature(sigma_max: float, sigma: float, noise_scaling: str) -> float:
    """T_max at which the operator's noise std reaches sigma_max (Algorithm 1, line 2).

    With variance proportional to T ("sqrt_T") this is sigma_max^2 / sigma^2, the paper's formula;
    with std proportional to T ("T") the same condition gives sigma_max / sigma. Never below 1.
    """
    ratio = sigma_max / sigma
    return max(1.0, ratio**2 if noise_scaling == "sqrt_T" else ratio)


def n_heating_steps(T_max: float, factor: float = 2.0) -> int:
    """ceil(log_factor T_max): the number of multiplications by ``factor`` that take T from 1 to at
    least T_max (Algorithm 1 doubles, factor 2: ceil(log2 T_max))."""
    return max(0, math.ceil(math.log(T_max) / math.log(factor) - 1e-9))


def sample_extra_steps(n_max: int, generator: torch.Generator | None) -> int:
    """n ~ U{0, ..., n_max}: the number of initial temperature-1 steps."""
    return int(torch.randint(0, n_max + 1, (1,), generator=generator).item())


def heating_temperatures(n_extra: int, n_heating: int, factor: float = 2.0) -> list[float]:
    """[T_1, ..., T_K], K = n_extra + n_heating: n_extra steps at T = 1, then T grows by ``factor``
    each step (Algorithm 1: doubles).

    T_t = factor^max(0, t - n_extra), so the last step runs at factor^n_heating >= T_max.
    """
    return [float(factor) ** max(0, t - n_extra) for t in range(1, n_extra + n_heating + 1)]

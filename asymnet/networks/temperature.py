"""The log T input of the networks conditioned on temperature: one T for the batch, or one per row."""

from __future__ import annotations

import math

import torch


def log_temperatures(T: float | torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """log T as a (batch,) tensor for states s (batch, n), or (1,) for a single T (the caller broadcasts).

    T: a positive float, or a (batch,) or (batch, 1) tensor giving each row its own temperature, as
    walkback.sample_steps draws them."""
    if isinstance(T, torch.Tensor):
        if T.shape == (s.shape[0], 1):
            T = T[:, 0]
        if T.shape != (s.shape[0],):
            raise ValueError(f"T must be a float or a (batch,) or (batch, 1) tensor with batch = {s.shape[0]}; "
                             f"got a tensor of shape {tuple(T.shape)}")
        return torch.log(T.to(dtype=s.dtype, device=s.device))
    if not T > 0:
        raise ValueError(f"T must be positive; got {T}")
    return torch.full((1,), math.log(T), dtype=s.dtype, device=s.device)


def posterior_leak(T: float | torch.Tensor, factor: float, q: float) -> float | torch.Tensor:
    """c(T) = (T^q - f^q) / (T^q - f^q + (f^q - 1) T^q), f = ``factor``: the weight of s_t in the mean of s_{t-1}
    given s_t and the data for noise heating by factor f along the schedule T_t = f^t, t = 1..K
    (schedule.heating_temperatures with no T = 1 steps; walkback.posterior_targets: V / (V + tau), V = sigma_0^2
    (T^q - f^q) / (f^q - 1) the variance the steps below T added, tau = sigma_0^2 T^q this step's; q = 1 for
    noise_scaling sqrt_T, 2 for T). 0 at the first step (T = f, nothing added before it) and at T = 1 (the
    T = 1 steps of generation and of the long run). A float for a float T, else a tensor shaped like T."""
    Tq, fq = T**q, factor**q
    if not torch.is_tensor(T):
        return 0.0 if Tq <= fq else (Tq - fq) / (Tq - fq + (fq - 1.0) * Tq)
    added = (Tq - fq).clamp_min(0.0)  # V / sigma_0^2 times (f^q - 1); 0 up to the first step
    return added / (added + (fq - 1.0) * Tq)

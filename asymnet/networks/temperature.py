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

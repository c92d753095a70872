"""Uniform dequantisation of 8-bit images and likelihoods in bits per dimension on the 8-bit scale
(Theis et al. 2016, sec. 3.1): the map from pixels to model values and the log-determinant it adds."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Rescaling:
    """The affine map from 8-bit pixel values to model values: ``model = scale * pixel + offset``.

    ``pixel`` is the dequantized 8-bit value in [0, 256). Its Jacobian is ``scale`` in every
    dimension, so a model density p_model gives p_pixel = p_model * |scale|^D.
    """

    scale: float
    offset: float

    def __post_init__(self) -> None:
        if self.scale == 0 or not math.isfinite(self.scale) or not math.isfinite(self.offset):
            raise ValueError(f"Rescaling needs a finite non-zero scale and a finite offset, got {self}")

    @property
    def log_det_per_dim(self) -> float:
        """log|scale| (nats), the log-Jacobian of the map per dimension."""
        return math.log(abs(self.scale))


DEQUANTIZED = Rescaling(scale=1 / 256, offset=0.0)
"""The rescaling that ``dequantize`` applies: (x + u) / 256."""


def dequantize(
    images_uint8: torch.Tensor, generator: torch.Generator | None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Uniform dequantization (x + u) / 256, u ~ U[0, 1) per pixel (Theis et al. 2016, sec. 3.1).

    images_uint8: (N, 28, 28) or (N, 784) uint8. Returns (N, 784) in [0, 1) of ``dtype``;
    its ``Rescaling`` is ``DEQUANTIZED``.
    """
    if images_uint8.dtype != torch.uint8:
        raise ValueError(f"dequantize expects uint8 pixel values 0..255, got dtype {images_uint8.dtype}")
    x = images_uint8.reshape(images_uint8.shape[0], -1).to(dtype)
    u = torch.rand(x.shape, generator=generator, dtype=dtype)
    return (x + u) * DEQUANTIZED.scale


def bits_per_dim(log_prob_nats: torch.Tensor, n_dims: int, rescaling: Rescaling) -> torch.Tensor:
    """Bits per dimension on the 8-bit scale from a log-density of the model-scale value.

    bpd = -(log p_model(y) + D log|scale|) / (D ln 2), with y = scale * pixel + offset
    (change of variables; Theis et al. 2016). Example: a uniform density on [0, 1]^D with
    scale 1/256 gives exactly 8 bits/dim, the cost of coding 8-bit pixels without a model.

    log_prob_nats: (batch,) in nats. Returns (batch,) in bits/dim.
    """
    return -(log_prob_nats + n_dims * rescaling.log_det_per_dim) / (n_dims * math.log(2.0))

"""Rate functions phi of the networks' units, their slopes phi'(a) read from the rate, and a fast tanh."""

from __future__ import annotations

import torch
from torch import nn

TANH_BY_SIGMOID_MIN_SIZE = 4096


def tanh(u: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """tanh(u), computed as 2 sigmoid(2 u) - 1 for CPU tensors of at least 4,096 elements that carry no
    gradient: torch's CPU tanh costs twice as much (467 against 223 us for 256 x 1,000 float32 elements,
    ``python benchmarks/sampling.py --parts`` on this project's machine), a large share of a chain step. The two differ by a few
    ulp of 1 in absolute terms (the rates enter W phi(s) linearly, so the absolute error is what counts).
    Elsewhere (GPU, small tensors, autograd) torch.tanh. ``out``: write into this tensor."""
    if u.device.type != "cpu" or u.numel() < TANH_BY_SIGMOID_MIN_SIZE or (torch.is_grad_enabled() and u.requires_grad):
        return torch.tanh(u, out=out) if out is not None else torch.tanh(u)
    result = torch.mul(u, 2.0, out=out) if out is not None else u * 2.0
    return result.sigmoid_().mul_(2.0).sub_(1.0)


ACTIVATIONS = {
    "tanh": tanh,
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "softplus": nn.functional.softplus,
    "identity": lambda u: u,
}


RATE_SLOPES = {  # phi'(a) written through the rate r = phi(a): what a unit holds without its input a
    "tanh": lambda r: 1.0 - r * r,
    "sigmoid": lambda r: r * (1.0 - r),
    "relu": lambda r: (r > 0).to(r.dtype),
    "softplus": lambda r: -torch.expm1(-r),  # sigmoid(a) = 1 - exp(-softplus(a))
    "identity": lambda r: torch.ones_like(r),
}


_IN_PLACE = {"tanh": tanh, "sigmoid": torch.sigmoid, "relu": lambda u, out: torch.clamp(u, min=0.0, out=out)}


def rate_into(name: str, u: torch.Tensor, out: torch.Tensor) -> None:
    """out <- ACTIVATIONS[name](u), in place where torch has an ``out=`` form of it."""
    if name in _IN_PLACE:
        _IN_PLACE[name](u, out=out)
    elif name == "identity":
        out.copy_(u)
    else:
        out.copy_(ACTIVATIONS[name](u))

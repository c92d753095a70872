"""The asymmetric stochastic recurrent network: F(s) = W phi(s) + b, W full and unconstrained.

The state s = (x, h) holds n_visible visible units followed by n_hidden hidden units. Nothing ties
W_ij to W_ji, so the operator's stationary distribution need not obey detailed balance; the
per-unit noise level sigma_i does not depend on s. It is learned (if asked) for visible units only:
a learned hidden noise level lets the hidden chain turn deterministic, and the per-step loss of the
hidden units then runs to minus infinity without the visible model improving (seen on the spiral).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from asymnet.operators import Drive

ACTIVATIONS = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "softplus": nn.functional.softplus,
    "identity": lambda u: u,
}


def inverse_softplus(y: float) -> float:
    """x with softplus(x) = y, for y > 0."""
    return y + math.log(-math.expm1(-y))


class RecurrentNetwork(nn.Module):
    """F(s) = W phi(s) + b over n = n_visible + n_hidden units.

    W: (n, n), row i = postsynaptic unit i, column j = presynaptic unit j, initialised
    N(0, init_scale^2 / n). b: (n,). Pre-softplus noise levels: ``sigma_visible`` (n_visible,),
    a parameter, learned when ``learn_sigma``; ``sigma_hidden`` (n_hidden,), a fixed buffer; both
    start at softplus^-1(sigma_init).
    """

    temperature_conditioned = False

    def __init__(
        self,
        n_visible: int,
        n_hidden: int,
        phi: str = "tanh",
        sigma_init: float = 0.1,
        learn_sigma: bool = True,
        init_scale: float = 1.0,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        n = n_visible + n_hidden
        self.n_visible, self.n_hidden, self.n_units = n_visible, n_hidden, n
        self.phi_name = phi
        self.phi = ACTIVATIONS[phi]
        self.W = nn.Parameter(torch.randn(n, n, generator=generator) * (init_scale / math.sqrt(n)))
        self.b = nn.Parameter(torch.zeros(n))
        level = inverse_softplus(sigma_init)
        self.sigma_visible = nn.Parameter(torch.full((n_visible,), level), requires_grad=learn_sigma)
        self.register_buffer("sigma_hidden", torch.full((n_hidden,), level))

    def forward(self, s: torch.Tensor, T: float = 1.0) -> Drive:
        """Drive at states s (batch, n): mu = phi(s) W^T + b (batch, n), sigma (n,). T is unused."""
        return Drive(torch.addmm(self.b, self.phi(s), self.W.t()), self.sigma)

    @property
    def sigma(self) -> torch.Tensor:
        """Pre-softplus noise level of every unit, (n,): visible then hidden."""
        return torch.cat([self.sigma_visible, self.sigma_hidden])

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
    """F(s, T) = W phi(s) + b [+ w_T log T] over n = n_visible + n_hidden units.

    With ``temperature_input`` a clamped input neuron whose rate is log T (a neuromodulatory
    broadcast of the temperature) projects to every unit through the weights w_T (n,), so the
    operator can act differently at each temperature: without it, one T-independent kernel has
    to serve both the T = 1 steps and the hot ones, and the walk back cannot shrink the variance
    that heating added (benchmarks/linear_gaussian.py: generated variance 4.4 for a true 1.0).

    phi_visible (default: phi) is the visible units' rate function, e.g. identity for real-valued
    data whose range tanh would clip. W: (n, n), row i = postsynaptic unit i, column j = presynaptic
    unit j, initialised N(0, init_scale^2 / n). b: (n,). Pre-softplus noise levels: ``sigma_visible`` (n_visible,),
    a parameter, learned when ``learn_sigma``, starting at softplus^-1(sigma_init); ``sigma_hidden``
    (n_hidden,), a fixed buffer at softplus^-1(sigma_hidden), sigma_init when not given.
    """

    def __init__(
        self,
        n_visible: int,
        n_hidden: int,
        phi: str = "tanh",
        sigma_init: float = 0.1,
        learn_sigma: bool = True,
        init_scale: float = 1.0,
        generator: torch.Generator | None = None,
        sigma_hidden: float | None = None,
        temperature_input: bool = False,
        phi_visible: str | None = None,
    ):
        super().__init__()
        self.temperature_conditioned = temperature_input
        n = n_visible + n_hidden
        self.n_visible, self.n_hidden, self.n_units = n_visible, n_hidden, n
        self.phi_name, self.phi_visible_name = phi, phi_visible or phi
        self._phi_hidden, self._phi_visible = ACTIVATIONS[phi], ACTIVATIONS[phi_visible or phi]
        self.W = nn.Parameter(torch.randn(n, n, generator=generator) * (init_scale / math.sqrt(n)))
        self.b = nn.Parameter(torch.zeros(n))
        self.w_T = nn.Parameter(torch.zeros(n)) if temperature_input else None
        hidden_level = inverse_softplus(sigma_hidden or sigma_init)
        visible_level = inverse_softplus(sigma_init)
        self.sigma_visible = nn.Parameter(torch.full((n_visible,), visible_level), requires_grad=learn_sigma)
        self.register_buffer("sigma_hidden", torch.full((n_hidden,), hidden_level))

    def forward(self, s: torch.Tensor, T: float = 1.0) -> Drive:
        """Drive at states s (batch, n): mu = phi(s) W^T + b [+ w_T log T] (batch, n), sigma (n,)."""
        mu = torch.addmm(self.b, self.phi(s), self.W.t())
        if self.w_T is not None:
            mu = mu + self.w_T * math.log(T)
        return Drive(mu, self.sigma)

    def phi(self, s: torch.Tensor) -> torch.Tensor:
        """Presynaptic rates phi(s) (..., n): phi_visible on the visible units, phi on the hidden ones."""
        if self.phi_visible_name == self.phi_name:
            return self._phi_hidden(s)
        v = self.n_visible
        return torch.cat([self._phi_visible(s[..., :v]), self._phi_hidden(s[..., v:])], dim=-1)

    @property
    def sigma(self) -> torch.Tensor:
        """Pre-softplus noise level of every unit, (n,): visible then hidden."""
        return torch.cat([self.sigma_visible, self.sigma_hidden])

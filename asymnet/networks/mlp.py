"""An MLP operator network (the paper's own kind of operator), optionally conditioned on log T."""

from __future__ import annotations

import math

import torch
from torch import nn

from asymnet.networks.recurrent import inverse_softplus
from asymnet.networks.temperature import log_temperatures
from asymnet.operators import Drive


class MLPNetwork(nn.Module):
    """(F_mu(s, T), F_sigma(s, T)) from a tanh MLP over s (batch, n) and, if conditioned, log T.

    The sigma head starts at zero weight and bias inverse_softplus(sigma_init), so the initial
    noise level is sigma_init at every state, as for the recurrent network.
    """

    def __init__(
        self,
        n_visible: int,
        width: int = 256,
        depth: int = 2,
        sigma_init: float = 0.1,
        learn_sigma: bool = True,
        temperature_conditioned: bool = True,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.n_visible, self.n_hidden, self.n_units = n_visible, 0, n_visible
        self.temperature_conditioned = temperature_conditioned
        layers: list[nn.Module] = []
        width_in = n_visible + int(temperature_conditioned)
        for _ in range(depth):
            layers += [nn.Linear(width_in, width), nn.Tanh()]
            width_in = width
        self.body = nn.Sequential(*layers)
        self.mu_head = nn.Linear(width, n_visible)
        self.sigma_head = nn.Linear(width, n_visible)
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    bound = 1.0 / math.sqrt(module.in_features)
                    module.weight.copy_((torch.rand(module.weight.shape, generator=generator) * 2 - 1) * bound)
                    module.bias.zero_()
            self.sigma_head.weight.zero_()
            self.sigma_head.bias.fill_(inverse_softplus(sigma_init))
        self.sigma_head.requires_grad_(learn_sigma)

    def forward(self, s: torch.Tensor, T: float | torch.Tensor = 1.0) -> Drive:
        """Drive at states s (batch, n): mu (batch, n), pre-softplus sigma (batch, n).

        T: a float, or a (batch,) or (batch, 1) tensor giving each row its own temperature."""
        if self.temperature_conditioned:
            log_T = log_temperatures(T, s).expand(s.shape[0])
            s = torch.cat([s, log_T[:, None]], dim=1)
        hidden = self.body(s)
        return Drive(self.mu_head(hidden), self.sigma_head(hidden))

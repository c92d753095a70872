"""The asymmetric stochastic recurrent network: F(s) = W phi(s) + b, W full and unconstrained.

The state s = (x, h) holds n_visible visible units followed by n_hidden hidden units. Nothing ties
W_ij to W_ji, so the operator's stationary distribution need not obey detailed balance; the
per-unit noise level sigma_i does not depend on s. It is learned (if asked) for visible units only:
a learned hidden noise level lets the hidden chain turn deterministic, and the per-step loss of the
hidden units then runs to minus infinity without the visible model improving (seen on the spiral).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from asymnet.networks.activations import ACTIVATIONS, RATE_SLOPES, rate_into
from asymnet.networks.pathway import ConvPathway
from asymnet.networks.temperature import posterior_leak
from asymnet.operators import Drive

def inverse_softplus(y: float) -> float:
    """x with softplus(x) = y, for y > 0."""
    return y + math.log(-math.expm1(-y))


class RecurrentNetwork(nn.Module):
    """F(s, T) = W phi(s) + b [+ w_T log T] over n = n_visible + n_hidden units.

    With ``temperature_input`` a clamped input neuron whose rate is log T (a neuromodulatory
    broadcast of the temperature) projects to every unit through the weights w_T (n,), so the
    operator can act differently at each temperature: without it, one T-independent kernel has
    to serve both the T = 1 steps and the hot ones, and the walk back cannot shrink the variance
    that heating added (studies/walkback/linear_gaussian.py: generated variance 4.4 for a true 1.0).

    phi_visible (default: phi) is the visible units' rate function, e.g. identity for real-valued
    data whose range tanh would clip. W: (n, n), row i = postsynaptic unit i, column j = presynaptic
    unit j, initialised N(0, init_scale^2 / n). b: (n,). Pre-softplus noise levels: ``sigma_visible`` (n_visible,),
    a parameter, learned when ``learn_sigma``, starting at softplus^-1(sigma_init); ``sigma_hidden``
    (n_hidden,), a fixed buffer at softplus^-1(sigma_hidden), sigma_init when not given.

    ``hidden_units="fast"``: the hidden units are not part of the chain's state (n_units = n_visible);
    they relax within each step to a fixed random expansion of the visible state and of log T (see
    :meth:`rates`): W_hv ~ N(0, hidden_gain^2 / n_visible), b_h ~ N(0, hidden_bias^2), w_T,h ~
    N(0, hidden_temperature_gain^2), W_hh = 0, W_vh starting at 0. With ``hidden_learning="fixed"`` only the
    visible rows of W, b and w_T learn (the hidden rows enter the drive detached, so autograd and the local
    rule agree); with ``hidden_learning="learned"`` the hidden rows W_hv, b_h, w_T,h enter it attached, so
    autograd trains them by the exact gradient, and the local rule by feedback synapses B (n_hidden,
    n_visible) that carry the visible errors to the hidden units (asymnet.plasticity): ``feedback=
    "transpose"`` reads B = W_vh^T (:attr:`feedback_matrix`); ``"random"`` and ``"kolen_pollack"`` keep B in
    the buffer ``feedback_weights``, drawn N(0, feedback_scale^2 / n_visible) (so (B e)_i has the size of one
    visible error e_j whatever n_visible is), fixed for ``random``, moved by plasticity.kolen_pollack_step
    for ``kolen_pollack``. This removes
    what defeats slow hidden units under one-step credit assignment: their input weights get no
    learning signal from the visible units' loss, so they stay small and useless, and during heating
    h_t remembers x_{t-1}, which the walk back can read but generation cannot.

    ``replicas=R``: R independent networks of this structure as one batched program; every parameter
    carries a leading replica axis (W (R, n, n), b (R, n), w_T (R, n), sigma_visible (R, n_visible), buffers
    sigma_hidden (R, n_hidden) and feedback_weights (R, n_hidden, n_visible)), and states are (R, batch, n_units), or (K, R, batch, n_units) for a stacked
    trajectory; nothing mixes replicas. :meth:`stack` builds it from R single networks (so replica r starts
    where the single run that built network r starts, which drawing all replicas here from one generator
    does not give); :meth:`copy_replica` writes replica r back into a single network.
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
        hidden_units: str = "slow",
        hidden_gain: float = 4.0,
        hidden_bias: float = 4.0,
        hidden_temperature_gain: float = 1.0,
        replicas: int | None = None,
        hidden_learning: str = "fixed",
        feedback: str = "transpose",
        feedback_scale: float = 1.0,
        posterior_leak: tuple[float, float] | None = None,
        receptive_field: tuple[int, int, int, int] | None = None,
    ):
        super().__init__()
        self.posterior_leak = posterior_leak
        if hidden_units not in ("slow", "fast"):
            raise ValueError(f"hidden_units must be 'slow' or 'fast', got {hidden_units!r}")
        if hidden_learning not in ("fixed", "learned"):
            raise ValueError(f"hidden_learning must be 'fixed' or 'learned', got {hidden_learning!r}")
        if hidden_learning == "learned" and (hidden_units != "fast" or n_hidden == 0):
            raise ValueError("hidden_learning='learned' needs fast hidden units (hidden_units='fast', n_hidden > 0)")
        if feedback not in ("transpose", "random", "kolen_pollack"):
            raise ValueError(f"feedback must be 'transpose', 'random' or 'kolen_pollack', got {feedback!r}")
        if feedback != "transpose" and hidden_learning != "learned":
            raise ValueError(f"feedback={feedback!r} carries errors to learned hidden units: set hidden_learning='learned'")
        self.hidden_learning, self.feedback = hidden_learning, feedback
        self.temperature_conditioned = temperature_input
        self.hidden_units = hidden_units
        self.replicas = replicas
        lead = () if replicas is None else (replicas,)  # the replica axis, when there is one
        n = n_visible + n_hidden
        self.n_visible, self.n_hidden, self.n_neurons = n_visible, n_hidden, n
        self.n_units = n if hidden_units == "slow" else n_visible  # the width of the chain's state
        self.pathway: ConvPathway | None = None  # attach_pathway
        self.phi_name, self.phi_visible_name = phi, phi_visible or phi
        self._phi_hidden, self._phi_visible = ACTIVATIONS[phi], ACTIVATIONS[phi_visible or phi]
        self.W = nn.Parameter(torch.randn(*lead, n, n, generator=generator) * (init_scale / math.sqrt(n)))
        self.b = nn.Parameter(torch.zeros(*lead, n))
        self.w_T = nn.Parameter(torch.zeros(*lead, n)) if temperature_input else None
        hidden_level = inverse_softplus(sigma_hidden or sigma_init)
        visible_level = inverse_softplus(sigma_init)
        self.sigma_visible = nn.Parameter(torch.full((*lead, n_visible), visible_level), requires_grad=learn_sigma)
        self.register_buffer("sigma_hidden", torch.full((*lead, n_hidden), hidden_level))
        self.receptive_field = receptive_field
        mask = None
        if receptive_field is not None:
            if hidden_units != "fast" or n_hidden == 0:
                raise ValueError("receptive_field restricts fast hidden units: set hidden_units='fast', n_hidden > 0")
            mask = receptive_field_mask(n_hidden, *receptive_field)
            if mask.shape[1] != n_visible:
                raise ValueError(f"receptive_field {receptive_field} covers an image of {mask.shape[1]} pixels, "
                                 f"but there are {n_visible} visible units")
        # (n_hidden, n_visible): 1 where hidden unit i sees visible unit j (W_hv) and projects back to it (W_vh)
        self.register_buffer("receptive_mask", mask, persistent=False)
        if hidden_units == "fast":
            with torch.no_grad():  # a fixed random expansion of the visible state and of log T
                fan_in = n_visible if mask is None else receptive_field[0] ** 2 * receptive_field[1]
                self.W[..., n_visible:, :n_visible].normal_(0.0, hidden_gain / math.sqrt(fan_in),
                                                            generator=generator)
                if mask is not None:
                    self.W[..., n_visible:, :n_visible].mul_(mask)
                self.W[..., n_visible:, n_visible:].zero_()
                self.W[..., :n_visible, n_visible:].zero_()
                self.b[..., n_visible:].normal_(0.0, hidden_bias, generator=generator)
                if self.w_T is not None:
                    self.w_T[..., n_visible:].normal_(0.0, hidden_temperature_gain, generator=generator)
        if feedback != "transpose":  # drawn last, so every other weight is the one a fixed expansion gets
            if feedback_scale:
                start = torch.randn(*lead, n_hidden, n_visible, generator=generator) * (feedback_scale / math.sqrt(n_visible))
            else:  # B = 0 = W_vh^T at the start, and no draw, so every other stream is the transpose run's
                start = torch.zeros(*lead, n_hidden, n_visible)
            self.register_buffer("feedback_weights", start)
            if mask is not None:
                self.feedback_weights.mul_(mask)

    def attach_pathway(self, pathway: ConvPathway) -> None:
        """Add a convolutional pathway of fast hidden layers (networks.pathway) to the visible drive. Attached
        after the network's own weights are drawn, so they are those of the same network without it."""
        if self.n_units != self.n_visible:
            raise ValueError("a convolutional pathway drives the visible units of a chain whose state they are: "
                             "use fast hidden units (hidden_units='fast') or n_hidden=0")
        if self.replicas is not None:
            raise ValueError("a convolutional pathway runs in one network; set replicas=None")
        if math.prod(pathway.image_shape) != self.n_visible:
            raise ValueError(f"the pathway's image {pathway.image_shape} has {math.prod(pathway.image_shape)} "
                             f"pixels, but there are {self.n_visible} visible units")
        self.pathway = pathway

    @torch.no_grad()
    def mask_gradients(self) -> None:
        """Zero the gradients of the synapses outside the hidden units' receptive fields (W_hv and W_vh), so
        an optimiser whose step is 0 for a zero gradient (Adam from zero moments) keeps them at 0."""
        if self.receptive_mask is None or self.W.grad is None:
            return
        v = self.n_visible
        self.W.grad[..., v:, :v].mul_(self.receptive_mask)
        self.W.grad[..., :v, v:].mul_(self.receptive_mask.mT)

    @classmethod
    def stack(cls, networks: "list[RecurrentNetwork]") -> "RecurrentNetwork":
        """The R = len(networks) single networks (one structure) as one network with replicas: replica r's
        parameters are a copy of networks[r]'s, so it starts exactly where that network's run starts."""
        if any(network.replicas is not None for network in networks):
            raise ValueError("RecurrentNetwork.stack takes single networks (replicas=None)")
        stacked = copy.deepcopy(networks[0])
        stacked.replicas = len(networks)
        with torch.no_grad():
            for name, value in networks[0].named_parameters():
                rows = torch.stack([getattr(network, name).detach() for network in networks])
                setattr(stacked, name, nn.Parameter(rows, requires_grad=value.requires_grad))
            for name, _ in networks[0].named_buffers():
                setattr(stacked, name, torch.stack([getattr(network, name) for network in networks]))
        return stacked

    @torch.no_grad()
    def copy_replica(self, r: int, network: "RecurrentNetwork") -> None:
        """Write replica r's parameters and buffers into the single network ``network`` (same structure)."""
        for name, value in network.named_parameters():
            value.copy_(getattr(self, name)[r])
        for name, value in network.named_buffers():
            value.copy_(getattr(self, name)[r])

    def for_states(self, vector: torch.Tensor, rows: slice = slice(None)) -> torch.Tensor:
        """The units ``rows`` of a per-unit parameter (n,) or, with replicas, (R, n), shaped to broadcast
        against states: vector[rows] against (..., batch, n); vector[:, None, rows], (R, 1, units), against
        (..., R, batch, n)."""
        return vector[rows] if self.replicas is None else vector[:, None, rows]

    def forward(self, s: torch.Tensor, T: float | torch.Tensor = 1.0, first_unit: int = 0) -> Drive:
        """Drive at states s (batch, n_units): mu = rates(s, T) W[first_unit:n_units]^T + b [+ w_T log T],
        (batch, n_units - first_unit); sigma (n_units - first_unit,).

        With replicas: s (R, batch, n_units) or (K, R, batch, n_units), replica r's slice by replica r's
        weights (one batched GEMM); T a float or a tensor broadcastable to s[..., :1] ((R, 1, 1): one
        temperature per replica); mu shaped like s (less the skipped units), sigma (R, 1, n_units - first_unit).

        With a convolutional ``pathway`` (networks.pathway.ConvPathway, the visible units its image) mu adds its
    output D(phi_v(v), T) before the leak.

        With a convolutional ``pathway`` (networks.pathway.ConvPathway, over the visible units as an image)
        mu adds its output D(phi_v(v), T) before the leak.

        ``first_unit`` skips the postsynaptic units before it: settling holds the visible units clamped
        and needs only the hidden units' drive (``first_unit=n_visible``), a quarter of the GEMM on MNIST.
        """
        rows = slice(first_unit, self.n_units)
        if self.replicas is None:
            mu = torch.addmm(self.b[rows], self.rates(s, T), self.W[rows].t())
        elif s.dim() == 3:
            mu = torch.baddbmm(self.b[:, None, rows], self.rates(s, T), self.W[:, rows].transpose(1, 2))
        else:
            mu = torch.matmul(self.rates(s, T), self.W[:, rows].transpose(1, 2)) + self.b[:, None, rows]
        if self.w_T is not None:
            mu = mu + self.for_states(self.w_T, rows) * _log(T)
        if self.pathway is not None and first_unit == 0:
            mu = mu + self.pathway(self._phi_visible(s), T)
        if self.posterior_leak is not None:
            keep = self.leak(T)
            mu = keep * s[..., rows] + (1.0 - keep) * mu
        return Drive(mu, self.sigma[..., rows])

    def leak(self, T: float | torch.Tensor) -> float | torch.Tensor:
        """c(T), the share of the state the drive keeps with ``posterior_leak=(f, q)``: mu = c s + (1 - c) F,
        F = W phi(s) + b [+ w_T log T], with c(T) the weight of s_t in the mean of s_{t-1} given s_t and the
        data (networks.temperature.posterior_leak). So F is the network's estimate of the data behind s; at
        the first step and at T = 1, c = 0 and the drive is F itself. Under the local rule the postsynaptic
        factor of every synapse onto unit i gains 1 - c(T), the share of mu its input moves."""
        return posterior_leak(T, *self.posterior_leak)

    def rates(self, s: torch.Tensor, T: float | torch.Tensor = 1.0) -> torch.Tensor:
        """Presynaptic rates of all n_neurons units at states s (..., n_units), or with replicas
        (..., R, batch, n_units).

        Slow hidden units (the default) are part of the state: rates = phi(s). Fast hidden units relax
        within one step to their input from the visible units and the log T neuron: rates =
        (phi_visible(v), phi(a_h)), a_h = W_hv phi_visible(v) + b_h + w_T,h log T; they hold no memory of
        earlier steps and carry no noise. Their weights W_hv, b_h, w_T,h enter detached (a fixed expansion)
        unless ``hidden_learning`` is "learned". ``T`` is a float or a tensor broadcastable to s[..., :1]
        (one temperature per trajectory step, and with replicas per replica).
        """
        if self.hidden_units == "slow":
            return self.phi(s)
        v = self.n_visible
        visible = self._phi_visible(s)
        hidden = slice(v, None)
        fixed = (lambda weight: weight.detach()) if self.hidden_learning == "fixed" else (lambda weight: weight)
        potential = torch.matmul(visible, fixed(self.W[..., v:, :v]).mT) + fixed(self.for_states(self.b, hidden))
        if self.w_T is not None:
            potential = potential + fixed(self.for_states(self.w_T, hidden)) * _log(T)
        return torch.cat([visible, self._phi_hidden(potential)], dim=-1)

    def hidden_slope(self, hidden_rates: torch.Tensor) -> torch.Tensor:
        """phi'(a_h) of fast hidden units from their rates phi(a_h) (..., n_hidden), e.g. 1 - h^2 for tanh."""
        return RATE_SLOPES[self.phi_name](hidden_rates)

    @property
    def feedback_matrix(self) -> torch.Tensor:
        """B (n_hidden, n_visible), or with replicas (R, n_hidden, n_visible): the feedback synapses that carry
        the visible errors to learned fast hidden units; W_vh^T itself for ``feedback="transpose"``."""
        if self.feedback == "transpose":
            v = self.n_visible
            return self.W[..., :v, v:].detach().mT
        return self.feedback_weights

    def phi(self, s: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Presynaptic rates phi(s) (..., n): phi_visible on the visible units, phi on the hidden ones.
        ``out``: write them into this tensor (shape of s) without allocating where phi allows it."""
        if out is not None:
            v = self.n_visible
            same = self.phi_visible_name == self.phi_name
            parts = [(slice(None), self.phi_name)] if same else \
                [(slice(None, v), self.phi_visible_name), (slice(v, None), self.phi_name)]
            for part, name in parts:
                rate_into(name, s[..., part], out[..., part])
            return out
        if self.phi_visible_name == self.phi_name:
            return self._phi_hidden(s)
        v = self.n_visible
        return torch.cat([self._phi_visible(s[..., :v]), self._phi_hidden(s[..., v:])], dim=-1)

    @property
    def sigma(self) -> torch.Tensor:
        """Pre-softplus noise level of every unit of the state, (n_units,): visible then (slow) hidden; with
        replicas (R, 1, n_units), to broadcast against states (..., R, batch, n_units)."""
        if self.replicas is not None:
            levels = self.sigma_visible if self.hidden_units == "fast" else \
                torch.cat([self.sigma_visible, self.sigma_hidden], dim=-1)
            return levels.unsqueeze(1)
        if self.hidden_units == "fast":
            return self.sigma_visible
        return torch.cat([self.sigma_visible, self.sigma_hidden])


def receptive_field_mask(n_hidden: int, size: int, channels: int, height: int, width: int) -> torch.Tensor:
    """(n_hidden, channels * height * width) 0/1: hidden unit i, centred on pixel floor(i * height * width /
    n_hidden) of a height x width image (row-major; so the units tile the image evenly, n_hidden / (height *
    width) per pixel), sees the size x size square of pixels around its centre, cut at the image's border, in
    every channel (the visible units are channel-major, as the images are flattened)."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"a receptive field is an odd number of pixels across, got {size}")
    centres = torch.arange(n_hidden) * (height * width) // n_hidden
    rows, cols = centres // width, centres % width
    pixel_rows = torch.arange(height).repeat_interleave(width)
    pixel_cols = torch.arange(width).repeat(height)
    half = size // 2
    near = ((rows[:, None] - pixel_rows[None]).abs() <= half) & ((cols[:, None] - pixel_cols[None]).abs() <= half)
    return near.to(torch.get_default_dtype()).repeat(1, channels)


def _log(T: float | torch.Tensor) -> float | torch.Tensor:
    """log T of a temperature given as a number or as a tensor."""
    return torch.log(T) if torch.is_tensor(T) else math.log(T)

"""A convolutional pathway of fast hidden layers for the recurrent network, and its local rule.

For image data (C, H, W) the pathway adds D(v, T) to the visible units' drive F(s) = W phi(s) + b + w_T log T.
Its units are fast: they hold no state of the chain and relax within each step to their input. With
``channels`` (c_0, ..., c_{L-1}) they form an encoder and a decoder (the 28 -> 14 -> 7 -> 14 -> 28 shape of a
U-Net, without its residual blocks; normalisation and middle-layer skips are options below):

    h_0 = phi(E_0 * r_v + b + w_T log T)                       c_0 channels at H x W (3 x 3 kernel)
    h_l = phi(E_l *_2 h_{l-1} + b + w_T log T),  l = 1..L-1      c_l channels at H / 2^l (4 x 4, stride 2)
    m_k = phi(M_k * m_{k-1} + b + w_T log T),  k = 1..n, m_0 = h_{L-1}   (3 x 3, at the lowest level)
    (``residual``: m_k = m_{k-1} + phi(M_k * m_{k-1} + b + w_T log T), a skip past each middle layer)
    g_{L-1} = m_n;  g_l = phi(U_l *^2 g_{l+1} + S_l * h_l + b + w_T log T),  l = L-2..0
    D = O * g_0                                                   C channels at H x W (3 x 3, starts at 0)

(r_v = phi_v(v), the visible rates, times the input gain k(T) when one is given; *_2 a stride-2 convolution, *^2 a stride-2 transposed one, S_l a 3 x 3
lateral connection; the n = ``middle`` layers m_k widen the field of the deepest units, 8 pixels of
the image each at 28 -> 7; b and w_T one per channel of each layer.)

**The input gain.** A noise-heated state at step T is the data plus noise of variance V(T) = sigma_0^2 f^q
(T^q - 1) / (f^q - 1) (the heating's steps up to T_t = f^t, tau_k = sigma_0^2 T_k^q), so its pixels spread
over sqrt(var + V) with var the data's per-pixel variance: 0.3 at T = 1, 20 on MNIST at T = 400. Tanh units
with one set of weights cannot read both. With ``input_gain=(var, sigma_0, f, q)`` the pathway reads
k(T) r_v, k(T) = 1 / sqrt(var + V(T)): a divisive gain the temperature broadcast sets, as the U-Net's
normalisation does for it (studies/mnist_stdp_experiments.md, "A convolutional pathway").

**Residual middle layers.** With ``residual`` each middle unit also receives its own unit of the layer
below through a fixed one-to-one synapse of weight 1, so depth adds corrections to the deepest units' rates
instead of replacing them (He et al. 2016); the rule below holds with one more term (see there).

**Group normalisation.** With ``groups`` = G > 0 each layer's potential a (the sum of its connections'
drives) is normalised within each row over groups of c / G channels and all positions before the shift and
phi, as the U-Net's GroupNorm does (Wu and He 2018):

    n = (a - mean_g a) / sqrt(var_g a + eps),   rate = phi(gamma * n + b + w_T log T)

with one gain gamma per channel (a parameter ``norm_gain_<layer>``, started at 1). A group is a pool of units
that divides its members' potentials by its spread (a divisive normalisation, Carandini and Heeger 2012); the
pool carries the errors back to its members as its forward map's adjoint: the error z_j reaching unit j's
normalised potential (z = gamma * delta, delta as below) arrives at its potential as

    delta_a = (z - mean_g z - n * mean_g(z * n)) / sqrt(var_g a + eps),

two pool averages broadcast to every member beside the member's own error. gamma moves by the sum of
delta * n over positions and rows: its unit's error times its own normalised potential. Every synapse still
reads its presynaptic rate and the error at its postsynaptic unit; with B = K the rule stays the exact gradient
(tests/test_pathway.py, float64).

**The local rule.** The visible units' postsynaptic factor e_v (plasticity.trajectory_update: the walk
back's error over the operator's variance, times 1 - c(T) under the posterior leak) reaches the pathway's
units through feedback synapses. Each connection c from layer j to layer i has forward kernel K_c and a
feedback kernel B_c of the same shape that carries layer i's error signal back to layer j. A unit of
layer j sums the errors its feedback synapses bring, and gates the sum by its own slope:

    delta_j = phi'(a_j) * sum_{c: j -> i} B_c^T delta_i,         delta_v = e_v

With ``residual`` a middle unit m_k's rate is the skip's plus its own phi part p_k: its synapses use the slope
of p_k, phi'(a_k) = slope(p_k), and its fixed skip synapse carries the error arriving at m_k, unchanged, to
m_{k-1}: e_k = sum_c B_c^T delta_i (the error arriving at m_k), delta_k = phi'(a_k) e_k, and
e_{k-1} = (its feedback synapses' errors) + e_k. Each plastic synapse still reads its presynaptic rate, its
postsynaptic unit's slope and the error there; the skip synapses do not learn.

and each synapse of connection c moves by the product of its presynaptic rate and its postsynaptic signal,

    dK_c = sum over positions and rows of delta_i (x) r_j,   db_i = sum delta_i,   dw_T,i = sum delta_i log T

(B_c^T: the adjoint of the convolution with B_c, a convolution running the other way.) Three factors per
synapse: the presynaptic rate r_j, the postsynaptic slope phi'(a_i) read from the unit's own rate, and the
error B^T delta that arrives at unit i. With B_c = K_c (``feedback="transpose"``) this is the exact gradient
of the walkback loss (tests prove it in float64). ``"kolen_pollack"`` keeps B_c in a buffer, moved by the
change of K_c, both decaying (Akrout et al. 2019; :meth:`ConvPathway.kolen_pollack_step`); started at K_c
(``feedback_scale=0``) it stays K_c while the decay is 0. ``"random"``: B_c fixed at its draw (feedback
alignment). A shared kernel sums the updates of the synapses it stands for, one per image position, which
is what a convolution is; each position's update is local.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf
from torch import nn
from torch.nn.grad import conv2d_input, conv2d_weight

from asymnet.networks.activations import ACTIVATIONS, RATE_SLOPES

FEEDBACK_KINDS = ("transpose", "random", "kolen_pollack")


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """x (rows, channels, height, width) stored channel-fastest (NHWC). Every convolution of the pathway,
    forward, carried back or correlated for a kernel's update, runs on such operands, on which oneDNN's
    CPU kernels for these few channels run faster: a local-rule update of the main study about 1.2 times
    (benchmarks/training.py on the two layouts' checkouts, alternated), a network call 1.02 to 1.14 times
    (benchmarks/layout.py), with the same values to float rounding. Kernels are converted too: a one-channel
    tensor is both layouts at once, and only the kernel then tells the convolution which to use."""
    return x.contiguous(memory_format=torch.channels_last)


@dataclass(frozen=True)
class Connection:
    """One kernel of the pathway: from layer ``pre`` to layer ``post`` ("v" is the visible layer), a
    convolution (``transposed`` False) or a transposed one, with its kernel size and stride."""

    name: str
    pre: str
    post: str
    size: int
    stride: int
    transposed: bool = False

    @property
    def padding(self) -> int:
        return 1


class ConvPathway(nn.Module):
    """D(v, T) of the module docstring over images (C, H, W) flattened channel-major to C H W visible units.

    Kernels are parameters ``kernel_<name>`` (forward kernels drawn N(0, gain^2 / fan_in), the output kernel
    O at 0), biases ``bias_<layer>`` at 0, temperature weights ``temperature_<layer>`` N(0,
    temperature_gain^2); the feedback kernels are the buffers ``feedback_<name>`` for ``feedback`` random
    or kolen_pollack (N(0, feedback_scale^2 / fan_in), or the forward kernel itself for feedback_scale 0).
    ``input_gain`` (var, sigma_0, f, q): the input gain k(T) of the module docstring; None: 1. ``middle``: n.
    ``residual``: the middle layers' skips (module docstring); needs ``middle`` > 0. ``groups``: G of the
    module docstring's group normalisation (0: none); it must divide every layer's channel count.
    """

    NORM_EPS = 1.0e-5

    def __init__(self, image_shape: tuple[int, int, int], channels: tuple[int, ...], phi: str = "tanh",
                 gain: float = 1.0, temperature_gain: float = 0.2, feedback: str = "transpose",
                 feedback_scale: float = 0.0, generator: torch.Generator | None = None,
                 input_gain: tuple[float, float, float, float] | None = None, middle: int = 0,
                 residual: bool = False, groups: int = 0):
        super().__init__()
        if not channels or any(c < 1 for c in channels):
            raise ValueError(f"the pathway's channels are positive counts, one per level, got {list(channels)}")
        if feedback not in FEEDBACK_KINDS:
            raise ValueError(f"feedback must be one of {', '.join(FEEDBACK_KINDS)}, got {feedback!r}")
        C, H, W = image_shape
        halvings = len(channels) - 1
        if H % 2**halvings or W % 2**halvings:
            raise ValueError(f"{len(channels)} levels halve the image {halvings} times, so its height and width "
                             f"must be divisible by {2**halvings}; got {H} x {W}")
        self.image_shape, self.channels, self.feedback = (C, H, W), tuple(channels), feedback
        self.input_gain = input_gain
        self._phi, self._slope = ACTIVATIONS[phi], RATE_SLOPES[phi]
        if middle < 0:
            raise ValueError(f"the pathway's middle layers are a count, got {middle}")
        if residual and not middle:
            raise ValueError("residual skips pass the middle layers, but there are none; add middle layers or drop "
                             "the skips")
        if groups < 0 or (groups and any(c % groups for c in channels)):
            raise ValueError(f"the pathway's normalisation groups must divide every level's channels "
                             f"{list(channels)}; got {groups}")
        self.groups = groups
        L = len(channels)
        middles = [f"m{k}" for k in range(1, middle + 1)]
        self.layers = [f"h{l}" for l in range(L)] + middles + [f"g{l}" for l in range(L - 2, -1, -1)]
        sizes = {"v": C, **{f"h{l}": c for l, c in enumerate(channels)},
                 **{f"g{l}": channels[l] for l in range(L - 1)}, **{name: channels[-1] for name in middles}}
        bottom = middles[-1] if middles else f"h{L - 1}"
        top = lambda l: bottom if l == L - 1 else f"g{l}"  # noqa: E731  the decoder's layer at level l
        connections = [Connection("E0", "v", "h0", 3, 1)]
        connections += [Connection(f"E{l}", f"h{l - 1}", f"h{l}", 4, 2) for l in range(1, L)]
        connections += [Connection(f"M{k}", f"m{k - 1}" if k > 1 else f"h{L - 1}", f"m{k}", 3, 1)
                        for k in range(1, middle + 1)]
        for l in range(L - 2, -1, -1):
            connections += [Connection(f"U{l}", top(l + 1), f"g{l}", 4, 2, transposed=True),
                            Connection(f"S{l}", f"h{l}", f"g{l}", 3, 1)]
        connections.append(Connection("O", top(0), "v", 3, 1))
        self.connections = connections
        # residual: each middle layer's skip, from the layer it reads (post -> pre); the skips do not learn
        self.skips = {c.post: c.pre for c in connections if c.name.startswith("M")} if residual else {}
        # the presynaptic units each postsynaptic unit reads (a transposed stride-2 kernel reads 1 / stride^2 of its taps)
        fan_in = {c.name: sizes[c.pre] * c.size * c.size // (c.stride**2 if c.transposed else 1) for c in connections}
        for c in connections:
            shape = (sizes[c.pre], sizes[c.post]) if c.transposed else (sizes[c.post], sizes[c.pre])
            kernel = torch.zeros(*shape, c.size, c.size)
            if c.name != "O":
                kernel.normal_(0.0, gain / math.sqrt(fan_in[c.name]), generator=generator)
            self.register_parameter(f"kernel_{c.name}", nn.Parameter(kernel))
        for layer in self.layers:
            self.register_parameter(f"bias_{layer}", nn.Parameter(torch.zeros(sizes[layer])))
            weights = torch.randn(sizes[layer], generator=generator) * temperature_gain
            self.register_parameter(f"temperature_{layer}", nn.Parameter(weights))
            if groups:
                self.register_parameter(f"norm_gain_{layer}", nn.Parameter(torch.ones(sizes[layer])))
        if feedback != "transpose":
            for c in connections:
                K = getattr(self, f"kernel_{c.name}").detach()
                if feedback_scale:
                    start = torch.randn(K.shape, generator=generator) * (feedback_scale / math.sqrt(fan_in[c.name]))
                else:
                    start = K.clone()
                self.register_buffer(f"feedback_{c.name}", start)

    def kernel(self, name: str) -> torch.Tensor:
        return getattr(self, f"kernel_{name}")

    def feedback_kernel(self, name: str) -> torch.Tensor:
        """B_c: the forward kernel itself (detached) for feedback="transpose", else its buffer."""
        if self.feedback == "transpose":
            return self.kernel(name).detach()
        return getattr(self, f"feedback_{name}")

    def _conv(self, c: Connection, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        """Connection c's drive from presynaptic rates x (rows, channels, height, width) through ``kernel``."""
        x, kernel = _channels_last(x), _channels_last(kernel)
        if c.transposed:
            return nnf.conv_transpose2d(x, kernel, stride=c.stride, padding=c.padding)
        return nnf.conv2d(x, kernel, stride=c.stride, padding=c.padding)

    def rates(self, visible_rates: torch.Tensor, T: float | torch.Tensor = 1.0) -> dict[str, torch.Tensor]:
        """Every layer's rates at visible rates (..., C H W) and temperatures T (a float, or a tensor
        broadcastable to visible_rates[..., :1]): a dict from layer name ("v", "h0", ..., "g0") to
        (rows, channels, height, width), rows = the product of the leading axes ("v": the input the encoder
        reads, the visible rates times the input gain); "logT" (rows, or 1 for a float T, 1, 1, 1); for a
        residual middle layer m_k also "m_k:phi", its phi part p_k; with ``groups`` also "<layer>:norm", the
        normalised potential n, and "<layer>:istd", 1 / sqrt(var_g a + eps) (rows, groups, 1)."""
        C, H, W = self.image_shape
        lead = visible_rates.shape[:-1]
        rows = visible_rates.reshape(-1, C, H, W)
        if torch.is_tensor(T):
            T = T.to(dtype=visible_rates.dtype, device=visible_rates.device)
            log_T = torch.log(T.expand(*lead, 1)).reshape(-1, 1, 1, 1)
        else:
            log_T = visible_rates.new_full((1, 1, 1, 1), math.log(T))
        if self.input_gain is not None:
            rows = rows * self.gain(log_T.exp() if torch.is_tensor(T) else T)
        out = {"v": rows, "logT": log_T}
        by_post: dict[str, list[Connection]] = {}
        for c in self.connections:
            by_post.setdefault(c.post, []).append(c)
        for layer in self.layers:
            potential = sum(self._conv(c, out[c.pre], self.kernel(c.name)) for c in by_post[layer])
            if self.groups:
                normed, out[layer + ":istd"] = self._normalise(potential)
                out[layer + ":norm"] = normed
                potential = normed * getattr(self, f"norm_gain_{layer}")[:, None, None]
            shift = getattr(self, f"bias_{layer}") + getattr(self, f"temperature_{layer}") * log_T.reshape(-1, 1)
            rate = self._phi(potential + shift[:, :, None, None])
            if layer in self.skips:  # the residual unit: the skip's rate plus its own phi part
                out[layer + ":phi"] = rate
                rate = out[self.skips[layer]] + rate
            out[layer] = rate
        return out

    def _normalise(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, 1 / sqrt(var_g a + eps)) of the module docstring for potentials a (rows, channels, height,
        width), the statistics over each row's groups of channels and all positions: in float32 at least
        (bfloat16 under autocast keeps 3 digits), by channel first, so that a channels-last a is never
        copied to another layout."""
        C = a.shape[1]
        centred = a - self._by_channel(self._group_mean(a), C)  # float32 for a bfloat16 a (faster on CPU too)
        istd = (self._group_mean(centred * centred) + self.NORM_EPS).rsqrt()
        return (centred * self._by_channel(istd, C)).to(a.dtype), istd

    def _normalise_back(self, z: torch.Tensor, normed: torch.Tensor, istd: torch.Tensor) -> torch.Tensor:
        """delta_a of the module docstring: the error z (rows, channels, height, width) at the normalised
        potentials n carried back through the group's normalisation to the potentials."""
        C = z.shape[1]
        back = z - self._by_channel(self._group_mean(z), C) - normed * self._by_channel(self._group_mean(z * normed), C)
        return back * self._by_channel(istd, C)

    def _group_mean(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of x (rows, channels, height, width) over each row's groups: (rows, groups, 1)."""
        by_channel = x.mean((2, 3), dtype=torch.promote_types(x.dtype, torch.float32))
        return by_channel.reshape(x.shape[0], self.groups, -1).mean(-1, keepdim=True)

    @staticmethod
    def _by_channel(group_values: torch.Tensor, channels: int) -> torch.Tensor:
        """(rows, groups, 1) spread to each group's channels: (rows, channels, 1, 1)."""
        rows, groups, _ = group_values.shape
        return group_values.expand(rows, groups, channels // groups).reshape(rows, channels, 1, 1)

    def gain(self, T: float | torch.Tensor) -> float | torch.Tensor:
        """k(T) = 1 / sqrt(var + V(T)) of ``input_gain`` (module docstring); a float for a float T."""
        var, sigma0, f, q = self.input_gain
        added = sigma0**2 * f**q * (T**q - 1.0) / (f**q - 1.0)
        if torch.is_tensor(T):
            return (var + added.clamp_min(0.0)).rsqrt()
        return 1.0 / math.sqrt(var + max(added, 0.0))

    def drive(self, cache: dict[str, torch.Tensor], lead: torch.Size) -> torch.Tensor:
        """D, the output O * g_0 of :meth:`rates`' layers, as (*lead, C H W)."""
        c = self.connections[-1]
        return self._conv(c, cache[c.pre], self.kernel(c.name)).reshape(*lead, -1)

    def forward(self, visible_rates: torch.Tensor, T: float | torch.Tensor = 1.0) -> torch.Tensor:
        """D(v, T), (..., C H W), for visible rates (..., C H W)."""
        return self.drive(self.rates(visible_rates, T), visible_rates.shape[:-1])

    @torch.no_grad()
    def local_gradients(self, cache: dict[str, torch.Tensor], post: torch.Tensor, batch: int) -> dict[str, torch.Tensor]:
        """The local rule's gradients (the negatives of the updates) of every parameter, by name, for the
        visible postsynaptic factor ``post`` (..., C H W) at the layers' rates ``cache`` (:meth:`rates` of
        the same rows); summed over the rows and divided by ``batch``, as the walkback loss is a batch mean."""
        C, H, W = self.image_shape
        delta = {"v": post.reshape(-1, C, H, W)}
        log_T = cache["logT"]
        if log_T.shape[0] != delta["v"].shape[0]:
            log_T = log_T.expand(delta["v"].shape[0], 1, 1, 1)
        grads: dict[str, torch.Tensor] = {}
        by_pre: dict[str, list[Connection]] = {}
        for c in self.connections:
            by_pre.setdefault(c.pre, []).append(c)
        skipped_from = {pre: post for post, pre in self.skips.items()}
        arriving: dict[str, torch.Tensor] = {}
        for layer in reversed(self.layers):  # every layer after all the layers it projects to
            arriving[layer] = sum(self._carry_back(c, delta[c.post], cache[c.pre].shape) for c in by_pre[layer])
            if layer in skipped_from:  # the fixed skip synapse carries the error arriving at the unit it feeds
                arriving[layer] = arriving[layer] + arriving[skipped_from[layer]]
            delta[layer] = arriving[layer] * self._slope(cache[layer + ":phi" if layer in self.skips else layer])
            grads[f"bias_{layer}"] = -delta[layer].sum((0, 2, 3)) / batch
            grads[f"temperature_{layer}"] = -(delta[layer] * log_T).sum((0, 2, 3)) / batch
            if self.groups:  # the group's pool carries the error on to the potentials
                normed, gamma = cache[layer + ":norm"], getattr(self, f"norm_gain_{layer}").detach()
                grads[f"norm_gain_{layer}"] = -(delta[layer] * normed).sum((0, 2, 3)) / batch
                delta[layer] = self._normalise_back(delta[layer] * gamma[:, None, None], normed,
                                                    cache[layer + ":istd"])
        for c in self.connections:
            K = self.kernel(c.name)
            pre, post_signal = _channels_last(cache[c.pre]), _channels_last(delta[c.post])
            if c.transposed:  # y = K^T-conv of x: the kernel's correlation of the post signal with the pre rates
                grad = conv2d_weight(post_signal, K.shape, pre, stride=c.stride, padding=c.padding)
            else:
                grad = conv2d_weight(pre, K.shape, post_signal, stride=c.stride, padding=c.padding)
            grads[f"kernel_{c.name}"] = -grad / batch
        return grads

    def _carry_back(self, c: Connection, delta_post: torch.Tensor, pre_shape: torch.Size) -> torch.Tensor:
        """B_c^T delta_post: the error the feedback synapses of connection c bring to its presynaptic layer."""
        B, delta_post = _channels_last(self.feedback_kernel(c.name)), _channels_last(delta_post)
        if c.transposed:
            return nnf.conv2d(delta_post, B, stride=c.stride, padding=c.padding)
        return conv2d_input(pre_shape, B, delta_post, stride=c.stride, padding=c.padding)

    @torch.no_grad()
    def kolen_pollack_step(self, before: dict[str, torch.Tensor], decay: float) -> None:
        """After the optimiser moved each kernel K_c by u_c (``before``: the kernels before the step, by
        connection name): K_c <- K_c_before + u_c - decay K_c_before, B_c <- B_c + u_c - decay B_c, so
        B_c - K_c shrinks by (1 - decay) per step whatever u is."""
        for c in self.connections:
            K, start = self.kernel(c.name), before[c.name]
            change = K - start
            K.sub_(start * decay)
            getattr(self, f"feedback_{c.name}").mul_(1.0 - decay).add_(change)

    def kernels_before(self) -> dict[str, torch.Tensor]:
        return {c.name: self.kernel(c.name).detach().clone() for c in self.connections}

    def feedback_alignment(self) -> float:
        """cos(B, K) over all the pathway's kernels at once (1 for transpose feedback)."""
        with torch.no_grad():
            K = torch.cat([self.kernel(c.name).reshape(-1) for c in self.connections]).double()
            B = torch.cat([self.feedback_kernel(c.name).reshape(-1) for c in self.connections]).double()
            return (K @ B / (K.norm() * B.norm())).item()

"""A convolutional U-Net operator network F(s, T) for images, conditioned on the temperature.

The Variational Walkback paper's CIFAR operators are U-Net-style convolutional networks that see the
temperature. Here, for an image s of shape (C, H, W) flattened to (batch, C*H*W) in (C, H, W) order,

    F_mu(s, T) = s + out_mu(h(s, T)),    F_sigma = sigma  (pre-softplus, one learned value per pixel),

where h is the U-Net's last feature map. out_mu starts at zero, so the untrained operator's mean
(1 - alpha) s + alpha F_mu(s) is exactly s: the leaky identity plus noise, which training bends into
the walk back. sigma starts at inverse_softplus(sigma_init), so the initial std is g(T) sigma_init at
every pixel. The noise level depends on neither the state nor T (as the recurrent network's): the
schedule's T_max assumes that the std at temperature T is g(T) times the T = 1 std, and a sigma head
that reads T learns to raise the noise of the hot steps, which heats the chain far past sigma_max
(on MNIST, p*'s variance reached 356 per pixel after 750 updates against sigma_max^2 = 1) and leaves
the walk back nothing it can undo. The last conv of every residual block also starts at zero
(each block starts as its skip path, as in DDPM), which keeps a deep stack stable early in training.

Architecture: input conv; per resolution level ``n_res_blocks`` residual blocks (GroupNorm -> SiLU ->
conv3x3 -> GroupNorm -> + temperature shift -> SiLU -> conv3x3, plus a 1x1 skip when the channels
change); a stride-2 conv between levels; a middle block; the mirrored path up (nearest upsample x2 +
conv3x3), the down path's feature map of each level concatenated before that level's blocks; output
GroupNorm -> SiLU -> conv3x3 head for mu. Temperature embedding: log T and sin/cos of
log T at a few frequencies -> Linear -> SiLU -> Linear, projected to a per-channel shift in each block.

Shape rule: the network has len(channel_mults) levels, hence len(channel_mults) - 1 halvings, and does
not pad: H and W must be divisible by 2**(len(channel_mults) - 1) (28x28 with 3 levels: 28 -> 14 -> 7;
32x32 with 4 levels: 32 -> 16 -> 8 -> 4).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as nnf
from torch import nn

from asymnet.networks.recurrent import inverse_softplus
from asymnet.networks.temperature import log_temperatures, posterior_leak
from asymnet.operators import Drive

# Angular frequencies of the log T features: periods 32, 16, 8, 4, 2 and 1 in log T, so both the hot
# end (log T_max ~ 10 for CIFAR) and the last halvings (log 2 apart) are resolved.
_LOG_T_FREQUENCIES = tuple(2.0 * math.pi / 2.0**k for k in range(5, -1, -1))


def _group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= 8 that divides channels (per-sample, so rows stay independent).

    With <= 8 channels every group is one channel (an instance norm), which erases any per-channel
    constant: some conv biases of such a narrow network then have no effect.
    """
    groups = max(g for g in range(1, min(8, channels) + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


def log_temperature_features(log_T: torch.Tensor) -> torch.Tensor:
    """(log T, sin(w_k log T), cos(w_k log T)) for the frequencies w_k: (rows,) -> (rows, 1 + 2 * n_freq)."""
    angles = log_T[:, None] * log_T.new_tensor(_LOG_T_FREQUENCIES)
    return torch.cat([log_T[:, None], torch.sin(angles), torch.cos(angles)], dim=1)


def _upsample_nearest(h: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour x2 upsampling (batch, c, h, w) -> (batch, c, 2h, 2w); twice as fast on CPU as interpolate."""
    batch, channels, height, width = h.shape
    return h[:, :, :, None, :, None].expand(-1, -1, -1, 2, -1, 2).reshape(batch, channels, 2 * height, 2 * width)


class _ResidualBlock(nn.Module):
    """x + conv(SiLU(GN(conv(SiLU(GN(x)))) + shift(T_emb))), with a 1x1 conv skip when channels change.

    The temperature shift comes after the second GroupNorm, not before it (as in DDPM): a per-channel
    constant added before a GroupNorm whose groups hold one channel each (any block of <= 8 channels)
    is exactly what the norm subtracts, and the network would not see T at all.
    """

    def __init__(self, channels_in: int, channels_out: int, embedding_width: int | None):
        super().__init__()
        self.norm1 = _group_norm(channels_in)
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, padding=1)
        self.temperature_shift = None if embedding_width is None else nn.Linear(embedding_width, channels_out)
        self.norm2 = _group_norm(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1)
        self.skip = nn.Identity() if channels_in == channels_out else nn.Conv2d(channels_in, channels_out, 1)

    def forward(self, x: torch.Tensor, embedding: torch.Tensor | None) -> torch.Tensor:
        h = self.norm2(self.conv1(nnf.silu(self.norm1(x))))
        if self.temperature_shift is not None:
            h = h + self.temperature_shift(nnf.silu(embedding))[:, :, None, None]
        h = self.conv2(nnf.silu(h))
        return self.skip(x) + h


class UNetNetwork(nn.Module):
    """(F_mu(s, T), F_sigma) from a U-Net over images s (batch, C*H*W), optionally conditioned on log T.

    image_shape: (C, H, W); H and W divisible by 2**(len(channel_mults) - 1). Level i has
    base_channels * channel_mults[i] channels. With ``temperature_conditioned=False`` T is ignored.
    ``learn_sigma=False`` freezes the per-pixel sigma at its initial value (std sigma_init everywhere).
    The drive is mu = s + G(s, T), G the U-Net's output; with ``posterior_leak=(f, q)`` (network.posterior_leak)
    mu = c(T) s + (1 - c(T)) (s + G) = s + (1 - c(T)) G, c(T) the share of s_t in the mean of s_{t-1} given s_t
    and the data (networks.temperature.posterior_leak), so s + G estimates the data behind the state and G
    the noise added to it, at every temperature on the same scale.
    Weights are drawn from ``generator`` (uniform(-1, 1) / sqrt(fan_in), biases 0), so one seed gives
    one network.
    """

    temperature_rows = True  # forward takes a (batch,) tensor of temperatures (asymnet.walkback.walkback_losses)

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        base_channels: int = 32,
        channel_mults: tuple[int, ...] = (1, 2, 2),
        n_res_blocks: int = 1,
        sigma_init: float = 0.1,
        learn_sigma: bool = True,
        temperature_conditioned: bool = True,
        generator: torch.Generator | None = None,
        posterior_leak: tuple[float, float] | None = None,
    ):
        super().__init__()
        self.posterior_leak = posterior_leak
        image_shape = tuple(image_shape)
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(f"image_shape must be (C, H, W) with positive sizes; got {image_shape}")
        if not channel_mults or min(channel_mults) < 1 or base_channels < 1 or n_res_blocks < 1:
            raise ValueError("base_channels, n_res_blocks and every channel_mult must be at least 1, with at least "
                             f"one level; got base_channels={base_channels}, n_res_blocks={n_res_blocks}, "
                             f"channel_mults={tuple(channel_mults)}")
        n_channels, height, width = image_shape
        factor = 2 ** (len(channel_mults) - 1)
        if height % factor or width % factor:
            raise ValueError(
                f"image_shape {image_shape}: H and W must be divisible by 2**(len(channel_mults) - 1) = {factor} "
                f"for {len(channel_mults)} levels ({len(channel_mults) - 1} halvings, no padding); "
                "use fewer channel_mults or pad the images")
        self.image_shape = image_shape
        self.n_visible = self.n_units = n_channels * height * width
        self.n_hidden = 0
        self.temperature_conditioned = temperature_conditioned

        embedding_width = None
        if temperature_conditioned:
            embedding_width = 4 * base_channels
            n_features = 1 + 2 * len(_LOG_T_FREQUENCIES)
            self.temperature_embedding = nn.Sequential(
                nn.Linear(n_features, embedding_width), nn.SiLU(), nn.Linear(embedding_width, embedding_width))
        level_channels = [base_channels * mult for mult in channel_mults]

        self.input_conv = nn.Conv2d(n_channels, base_channels, 3, padding=1)
        self.down_blocks = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        channels = base_channels
        for level, channels_out in enumerate(level_channels):
            blocks = nn.ModuleList()
            for _ in range(n_res_blocks):
                blocks.append(_ResidualBlock(channels, channels_out, embedding_width))
                channels = channels_out
            self.down_blocks.append(blocks)
            if level < len(level_channels) - 1:
                self.downsamples.append(nn.Conv2d(channels, channels, 3, stride=2, padding=1))
        self.middle_block = _ResidualBlock(channels, channels, embedding_width)
        self.up_blocks = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        for level in reversed(range(len(level_channels))):
            channels_out = level_channels[level]
            blocks = nn.ModuleList([_ResidualBlock(channels + channels_out, channels_out, embedding_width)])
            blocks.extend(_ResidualBlock(channels_out, channels_out, embedding_width) for _ in range(n_res_blocks - 1))
            channels = channels_out
            self.up_blocks.append(blocks)
            if level > 0:
                self.upsamples.append(nn.Conv2d(channels, level_channels[level - 1], 3, padding=1))
                channels = level_channels[level - 1]
        self.output_norm = _group_norm(channels)
        self.mu_head = nn.Conv2d(channels, n_channels, 3, padding=1)
        self.sigma = nn.Parameter(torch.full((self.n_units,), inverse_softplus(sigma_init)), requires_grad=learn_sigma)

        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, (nn.Linear, nn.Conv2d)):
                    fan_in = module.weight[0].numel()
                    bound = 1.0 / math.sqrt(fan_in)
                    module.weight.copy_((torch.rand(module.weight.shape, generator=generator) * 2 - 1) * bound)
                    module.bias.zero_()
            for module in self.modules():
                if isinstance(module, _ResidualBlock):
                    module.conv2.weight.zero_()
            self.mu_head.weight.zero_()

    def _embed_temperature(self, T: float | torch.Tensor, s: torch.Tensor) -> torch.Tensor | None:
        """Temperature embedding (1 or batch, 4 * base_channels), or None for an unconditioned network."""
        if not self.temperature_conditioned:
            return None
        log_T = log_temperatures(T, s)
        return self.temperature_embedding(log_temperature_features(log_T))

    def forward(self, s: torch.Tensor, T: float | torch.Tensor = 1.0) -> Drive:
        """Drive at states s (batch, C*H*W): mu (batch, C*H*W), pre-softplus sigma (C*H*W,).

        T: a float, or a (batch,) tensor giving each row its own temperature.
        """
        if s.ndim != 2 or s.shape[1] != self.n_units:
            raise ValueError(f"UNetNetwork for image_shape {self.image_shape} expects states of shape "
                             f"(batch, {self.n_units}), flattened in (C, H, W) order; got shape {tuple(s.shape)}")
        embedding = self._embed_temperature(T, s)
        h = self.input_conv(s.reshape(s.shape[0], *self.image_shape))
        skips = []
        for level, blocks in enumerate(self.down_blocks):
            for block in blocks:
                h = block(h, embedding)
            skips.append(h)
            if level < len(self.downsamples):
                h = self.downsamples[level](h)
        h = self.middle_block(h, embedding)
        for level, blocks in enumerate(self.up_blocks):
            h = torch.cat([h, skips.pop()], dim=1)
            for block in blocks:
                h = block(h, embedding)
            if level < len(self.upsamples):
                h = self.upsamples[level](_upsample_nearest(h))
        h = nnf.silu(self.output_norm(h))
        step = self.mu_head(h).flatten(1)
        if self.posterior_leak is not None:
            keep = posterior_leak(T, *self.posterior_leak)
            if torch.is_tensor(keep):
                keep = keep.to(dtype=s.dtype, device=s.device).reshape(-1, 1)
            step = (1.0 - keep) * step
        return Drive(s + step, self.sigma)

"""What a walk back of a given shape can draw, trained by the exact gradient outside the package.

A noise-heated walk back (s_t = s_0 + sqrt(V_t) eps) with the posterior leak, written as a plain denoiser
g(s, T) of the data behind the state: mu(s_t) = c_t s_t + (1 - c_t) g(s_t, T_t). It is trained at
temperatures drawn log-uniformly, so one network serves any cooling schedule, and scored with the
project's classifier after cooling with a schedule of any heating factor. What it answers: with the same
trained walk back, how much do finer cooling steps, a gain on the input and a second hidden layer buy?

    python -m studies.mnist_stdp.ceiling --arch dense --hidden 1024 --steps 3000 --factors 2,1.25,1.1
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn

from asymnet.data import find_data_dir
from asymnet.evaluate import mnist_classifier
from asymnet.data.mnist import load_mnist
from asymnet.metrics import quality

SIGMA0 = 0.05  # the main study's operator.sigma: the T = 1 noise level
T_MAX = 400.0  # its sigma_max 1


class Denoiser(nn.Module):
    """g(s, T): visible rates phi_v(c_in s) (identity), a linear skip W_vv, hidden layers of tanh units with
    a log T input each, and a linear readout. ``gain``: c_in(T) = 1 / sqrt(var_data + V(T)) on the input."""

    def __init__(self, hidden: list[int], gain: bool, field: int = 0, channels: int = 1):
        super().__init__()
        self.gain = gain
        self.skip = nn.Linear(784, 784)
        dense = hidden[0]
        hidden = [dense + (784 * channels if field else 0)] + hidden[1:]
        sizes = [784] + hidden
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.temperature = nn.ParameterList(nn.Parameter(torch.randn(b) * 0.2) for b in hidden)
        self.readout = nn.Linear(sizes[-1], 784)
        nn.init.zeros_(self.readout.weight)
        self.mask = None
        self.precond = None
        if field:
            rows = torch.arange(784) // 28
            cols = torch.arange(784) % 28
            near = ((rows[:, None] - rows[None, :]).abs() <= field // 2) & ((cols[:, None] - cols[None, :]).abs() <= field // 2)
            # the first layer's dense units see every pixel; local unit (c, i) sees the field around pixel i
            self.mask = torch.cat([torch.ones(dense, 784), near.float().repeat(channels, 1)])

    def forward(self, s, V):
        logT = torch.log(V / SIGMA0**2).clamp_min(0)
        if self.precond is not None:  # EDM (Karras et al. 2022): D = m + c_skip (s - m) + c_out F(c_in (s - m))
            mean, var = self.precond
            c_skip, c_out, c_in = var / (var + V), (V * var / (var + V)).sqrt(), 1 / (var + V).sqrt()
            x = c_in * (s - mean)
            return mean + c_skip * (s - mean) + c_out * self.plain(x, logT)
        x = s / torch.sqrt(0.095 + V) if self.gain else s
        return self.plain(x, logT)

    def plain(self, x, logT):
        h = x
        for k, (layer, w_T) in enumerate(zip(self.layers, self.temperature)):
            weight = layer.weight * self.mask if (k == 0 and self.mask is not None) else layer.weight
            h = torch.tanh(nn.functional.linear(h, weight, layer.bias) + w_T * logT)
        return self.skip(x) + self.readout(h)


class ConvDenoiser(nn.Module):
    """g(s, T) = W_vv s + b + D(s, T): a linear skip and a plain convolutional encoder-decoder of tanh units
    (28 -> 14 -> 7 and back, additive lateral skips, a log T input to every channel), no normalisation and
    no residual blocks: the shape a layer-by-layer local rule can train. ``channels`` (C1, C2, C3); ``gain``:
    the encoder reads s / sqrt(var_data + V), the skip s itself."""

    def __init__(self, channels: tuple[int, int, int], skip: bool = True, gain: bool = False, mid: int = 0):
        super().__init__()
        self.gain = gain
        c1, c2, c3 = channels
        conv, up = nn.Conv2d, nn.ConvTranspose2d
        self.skip = nn.Linear(784, 784) if skip else None
        self.e1, self.e2, self.e3 = conv(1, c1, 3, padding=1), conv(c1, c2, 4, 2, 1), conv(c2, c3, 4, 2, 1)
        self.d2, self.l2 = up(c3, c2, 4, 2, 1), conv(c2, c2, 3, padding=1)
        self.d1, self.l1 = up(c2, c1, 4, 2, 1), conv(c1, c1, 3, padding=1)
        self.mid = nn.ModuleList(conv(c3, c3, 3, padding=1) for _ in range(mid))
        self.mid_temperature = nn.ParameterList(nn.Parameter(torch.randn(c3) * 0.2) for _ in range(mid))
        self.out = conv(c1, 1, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.temperature = nn.ParameterList(nn.Parameter(torch.randn(c) * 0.2) for c in (c1, c2, c3, c2, c1))
        self.precond = None
        self.mask = None

    def forward(self, s, V):
        logT = torch.log(V / SIGMA0**2).clamp_min(0).reshape(-1, 1, 1, 1)
        w = [t.view(1, -1, 1, 1) * logT for t in self.temperature]
        x = (s / torch.sqrt(0.095 + V) if self.gain else s).reshape(-1, 1, 28, 28)
        h1 = torch.tanh(self.e1(x) + w[0])
        h2 = torch.tanh(self.e2(h1) + w[1])
        h3 = torch.tanh(self.e3(h2) + w[2])
        for layer, t in zip(self.mid, self.mid_temperature):
            h3 = torch.tanh(layer(h3) + t.view(1, -1, 1, 1) * logT)
        g2 = torch.tanh(self.d2(h3) + self.l2(h2) + w[3])
        g1 = torch.tanh(self.d1(g2) + self.l1(h1) + w[4])
        out = self.out(g1).reshape(-1, 784)
        return out + (self.skip(s) if self.skip is not None else s)


class UNetDenoiser(nn.Module):
    """g(s, T) = s + G(s, T), G the package's U-Net (studies/mnist_unet_leak.yaml's: 8 channels, [1, 2, 4]),
    T = 1 + V / sigma_0^2: the reference the plain networks are measured against."""

    def __init__(self):
        super().__init__()
        from asymnet.networks.unet import UNetNetwork

        self.net = UNetNetwork((1, 28, 28), 8, (1, 2, 4), 1, generator=torch.Generator().manual_seed(0))
        self.mask = None

    def forward(self, s, V):
        T = (1.0 + V / SIGMA0**2).reshape(-1).expand(len(s)) if torch.is_tensor(V) else 1.0 + V / SIGMA0**2
        return self.net(s, T).mu


def schedule(factor: float) -> torch.Tensor:
    """V_0 = 0, V_1 .. V_K: the cumulative variance of a heating with T_k = factor^(k-1), tau_k = sigma0^2 T_k,
    up to T_max (the package's schedule with no extra T = 1 steps)."""
    K = max(1, math.ceil(math.log(T_MAX) / math.log(factor) - 1e-9))
    T = factor ** torch.arange(K + 1, dtype=torch.float64)
    return torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(SIGMA0**2 * T, 0)])


@torch.no_grad()
def cool(model, V, n, generator, data_mean, data_var, noise=1.0):
    """Ancestral cooling: s_K ~ N(mean, var_data + V_K), then s_{t-1} ~ N(posterior mean with g, posterior
    variance) for t = K..2, and the last step's mean g(s_1) (final_mean)."""
    s = data_mean + torch.sqrt(data_var + V[-1]) * torch.randn(n, 784, generator=generator)
    for t in range(len(V) - 1, 0, -1):
        Vt, Vb = float(V[t]), float(V[t - 1])
        x0 = model(s, torch.tensor(Vt))
        if t == 1:
            return x0
        c = Vb / Vt
        s = c * s + (1 - c) * x0 + noise * math.sqrt(Vb * (Vt - Vb) / Vt) * torch.randn(n, 784, generator=generator)
    return s


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", default="1024", help="hidden layer sizes, comma separated; the first layer's "
                        "dense units (the local ones of --field come beside them)")
    parser.add_argument("--gain", action="store_true")
    parser.add_argument("--conv", default="", help="channels C1,C2,C3 of a convolutional encoder-decoder in place "
                        "of the dense hidden layers")
    parser.add_argument("--unet", action="store_true", help="the package's U-Net (mnist_unet_leak's) in place of "
                        "the dense hidden layers")
    parser.add_argument("--mid", type=int, default=0, help="with --conv: 3 x 3 layers at the lowest resolution")
    parser.add_argument("--no-skip", action="store_true", help="with --conv: the identity in place of the linear skip")
    parser.add_argument("--field", type=int, default=0, help="local receptive field of the first hidden layer")
    parser.add_argument("--channels", type=int, default=1, help="local units per pixel")
    parser.add_argument("--discrete", type=float, default=0.0,
                        help="train on the steps of the package's schedule T_t = f^t to T_max, with its loss weights")
    parser.add_argument("--discrete-scale", type=float, default=1 / 4000,
                        help="with --discrete: the loss weights times this (Adam's eps makes the scale matter)")
    parser.add_argument("--first-weight", type=float, default=1.0,
                        help="with --discrete: the first step's loss weight times this")
    parser.add_argument("--v-max", type=float, default=0.0,
                        help="without --discrete: the largest noise variance trained (0: the factor-2 schedule's)")
    parser.add_argument("--precond", action="store_true")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight", default="elbo", choices=["elbo", "edm", "x0", "half"])
    parser.add_argument("--factors", default="2,1.25,1.1")
    parser.add_argument("--noise", default="1", help="scales of the cooling noise, comma separated")
    parser.add_argument("--save", default="")
    parser.add_argument("--load", default="")
    parser.add_argument("--data", default=None, help="the MNIST folder (default: ASYMNET_DATA)")
    parser.add_argument("--grids", default="", help="save a 10 x 10 grid of samples per schedule into this folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    folder = find_data_dir(args.data)
    images, _ = load_mnist(folder, "train")
    x = torch.from_numpy(images).reshape(-1, 784).float() / 255.0
    test, _ = load_mnist(folder, "test")
    test = torch.from_numpy(test).reshape(-1, 784).float() / 255.0
    data_mean, data_var = x.mean(0), x.var(0).mean()
    if args.unet:
        model = UNetDenoiser()
    elif args.conv:
        model = ConvDenoiser(tuple(int(c) for c in args.conv.split(",")), not args.no_skip, args.gain, args.mid)
    else:
        model = Denoiser([int(h) for h in args.hidden.split(",") if h], args.gain, args.field, args.channels)
    if args.precond:
        model.precond = (x.mean(0), x.var(0).mean())
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    lr = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.steps)
    V_lo, V_hi = math.log(SIGMA0**2), math.log(args.v_max or float(schedule(2.0)[-1]))
    start = time.time()
    if args.load:
        model.load_state_dict(torch.load(args.load))
        args.steps = 0
    for step in range(args.steps):
        x0 = x[torch.randint(len(x), (args.batch,))]
        x0 = x0 + torch.rand_like(x0) / 256.0
        V = torch.exp(V_lo + (V_hi - V_lo) * torch.rand(args.batch, 1))
        if args.discrete:  # the package's steps: V_t = sigma0^2 (f + ... + f^t), weight (1 - c)^2 / (2 tau)
            f = args.discrete
            K = math.ceil(math.log(T_MAX) / math.log(f) - 1e-9)
            t = torch.randint(1, K + 1, (args.batch, 1)).double()
            tau = SIGMA0**2 * f**t
            V = (SIGMA0**2 * f * (f**t - 1) / (f - 1))
            discrete_w = ((tau / V) ** 2 / (2 * tau)).float()
            discrete_w = torch.where(t == 1, discrete_w * args.first_weight, discrete_w)
            V = V.float()
        s = x0 + V.sqrt() * torch.randn_like(x0)
        err = (model(s, V) - x0).pow(2).sum(1, keepdim=True)
        # the VW loss of a step at V with tau ~ V / 2 (factor 2) weighs the error (1 - c)^2 / (2 tau) ~ 1 / (4 V)
        # (elbo); EDM's weight (V + var) / (V var) caps it at the cold end; x0: 1
        w = {"elbo": 0.25 / V, "edm": (V + data_var) / (V * data_var) / 4, "x0": torch.ones_like(V),
             "half": 0.25 / V.sqrt()}[args.weight]
        if args.discrete:
            w = discrete_w * args.discrete_scale
        loss = (w * err).mean() / 784
        optimizer.zero_grad()
        loss.backward()
        if model.mask is not None:
            model.layers[0].weight.grad *= model.mask
        optimizer.step()
        lr.step()
        if step % 500 == 0:
            print(f"step {step} loss {loss.item():.4f} {time.time() - start:.0f}s", flush=True)
    train_s = time.time() - start
    if args.save:
        torch.save(model.state_dict(), args.save)
    classifier = mnist_classifier(args.data, quiet=True)
    with torch.no_grad():
        features = classifier.features(test[1000:])
    radii = quality.knn_radii(features)
    for factor, noise in [(float(f), float(z)) for f in args.factors.split(",") for z in args.noise.split(",")]:
        V = schedule(factor)
        t0 = time.time()
        samples = cool(model, V, 1000, torch.Generator().manual_seed(1), data_mean, data_var, noise).clamp(0, 1)
        scores = quality.classifier_scores(classifier, samples, features, reference_radii=radii)
        scores.update(quality.memorisation_figures(samples, x))
        print(f"factor {factor} K {len(V) - 1} noise {noise}: conf {scores['confident_fraction']:.3f} entropy "
              f"{scores['label_entropy']:.3f} FD {scores['frechet_distance']:.0f} P/R {scores['precision']:.3f}/"
              f"{scores['recall']:.3f} nearest {scores['nearest_train_distance']:.2f} "
              f"(train {train_s:.0f} s, cool {time.time() - t0:.0f} s)", flush=True)
        if args.grids:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            grid = samples[:100].reshape(10, 10, 28, 28).permute(0, 2, 1, 3).reshape(280, 280)
            plt.imsave(f"{args.grids}/ceiling_{(args.conv or args.hidden).replace(',', '-')}_{factor}_{noise}.png", grid.numpy(), cmap="gray")


if __name__ == "__main__":
    main()

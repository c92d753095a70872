"""A negative phase for the first level's implied energy (``walkback.contrast_weight``).

The walk back scores each level's estimate on its noise shell around the training images, and a long T = 1
chain walks out of that shell (docs/design.md, "The negative phase"). A Boltzmann machine meets the same problem
with a negative phase, which this term gives the first level. By Tweedie's formula the first level's mean
mu(s) = mu(s, T_1) implies the score (mu(s) - s) / tau_1 of the data blurred by the first heating step (tau_1 its
variance, up to the share c(T_1) of the state the leak keeps), so where that field is a gradient it implies an
energy E whose difference between a heated training image x and a state c of the model's own chain is the line
integral

    E(x) - E(c) = integral_0^1 (s_u - mu(s_u)) . (x - c) / tau_1 du,    s_u = c + u (x - c),

estimated at ``DRAWS`` stratified points u per pair. The term adds ``weight`` times the mean over pairs of
E(x) - E(c) to the walk back's loss: it lowers the energy at the data and raises it where the chain is, and it
vanishes in expectation when the chain's law is the heated data's. The chains are ``walkback.contrast_chains``
persistent T = 1 chains of the operator, each advanced ``walkback.contrast_steps`` steps per update and paired
with a fresh training image heated by tau_1; they start at heated training images and are part of the
checkpoint.

Under the local rule the term's gradient is a walk-back step's: its derivative with respect to the mean at s_u
is -weight (x - c) / tau_1, an error present at each visible unit, which the rule carries as it carries the walk
back's (``local_update``: the target mu(s_u) + (x - c) std^2 / tau_1 held at the postsynaptic unit).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from asymnet import plasticity, schedule
from asymnet.data import Dataset

DRAWS = 2  # points per segment


@dataclass
class ContrastPairs:
    """One update's pairs: ``points`` s_u and ``directions`` x - c, both (DRAWS * chains, n), at level ``T``
    whose heating variance is ``tau``; ``states`` the chains' states after this update's steps."""

    points: torch.Tensor
    directions: torch.Tensor
    T: float
    tau: float
    states: torch.Tensor


def first_level(model, study) -> tuple[float, float]:
    """T_1, the schedule's first level, and tau_1, the variance its heating step adds."""
    T_1 = schedule.heating_temperatures(0, model.n_heating, study.walkback.heating_factor)[0]
    tau = model.heating.step_variances(model.operator, torch.tensor(T_1, dtype=torch.float64)).item()
    return T_1, tau


def heated_images(data: Dataset, n: int, tau: float, generator: torch.Generator, dtype, device) -> torch.Tensor:
    """``n`` training images drawn with replacement, dequantised, plus N(0, tau) noise: draws of the data blurred
    at the first level."""
    rows = data.train[torch.randint(0, len(data.train), (n,), generator=generator)]
    x = data.batch(rows, generator, dtype)
    return (x + tau**0.5 * torch.randn(x.shape, generator=generator, dtype=dtype)).to(device)


def segment_points(x: torch.Tensor, c: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The points s_u = c + u (x - c) at DRAWS stratified u per row (u in [k / DRAWS, (k + 1) / DRAWS) for the
    k-th block of rows) and their directions x - c, each (DRAWS * rows, n)."""
    rows = len(x)
    u = (torch.arange(DRAWS, dtype=torch.float64).repeat_interleave(rows)
         + torch.rand(DRAWS * rows, generator=generator, dtype=torch.float64)) / DRAWS
    d = (x - c).repeat(DRAWS, 1)
    return c.repeat(DRAWS, 1) + u.to(x.dtype).to(x.device).unsqueeze(1) * d, d


def draw_pairs(model, study, data: Dataset, dtype) -> ContrastPairs:
    """Advance the persistent chains (started at heated training images on the first call) by
    walkback.contrast_steps T = 1 steps and pair each with a fresh heated training image. Draws from the
    training generator (images, u) and the heating noise's generator (the chains' noise)."""
    net, operator, cfg = model.network, model.operator, study.walkback
    device = next(net.parameters()).device
    T_1, tau = first_level(model, study)
    with torch.no_grad():
        chains = model.contrast_chains
        if chains is None:
            chains = heated_images(data, cfg.contrast_chains, tau, model.generator, dtype, device)
        for _ in range(cfg.contrast_steps):
            chains = operator.sample(chains, net(chains, 1.0), 1.0, model.noise_generator)
        x = heated_images(data, cfg.contrast_chains, tau, model.generator, dtype, device)
        points, directions = segment_points(x, chains, model.generator)
    return ContrastPairs(points, directions, T_1, tau, chains)


def energy_gap(net, operator, pairs: ContrastPairs) -> torch.Tensor:
    """The mean over the pairs' points of (s_u - mu(s_u)) . (x - c) / tau_1: the estimate of E(x) - E(c),
    differentiable in the network's parameters."""
    mean = operator.mean(pairs.points, net(pairs.points, pairs.T))
    return ((pairs.points - mean) * pairs.directions).sum(1).mean() / pairs.tau


def local_update(net, operator, pairs: ContrastPairs) -> tuple[plasticity.LocalUpdate, torch.Tensor]:
    """The local rule's update of :func:`energy_gap`, and the gap's value: one walk-back step at T_1 from each
    point s_u to the target mu(s_u) + (x - c) std^2 / tau_1, whose postsynaptic error (target - mu) / std^2 is
    (x - c) / tau_1. Its noise level is not moved (the term does not read it), and its loss and STDP sizes are
    0 (the walk back's are the ones logged)."""
    with torch.no_grad():
        drive = net(pairs.points, pairs.T)
        mean = operator.mean(pairs.points, drive)
        gap = ((pairs.points - mean) * pairs.directions).sum(1).mean() / pairs.tau
        target = mean + pairs.directions * operator.std(drive, pairs.T).pow(2) / pairs.tau
    update = plasticity.trajectory_update(net, operator, [target, pairs.points], [pairs.T], with_terms=False)
    no_sigma = None if update.grad_sigma_visible is None else torch.zeros_like(update.grad_sigma_visible)
    return plasticity.LocalUpdate(update.grad_W, update.grad_b, no_sigma, update.grad_w_T,
                                  torch.zeros_like(update.loss), 0.0, 0.0, update.grad_pathway), gap

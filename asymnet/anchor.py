"""The score anchor and the start noise: terms beside the walk back that anchor the T = 1 operator to the
Langevin step of the data, built for the Proposition-1 toy studies (the study section ``anchor:``).

Proposition 1 of the paper: a T = 1 operator that walks back exactly keeps the data distribution. The walk
back trains the T = 1 operator only where the data's trajectories go; in the gaps between a mixture's modes,
where the chain's rare crossings decide the modes' weights, it has few pairs. These terms add pairs there:
noisy trajectory starts (:func:`noisy_starts`), and a denoising or kernel-density target for the T = 1 mean
(:func:`score_anchor_pairs`, :func:`kernel_langevin_step`). The record of what they did is
studies/prop1_experiments.md. None of it is part of Algorithm 1 (asymnet.walkback), and the main job uses none.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import nn

from asymnet.networks.recurrent import RecurrentNetwork
from asymnet.operators import Drive, Operator
from asymnet.plasticity import LocalUpdate, trajectory_update


def noisy_starts(x: torch.Tensor, tau_max: float, generator: torch.Generator | None,
                 fraction: float = 1.0) -> torch.Tensor:
    """x + tau eps with tau ~ U(0, tau_max) per row and eps standard normal (``anchor.start_noise``),
    for each row with probability ``fraction`` (``anchor.start_noise_fraction``; the others keep x).

    The walk back's T = 1 terms then train the T = 1 operator on pairs from a smoothed data law q, and at
    their fixed point its drift is the Langevin drift of q: toward the data also in the gaps between modes,
    which trajectories started at the data reach only through rare crossings. Smoothing every data point
    alike leaves the weights of well-separated modes unchanged; a fraction below 1 keeps most of q's mass
    on the data, so that its Langevin drift there stays the data's. tau_max 0: x itself.
    """
    if not tau_max:
        return x
    u = torch.rand(x.shape[0], 2, generator=generator, dtype=x.dtype, device=x.device)
    tau = tau_max * u[:, :1] * (u[:, 1:] < fraction)
    return x + tau * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def score_anchor_pairs(x: torch.Tensor, std: torch.Tensor, tau_max: float,
                       generator: torch.Generator | None, tau_low: float | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Starts and targets that anchor the T = 1 operator's mean to the data's Langevin step
    (``anchor.weight``): the start is x + tau eps and the target x + tau (1 - c) eps, with
    c = std^2 / (2 tau^2) per unit (std: the operator's T = 1 noise level, (n,) or (batch, n)).

    Why: by Tweedie's formula E[x | x + tau eps] = x~ + tau^2 grad log p_tau(x~), so a Gaussian step
    trained on these pairs has the mean x~ + (std^2 / 2) grad log p_tau(x~): the Langevin step that keeps
    p_tau, the data smoothed by tau, invariant (to first order in std). The walk back's T = 1 terms have the
    same fixed point near the data; the anchor also reaches the gaps between modes, where the trajectories
    that start at the data seldom go and the chain's rare crossings are decided.

    tau is drawn on [tau_min, tau_max], tau_min = max(std) / sqrt(2) (where c = 1 and the target is x
    itself), with density proportional to tau^-3: log-uniform tau, each pair weighted by (tau_min / tau)^2
    (denoising score matching's usual weight, which keeps a wide tau's noisy target from dominating), drawn
    by importance so that every pair has weight 1. Most pairs sit near the data, where the smoothed score
    is the data's; the few wide ones set the drift in the gaps, which is then the drift of the smoothed
    data, weaker than the data's (studies/prop1/drift_tails.py measures it). tau_max below tau_min: tau = tau_min.
    Returns (start, target), each shaped like x; no gradient.
    """
    with torch.no_grad():
        tau_min = max(float(std.max()) / math.sqrt(2.0), tau_low or 0.0)
        tau_max = max(tau_max, tau_min)
        u = torch.rand(x.shape[0], 1, generator=generator, dtype=x.dtype, device=x.device)
        tau = (tau_min**-2 - u * (tau_min**-2 - tau_max**-2)).rsqrt()  # inverse CDF of the tau^-3 density
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        c = std.pow(2) / (2.0 * tau.pow(2))
        return x + tau * eps, x + tau * (1.0 - c) * eps


def widen_starts(start: torch.Tensor, clean: torch.Tensor, fraction: float, noise: float,
                 generator: torch.Generator | None) -> torch.Tensor:
    """The anchor's starts with each row, with probability ``fraction``, replaced by its data point plus
    N(0, noise^2 I) (``anchor.wide``, ``anchor.wide_noise``). The anchor's own starts
    spread by tau with density tau^-3, so fewer than 1 % of them reach the gaps between a mixture's modes,
    yet a mode's weight follows the drift's error integrated across those gaps
    (studies/prop1/anchor_stationary.py). fraction 0: ``start`` itself, and no draw from ``generator``."""
    if not fraction:
        return start
    with torch.no_grad():
        u = torch.rand(start.shape[0], 1, generator=generator, dtype=start.dtype, device=start.device)
        wide = clean + noise * torch.randn(start.shape, generator=generator, dtype=start.dtype, device=start.device)
        return torch.where(u < fraction, wide, start)


def kernel_langevin_step(start: torch.Tensor, reference: torch.Tensor, bandwidth: float,
                         std: torch.Tensor) -> torch.Tensor:
    """start + (std^2 / 2) grad log p_h(start): the exact Langevin step of p_h, the Gaussian kernel density
    estimate of ``reference`` (N, n) with bandwidth h (``anchor.bandwidth``).

    grad log p_h(x) = (sum_i w_i r_i - x) / h^2 with w = softmax(-|x - r_i|^2 / (2 h^2)): a target without
    noise, and one that keeps the data's own scale wherever the start is. The denoising targets'
    mean is the Langevin step of the data smoothed by the start's own noise tau, so a start placed far out
    by a wide tau gets the weak drift of a wide smoothing; here every start gets the drift of the same
    narrow smoothing h, which points to the nearest data and grows with the distance to them.
    start: (batch, n); std: the operator's T = 1 noise level, (n,) or (batch, n). No gradient.
    """
    with torch.no_grad():
        weights = torch.softmax(-torch.cdist(start, reference).pow(2) / (2.0 * bandwidth**2), dim=1)
        return start + 0.5 * std.pow(2) * (weights @ reference - start) / bandwidth**2


def score_anchor_loss(network: nn.Module, operator: Operator, start: torch.Tensor,
                      target: torch.Tensor) -> torch.Tensor:
    """-log p_1(target | start), batch mean, nats, with the noise level detached: the anchor trains the
    mean only (its targets' spread is not the operator's noise). start, target (batch, n), or for a network
    with replicas (R, batch, n), each replica's pairs: then (R,), one term per replica."""
    drive = network(start, 1.0)
    return -operator.log_prob(target, start, Drive(drive.mu, drive.sigma.detach()), 1.0).mean(-1)


def add_anchor(update: LocalUpdate, anchor: LocalUpdate, weight: float) -> LocalUpdate:
    """The walk back's update plus ``weight`` times the score anchor's (:func:`score_anchor_pairs`, scored
    as the one-step trajectory [target, start] at T = 1). The anchor trains the mean only: the noise levels'
    gradient and the loss are the walk back's."""
    return replace(update, grad_W=update.grad_W + weight * anchor.grad_W,
                   grad_b=update.grad_b + weight * anchor.grad_b,
                   grad_w_T=None if update.grad_w_T is None else update.grad_w_T + weight * anchor.grad_w_T)


def anchor_pairs(clean: torch.Tensor, std: torch.Tensor, generator: torch.Generator | None, noise: float,
                 bandwidth: float, wide: float, wide_noise: float, reference: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(start, target) of one minibatch's anchor term: denoising pairs from the clean batch (:func:`score_anchor_pairs`
    with smoothing up to ``noise``), or with ``bandwidth`` > 0 the same starts, a fraction ``wide`` of them widened
    (:func:`widen_starts`), with the kernel density's Langevin step of ``reference`` (N, n) as targets
    (:func:`kernel_langevin_step`). No gradient."""
    pairs = score_anchor_pairs(clean, std, noise, generator)
    if not bandwidth:
        return pairs
    start = widen_starts(pairs[0], clean, wide, wide_noise, generator)
    return start, kernel_langevin_step(start, reference.to(clean.dtype), bandwidth, std)


def local_update(network: RecurrentNetwork, operator: Operator, pairs: tuple[torch.Tensor, torch.Tensor]
                 ) -> LocalUpdate:
    """The local rule's update of the anchor term: the pairs scored as the one-step trajectory
    [target, start] at T = 1 (the rule's gradient of -log p_1(target | start)). Pairs (batch, n), or
    (R, batch, n) for a network with replicas (one term per replica)."""
    start, target = pairs
    return trajectory_update(network, operator, [target, start], [1.0], None, False)

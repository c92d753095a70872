"""How far the T = 1 chain of a finished noise-heated MNIST run contracts along the data's principal
directions, against what the first level's exact posterior would, and what that predicts for the chain's
stationary spread.

    python -m studies.mnist_stdp.contraction RUN_DIR [STEPS [CHAINS]]

The linear picture. Along a direction u in which the data have variance v, the first level's exact
posterior mean for Gaussian data contracts a state by a = v / (v + tau_1) per step (tau_1 the first level's
heating variance), so a T = 1 chain s <- mu(s) + sigma eps with the map's slope lambda = u^T J u along u
settles at variance q / (1 - lambda^2) (q = sigma^2, the chain's own noise) after about 1 / (1 - lambda)
steps. Where v >> tau_1, 1 - a = tau_1 / (v + tau_1) is tiny, and the stationary variance moves with the
slope by d log Var / d lambda = 2 lambda / (1 - lambda^2), about v / tau_1: an error delta in the slope that
the one-step loss prices at about delta^2 v / (2 tau_1) nats moves the stationary spread by about
delta v / tau_1. For the stationary spread to be right to a fraction r the loss must be right to r^2 tau_1 /
(2 v) nats in that direction: the T = 1 chain's law is ill-conditioned in the slow directions by their
variance over the first level's noise, if the network's map is near that linear map. This study measures
whether it is, and where the map does not contract at all (docs/design.md, "What the chain's stability
rests on").

What it prints. tau_1, the chain's noise q (rms over pixels of the operator's variance at T = 1), and for
bands of the test images' principal directions (by rank): the data's variance v along the band's random unit
vectors, the exact posterior's contraction 1 - a along them (the band's mean of tau_1 / (v_i + tau_1)), the
network's 1 - lambda (its mean slope along random unit vectors of the band, at the cooled samples, by central
differences in float64), the relaxation time 1 / (1 - lambda) in steps, the linear prediction of the
stationary variance q / (1 - lambda^2) over v; the 16 leading eigenvalues of the map's Jacobian, the chain's
slowest local directions, at 50 cooled samples, at 50 test images heated to the first level, and there for
the walk back's own mean at T_1 (block power iteration), with the share of their basis in the data's 50
leading directions and the asymmetry of the Jacobian on it (the exact posterior mean's Jacobian,
Cov[x | s] / tau_1, is symmetric, and no eigenvalue exceeds 1 where that posterior is no wider than the
noise); and, unless STEPS is 0, the measured variance of CHAINS (default 200) T = 1 chains
along the band, over v, at 0, 10, 100, ..., STEPS (default 1,000) steps: the run's own chain
(walkback.run_chain), from the run's cooled samples. Used for
studies/mnist_stdp_experiments.md.
"""

from __future__ import annotations

import copy
import sys
import time

import torch

from asymnet import walkback
from asymnet.long_run import log_spaced_steps
from asymnet.model import eval_temperatures
from studies.mnist_stdp.chain_noise import posterior_std
from studies.mnist_stdp import nonnegative_int, positional, positive_int, run_script
from studies.mnist_stdp.heated_chain import cooled_starts

USAGE = "python -m studies.mnist_stdp.contraction RUN_DIR [STEPS [CHAINS]]"
BANDS = ((1, 1), (2, 5), (6, 20), (21, 50), (51, 100), (101, 200), (201, 400), (401, 784))


def principal_directions(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The principal variances (n,), largest first, and the directions (n, n), one per row, of the rows of x."""
    centred = x.double() - x.double().mean(0)
    variances, vectors = torch.linalg.eigh(centred.T @ centred / (len(x) - 1))
    return variances.flip(0), vectors.flip(1).T.contiguous()


def band_vectors(directions: torch.Tensor, first: int, last: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """n random unit vectors (n, dim) in the span of the directions of rank first..last (1-based)."""
    basis = directions[first - 1:last]
    z = torch.randn(n, len(basis), generator=generator, dtype=basis.dtype) @ basis
    return z / z.norm(dim=1, keepdim=True)


def slopes(mean_map, points: torch.Tensor, vectors: torch.Tensor, h: float = 1e-3) -> torch.Tensor:
    """u^T J(x) u for each point x (row of ``points``) and unit vector u (row of ``vectors``), J the Jacobian of
    ``mean_map`` at x, by central differences of step h: (n_points, n_vectors)."""
    V = vectors.T.expand(len(points), -1, -1)
    return (jacobian_products(mean_map, points, V, h) * V).sum(1)


def leading_slopes(mean_map, points: torch.Tensor, k: int, iterations: int, generator: torch.Generator,
                   h: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """The k leading eigenvalues of the Jacobian J(x) of ``mean_map`` at each point x (rows of ``points``), by
    block power iteration on central-difference products J V: their real parts, largest first (n_points, k),
    and the orthonormal basis each point's iteration ended on (n_points, dim, k)."""
    n, dim = points.shape
    V = torch.linalg.qr(torch.randn(n, dim, k, generator=generator, dtype=points.dtype)).Q
    for _ in range(iterations):
        V = torch.linalg.qr(jacobian_products(mean_map, points, V, h)).Q
    ritz = torch.linalg.eigvals(restricted_jacobian(mean_map, points, V, h)).real
    return ritz.sort(1, descending=True).values, V


def jacobian_products(mean_map, points: torch.Tensor, V: torch.Tensor, h: float = 1e-3) -> torch.Tensor:
    """J(x) V for each point x, by central differences of step h: points (n, dim), V (n, dim, k) -> (n, dim, k)."""
    return torch.stack([(mean_map(points + h * V[:, :, j]) - mean_map(points - h * V[:, :, j])) / (2 * h)
                        for j in range(V.shape[2])], 2)


def restricted_jacobian(mean_map, points: torch.Tensor, V: torch.Tensor, h: float = 1e-3) -> torch.Tensor:
    """V^T J(x) V, the Jacobian restricted to each point's orthonormal basis V (n, dim, k): (n, k, k)."""
    return V.transpose(1, 2) @ jacobian_products(mean_map, points, V, h)


def stationary_variance(slope: torch.Tensor, noise_variance: float) -> torch.Tensor:
    """The stationary variance of s <- slope s + sqrt(noise_variance) eps: noise_variance / (1 - slope^2), inf
    where |slope| >= 1 (the chain has no stationary law along that direction)."""
    gap = 1 - slope.double() ** 2
    return torch.where(gap > 0, noise_variance / gap.clamp_min(1e-300), torch.full_like(gap, float("inf")))


def band_variance(states: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """The mean over the band's vectors of the states' variance along each, (states (n, dim), vectors (k, dim))."""
    return (states.double() @ vectors.T).var(0).mean()


def print_leading(label: str, mean_map, points: torch.Tensor, directions: torch.Tensor, generator) -> None:
    """The 16 leading eigenvalues of ``mean_map``'s Jacobian at ``points`` (:func:`leading_slopes`, 30 rounds):
    their quantiles over the points, how many exceed 0.99 and 1, the iteration basis's share in the data's 50
    leading directions, and the asymmetry ||H - H^T|| / ||H + H^T|| of the Jacobian restricted to that basis."""
    clock = time.perf_counter()
    leading, basis = leading_slopes(mean_map, points, 16, 30, generator)
    in_top = (basis.transpose(1, 2) @ directions[:50].T).pow(2).sum(2).mean(1)
    H = restricted_jacobian(mean_map, points, basis)
    asymmetry = (H - H.transpose(1, 2)).norm(dim=(1, 2)) / (H + H.transpose(1, 2)).norm(dim=(1, 2))
    quantiles = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    ranks = " | ".join(f"{i + 1}: " + " / ".join(f"{x:.3f}" for x in leading[:, i].quantile(quantiles).tolist())
                       for i in (0, 1, 3, 7, 15))
    print(f"{label} ({time.perf_counter() - clock:.0f} s): leading eigenvalues by rank, 10 / 50 / 90 % over "
          f"points: {ranks}; per point above 0.99: {(leading > 0.99).sum(1).median().item()}, above 1: "
          f"{(leading > 1).sum(1).median().item()} (medians); basis in the data's top 50 directions: "
          f"{in_top.median().item():.3f} (random: {50 / points.shape[1]:.3f}); asymmetry "
          f"{asymmetry.median().item():.3f}", flush=True)


@torch.no_grad()
def main(argv: list[str]) -> int:
    run_dir, n_steps, n_chains = positional(argv, USAGE, ("RUN_DIR", str), ("STEPS", nonnegative_int, 1_000),
                                            ("CHAINS", positive_int, 200))
    trained, _, start = cooled_starts(run_dir, n_chains, "contraction study", scored=False)
    model, data, study = trained.model, trained.data, trained.study
    visible = slice(0, data.n_visible)
    tau, _ = posterior_std(trained)
    q = model.operator.std(model.network(start, 1.0), 1.0).expand_as(start)[:, visible].pow(2).mean().item()
    network, operator = copy.deepcopy(model.network).double(), model.operator

    def mean_map(s: torch.Tensor) -> torch.Tensor:
        return operator.mean(s, network(s, 1.0))

    test = data.batch(data.test[:5000], torch.Generator().manual_seed(0), torch.float64)
    variances, directions = principal_directions(test)
    gen = torch.Generator().manual_seed(3)
    bands = [(first, last, band_vectors(directions, first, last, 8 if last > first else 1, gen))
             for first, last in BANDS]
    if start.shape[1] != data.n_visible:
        raise SystemExit(f"{run_dir}: the contraction study needs a chain whose state is the visible units alone")
    points = start.double()[:50]
    print(f"{run_dir}: tau_1 {tau:.5f}, chain noise q {q:.5f} (rms variance over pixels), {n_chains} chains")
    print("band | v | exact 1 - a | network 1 - lambda (median, 10-90 %) | 1 / (1 - lambda) | q / (1 - lambda^2) / v")
    rows = []
    for first, last, vectors in bands:
        v = band_variance(test, vectors).item()
        exact = (tau / (variances[first - 1:last] + tau)).mean().item()
        gap = 1 - slopes(mean_map, points, vectors).flatten()
        median = gap.median().item()
        predicted = stationary_variance(1 - gap.median(), q).item() / v
        rows.append((first, last, vectors, v))
        print(f"{first}-{last} | {v:.4f} | {exact:.5f} | {median:.5f} ({gap.quantile(0.1).item():.5f}, "
              f"{gap.quantile(0.9).item():.5f}) | {1 / median if median > 0 else float('inf'):.0f} | {predicted:.3f}",
              flush=True)
    first = eval_temperatures(model, study)[0]
    heated = test[:50] + tau**0.5 * torch.randn(50, data.n_visible, generator=gen, dtype=torch.float64)
    for label, at, T in ((f"{len(points)} cooled samples, T = 1", points, 1.0),
                         (f"50 test images heated to T_1 = {first:g}, T = 1", heated, 1.0),
                         (f"the same heated test images, the walk back at T_1 = {first:g}", heated, first)):
        print_leading(label, lambda s, T=T: operator.mean(s, network(s, T)), at, directions, gen)
    if n_steps == 0:
        return 0
    s, done, clock = start, 0, time.perf_counter()
    chain_gen = torch.Generator().manual_seed(1)
    for stop in [0, *log_spaced_steps(n_steps)]:
        s = walkback.run_chain(model.network, model.operator, s, stop - done, chain_gen)
        done = stop
        ratios = ", ".join(f"{first}-{last} {band_variance(s[:, visible], vectors).item() / v:.3f}"
                           for first, last, vectors, v in rows)
        print(f"{stop} steps ({time.perf_counter() - clock:.0f} s): chain variance / v: {ratios}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_script("studies.mnist_stdp.contraction", main))

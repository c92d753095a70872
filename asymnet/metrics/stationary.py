"""The stationary law of a 2-D toy's T = 1 chain, computed on a grid instead of sampled (Proposition 1).

Proposition 1 says that, at convergence, the T = 1 chain's stationary law is the data's. A long run
(asymnet.sample) reads that law through a finite number of chains after a finite number of steps, so what it
reports mixes the law with sampling noise and with how far the chains have relaxed. For a chain on the
plane the law itself can be computed. Cut a box into n x n square cells of side d and let the chain move from
each cell's centre c: the Gaussian operator's next state is N(mu(c), diag(std(c)^2)), whose mass in each cell
is a product of two differences of normal CDFs (the noise is independent per unit). That gives a sparse
(n^2, n^2) transition matrix P, whose stationary vector pi (pi P = pi, sum pi = 1) is one sparse linear solve:
no metastability to wait out, however rarely the chain crosses between modes.

Standing each state at its cell's centre adds a uniform rounding of variance d^2 / 12 per unit and step,
as if the noise were larger. The grid's transition draws with variance std^2 - d^2 / 12 instead, so that one
step's spread is the operator's own: a linear Gaussian chain's stationary covariance then matches the
Lyapunov solution to 1e-3 relative at d = std (tests/test_stationary.py), where without the correction it
would be 8 % too large. That needs d < sqrt(12) min(std); the default d is min(std), at which the mixture's
grid (108 x 108 cells) solves in 8-35 s on one core. Mass the chain would send out of the box stays inside
(the row is renormalised); ``leak``, pi-weighted, says how much that was per step.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch
from scipy.special import ndtr

from asymnet.errors import AsymnetError


class GridError(AsymnetError, ValueError):
    """A grid that cannot represent the chain (too coarse a cell, a state that is not 2-D)."""


def cell_centres(lo: float, hi: float, n: int) -> np.ndarray:
    """The (n * n, 2) centres of the grid's cells, row-major: cell (i, j) is row i * n + j, x along i."""
    centres = lo + (np.arange(n) + 0.5) * (hi - lo) / n
    x, y = np.meshgrid(centres, centres, indexing="ij")
    return np.stack([x.ravel(), y.ravel()], axis=1)


def grid_transition(mean: np.ndarray, std: np.ndarray, lo: float, hi: float, n: int,
                    radius: float = 4.0) -> tuple[scipy.sparse.csr_matrix, np.ndarray]:
    """The chain x' ~ N(mean(x), diag(std(x)^2)) on the n x n grid of [lo, hi]^2 (see the module's note).

    mean: (n * n, 2), the operator's mean at each cell centre (row order of :func:`cell_centres`); std:
    (2,) or (n * n, 2), its noise level. Cells further than ``radius`` std from the mean get no mass.
    Returns (P, leak): P (n^2, n^2) CSR, each row summing to 1 (renormalised: the mass beyond ``radius`` and
    out of the box stays inside), and leak (n^2,), the mass each row's Gaussian puts outside the box. Raises GridError when the cell is too coarse for std.
    """
    d = (hi - lo) / n
    m = n * n
    mean = np.asarray(mean, dtype=np.float64)
    std = np.broadcast_to(np.asarray(std, dtype=np.float64), (m, 2))
    if mean.shape != (m, 2):
        raise GridError(f"grid_transition needs the mean at each of the {m} cell centres as ({m}, 2), "
                        f"got {mean.shape}")
    shrunk = std**2 - d**2 / 12.0
    if (shrunk <= 0).any():
        raise GridError(f"a grid cell of side {d:.4g} is too coarse for noise level {std.min():.4g}: the cell must "
                        f"be below sqrt(12) times the noise level; give a smaller cell")
    step_std = np.sqrt(shrunk)
    k = int(math.ceil(radius * step_std.max() / d)) + 1
    offsets = np.arange(-k, k + 1)
    masses, cells, stays = [], [], np.ones(m)
    for axis in range(2):
        centre_cell = np.floor((mean[:, axis] - lo) / d).astype(np.int64)
        cell = centre_cell[:, None] + offsets[None, :]
        lower = lo + cell * d
        mu, s = mean[:, axis : axis + 1], step_std[:, axis : axis + 1]
        mass = ndtr((lower + d - mu) / s) - ndtr((lower - mu) / s)
        inside = (cell >= 0) & (cell < n)
        stays = stays * (ndtr((hi - mu[:, 0]) / s[:, 0]) - ndtr((lo - mu[:, 0]) / s[:, 0]))
        masses.append(np.where(inside, mass, 0.0))
        cells.append(np.clip(cell, 0, n - 1))
    mass = (masses[0][:, :, None] * masses[1][:, None, :]).reshape(m, -1)
    column = (cells[0][:, :, None] * n + cells[1][:, None, :]).reshape(m, -1)
    total = mass.sum(axis=1)
    stuck = total <= 0  # a mean far outside the box: the state stays where it is
    mass[stuck] = 0.0
    mass[stuck, 0] = 1.0
    column[stuck, 0] = np.flatnonzero(stuck)
    leak = np.where(stuck, 1.0, 1.0 - stays)
    mass = mass / mass.sum(axis=1, keepdims=True)
    rows = np.repeat(np.arange(m), mass.shape[1])
    transition = scipy.sparse.csr_matrix((mass.ravel(), (rows, column.ravel())), shape=(m, m))
    transition.eliminate_zeros()
    return transition, leak


def stationary_distribution(transition: scipy.sparse.spmatrix) -> np.ndarray:
    """pi with pi P = pi and sum(pi) = 1, for a row-stochastic sparse P with one closed class: the linear
    system (P^T - I) pi = 0 with its last equation replaced by sum(pi) = 1, solved by sparse LU (SuperLU,
    minimum-degree ordering of A^T + A, which fills in several times less than COLAMD on a grid's band).
    Rounding leaves entries of about -1e-15 where pi is 0; they are set to 0."""
    m = transition.shape[0]
    system = (transition.T - scipy.sparse.identity(m, format="csr")).tolil()
    system[m - 1, :] = np.ones(m)
    rhs = np.zeros(m)
    rhs[-1] = 1.0
    try:
        pi = scipy.sparse.linalg.splu(system.tocsc(), permc_spec="MMD_AT_PLUS_A").solve(rhs)
    except (RuntimeError, MemoryError) as error:  # SuperLU reports a failed allocation as a failed factorisation
        raise GridError(f"the sparse LU of the grid's {m}-cell chain failed ({error}); give a smaller box or a "
                        "coarser cell (up to about 20,000 cells factorise in a few GB)") from error
    if pi.min() < -1e-9 or not np.isfinite(pi).all():
        raise GridError("the grid's chain has no single stationary law (a negative or non-finite solution); "
                        "give a larger box or a finer cell")
    return np.clip(pi, 0.0, None) / np.clip(pi, 0.0, None).sum()


def toy_box(toy) -> tuple[float, float]:
    """A square box holding the toy's law with room to spare: its support's largest coordinate plus eight
    noise widths, each side (the mixture: +-2.7; the spiral: +-2.64)."""
    support = toy._support(400)[0]
    half = float(support.abs().max()) + 8.0 * toy.noise
    return -half, half


MAX_SIDE = 160
"""The most cells per side toy_stationary builds: 25,600 cells, whose LU takes a few GB at most."""


def toy_stationary(network, operator, toy, cell: float | None = None, box: tuple[float, float] | None = None,
                   max_side: int = MAX_SIDE) -> dict:
    """The stationary law of the T = 1 chain s' ~ N(operator.mean(s, F(s, 1)), std^2) of a network whose
    state is the toy's two coordinates, on a grid (module note). ``cell``: the side d (default: the
    smallest noise level on a 64 x 64 grid of the box); ``box``: (lo, hi) (default :func:`toy_box`). A grid
    finer than ``max_side`` cells per side raises GridError.

    Returns float64 figures: ``occupancy`` (n_regions,), the law's mass in each of the toy's regions (mixture
    modes, tenths of the curve), ``occupancy_tv`` against the data's own occupancy, ``log_density``, the
    law's mean of the data's log p (nats), ``leak``, the mass sent out of the box per step, and for a figure
    ``law`` (n, n) with ``box`` and ``cell``.
    """
    lo, hi = box if box is not None else toy_box(toy)
    if network.n_units != 2:
        raise GridError(f"the grid's chain needs a state of the two toy coordinates, but the network has "
                        f"{network.n_units} units (slow hidden units are part of the state)")
    parameter = next(network.parameters())

    def drives(points: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        means, stds = [], []
        with torch.no_grad():
            for chunk in torch.from_numpy(points).split(16384):
                x = chunk.to(dtype=parameter.dtype, device=parameter.device)
                drive = network(x, 1.0)
                means.append(operator.mean(x, drive).double().cpu())
                stds.append(operator.std(drive, 1.0).expand_as(x).double().cpu())
        return torch.cat(means).numpy(), torch.cat(stds).numpy()

    d = cell if cell is not None else float(drives(cell_centres(lo, hi, 64))[1].min())  # the noise, box-wide
    n = int(math.ceil((hi - lo) / d))
    if n > max_side:
        raise GridError(f"a grid of cell {d:.3g} over the box [{lo:.3g}, {hi:.3g}]^2 needs {n} x {n} cells, above "
                        f"{max_side} x {max_side}, whose sparse LU would not fit; give a larger cell or a smaller box")
    hi = lo + n * d
    centres = cell_centres(lo, hi, n)
    transition, leak = grid_transition(*drives(centres), lo, hi, n)
    pi = stationary_distribution(transition)
    points = torch.from_numpy(centres)
    occupancy = np.bincount(toy.regions(points).numpy(), weights=pi, minlength=toy.n_regions())
    reference = toy.reference_occupancy().numpy()
    return {"occupancy": occupancy, "occupancy_tv": 0.5 * float(np.abs(occupancy - reference).sum()),
            "log_density": float(pi @ toy.log_density(points).numpy()), "leak": float(pi @ leak),
            "law": pi.reshape(n, n), "box": (lo, hi), "cell": d}

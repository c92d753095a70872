"""Does the T = 1 chain drift through the map's expanding directions? Three chains of a finished noise-heated
MNIST run from the same cooled samples, the same noise draws, each step s <- mu(s) + sigma eps, where

- ``none``: eps is the operator's own noise (the run's T = 1 chain);
- ``leading``: eps loses its part in the span of the K leading eigenvectors of the map's Jacobian at the
  chain's state (studies.mnist_stdp.contraction.leading_slopes, tracked: ROUNDS more rounds of block power
  iteration from the last basis every EVERY steps);
- ``random``: eps loses its part in a random K-dimensional subspace of each chain, redrawn every EVERY
  steps: the same share of the noise, removed where the map does not expand.

    python -m studies.mnist_stdp.slow_noise RUN_DIR [STEPS [CHAINS [K [EVERY [ROUNDS]]]]]

studies.mnist_stdp.contraction finds 9 to 14 eigenvalues of the T = 1 map's Jacobian above 1 at its own
samples and at heated test images: the chain amplifies its noise along them. If the drift is that
amplification, ``leading`` keeps the digits where ``none`` and ``random`` lose them. With the noise altered
the chain is not the model's T = 1 chain; it says where the drift comes from. Prints, at 10, 30, ..., STEPS
(default 3,000) steps of CHAINS (default 50) chains, each chain's image figures (its last step's mean, as the
long run reads it) and the seconds each took; K 16, EVERY 50, ROUNDS 5 by default. Used for
studies/mnist_stdp_experiments.md.
"""

from __future__ import annotations

import sys
import time

import torch

from asymnet.long_run import log_spaced_steps
from studies.mnist_stdp.contraction import jacobian_products, leading_slopes
from studies.mnist_stdp import nonnegative_int, positional, positive_int, run_script
from studies.mnist_stdp.heated_chain import cooled_starts, row

USAGE = "python -m studies.mnist_stdp.slow_noise RUN_DIR [STEPS [CHAINS [K [EVERY [ROUNDS]]]]]"


def project_out(eps: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """eps (n, dim) less its part in the span of each row's orthonormal basis (n, dim, k)."""
    return eps - (basis @ (basis.transpose(1, 2) @ eps.unsqueeze(2))).squeeze(2)


def random_basis(n: int, dim: int, k: int, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """An orthonormal basis (n, dim, k) of a uniformly random k-dimensional subspace for each of n rows."""
    return torch.linalg.qr(torch.randn(n, dim, k, generator=generator, dtype=dtype)).Q


H = 1e-2  # the central differences' step: the chain runs in float32, its states' pixels of order 1


@torch.no_grad()
def main(argv: list[str]) -> int:
    run_dir, n_steps, n_chains, k, every, rounds = positional(
        argv, USAGE, ("RUN_DIR", str), ("STEPS", positive_int, 3_000), ("CHAINS", positive_int, 50),
        ("K", positive_int, 16), ("EVERY", positive_int, 50), ("ROUNDS", nonnegative_int, 5))
    trained, scorer, start = cooled_starts(run_dir, n_chains, "slow-noise chain")
    network, operator, n = trained.model.network, trained.model.operator, trained.data.n_visible
    if start.shape[1] != n:
        raise SystemExit(f"{run_dir}: the slow-noise chain needs a chain whose state is the visible units alone")

    def mean_map(s: torch.Tensor) -> torch.Tensor:
        return operator.mean(s, network(s, 1.0))

    print(f"{run_dir}: {n_chains} chains, K {k}, basis renewed every {every} steps ({rounds} rounds)")
    print(f"start | {row(scorer.figures(start))}")
    for arm in ("none", "random", "leading"):
        s, done, clock = start, 0, time.perf_counter()
        noise, subspaces = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
        basis = leading_slopes(mean_map, s, k, 30, subspaces, H)[1] if arm == "leading" else None
        for stop in log_spaced_steps(n_steps):
            for step in range(done, stop):
                if arm == "leading" and step % every == 0 and step:
                    for _ in range(rounds):
                        basis = torch.linalg.qr(jacobian_products(mean_map, s, basis, H)).Q
                elif arm == "random" and step % every == 0:
                    basis = random_basis(n_chains, n, k, subspaces, s.dtype)
                drive = network(s, 1.0)
                mean = operator.mean(s, drive)
                eps = torch.randn(s.shape, generator=noise, dtype=s.dtype)
                s = mean + operator.std(drive, 1.0) * (eps if basis is None else project_out(eps, basis))
            done = stop
            print(f"{arm} | {stop} | {row(scorer.figures(mean))} | {time.perf_counter() - clock:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_script("studies.mnist_stdp.slow_noise", main))

"""Can one walkback kernel undo its own heating? A ground-truth check on 1-D Gaussian data N(2, 1).

    python -m studies.walkback.linear_gaussian [--steps 3000]

Trains (autograd, Algorithm 1, T doubling to T_max = 100, fixed sigma = 0.1) two operators on the
same data and prints the mean and variance of 20,000 generated samples:
- the recurrent network with one unit, phi = identity, no temperature input: a linear Gaussian
  kernel s' = c s + b + sigma sqrt(T) xi that is the same at every temperature;
- a temperature-conditioned MLP (log T as an input).
The true values are 2 and 1. Writes studies/walkback/results/linear_gaussian.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from asymnet import schedule, walkback
from asymnet.networks import MLPNetwork, RecurrentNetwork
from asymnet.operators import GaussianOperator


def train_and_generate(network: torch.nn.Module, steps: int, lr: float) -> tuple[float, float]:
    gen = torch.Generator().manual_seed(0)
    operator, p_star = GaussianOperator(0.5), walkback.PStar(1)
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    n_heating = schedule.n_heating_steps(100.0)
    for _ in range(steps):
        x = torch.randn(512, 1, generator=gen) + 2.0
        temperatures = schedule.heating_temperatures(schedule.sample_extra_steps(4, gen), n_heating)
        states = walkback.heating_trajectory(network, operator, x, temperatures, gen)
        loss = walkback.walkback_losses(network, operator, states, temperatures).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        p_star.update(states[-1], 0.05)
    samples = walkback.generate(network, operator, p_star, schedule.heating_temperatures(4, n_heating), 20000, gen)
    return samples.mean().item(), samples.var().item()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m studies.walkback.linear_gaussian",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    rows = {
        "linear, T-independent": train_and_generate(
            RecurrentNetwork(1, 0, phi="identity", sigma_init=0.1, learn_sigma=False, generator=gen), args.steps, 1e-2),
        "MLP, T-conditioned": train_and_generate(
            MLPNetwork(1, width=64, depth=2, sigma_init=0.1, learn_sigma=False, generator=gen), args.steps, 1e-3),
    }
    print(f"{'operator':<24}{'mean':>8}{'variance':>10}   (truth: 2, 1)")
    for name, (mean, var) in rows.items():
        print(f"{name:<24}{mean:>8.3f}{var:>10.3f}")
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "linear_gaussian.json").write_text(json.dumps({k: {"mean": m, "variance": v} for k, (m, v) in rows.items()},
                                                         indent=2) + "\n")


if __name__ == "__main__":
    main()

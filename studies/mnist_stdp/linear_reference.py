"""The best linear walk back at each temperature of a noise-heated schedule, as a reference for what the
hidden units add: for heated training digits, the least-squares affine map from s_t to s_{t-1} (one per
temperature, fitted on 20,000 training digits), scored on 2,000 test digits by the squared error per pixel,
beside the part no map can remove (the variance of s_{t-1} given s_t and s_0, walkback.posterior_targets)
and, with RUN_DIR, that run's own walk back on the same states.

    python -m studies.mnist_stdp.linear_reference [RUN_DIR]

The schedule is studies/mnist_stdp.yaml's (operator.sigma 0.05, sigma_max 1, heating factor 2, 4 T = 1
steps). Used for studies/mnist_stdp_experiments.md."""

from __future__ import annotations

import sys

import torch

from asymnet import schedule, walkback
from asymnet.model import load_data, load_run
from asymnet.operators import GaussianOperator
from asymnet.study import load_study
from studies.mnist_stdp import positional, run_script

USAGE = "python -m studies.mnist_stdp.linear_reference [RUN_DIR]"


@torch.no_grad()
def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    run_dir, = positional(argv, USAGE, ("RUN_DIR", str, None))
    study, _ = load_study("studies/mnist_stdp.yaml")
    data = load_data(study, None)
    run = load_run(run_dir) if run_dir is not None else None
    op, heating = GaussianOperator(0.5), walkback.NoiseHeating(0.05)
    temps = schedule.heating_temperatures(4, schedule.n_heating_steps(400.0, 2.0), 2.0)
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Identity()
    train = walkback.heating_trajectory(net, op, data.batch(data.train[:20000], g, torch.float64), temps, g, heating)
    test = walkback.heating_trajectory(net, op, data.batch(data.test[:2000], g, torch.float64), temps, g, heating)
    floor = walkback.posterior_targets(op, heating, test, temps).variances
    for t, T in enumerate(temps, 1):
        features = torch.cat([train[t], torch.ones(len(train[t]), 1, dtype=torch.float64)], 1)
        gram = features.T @ features
        gram += 1e-6 * gram.diagonal().mean() * torch.eye(len(gram), dtype=torch.float64)
        A = torch.linalg.solve(gram, features.T @ train[t - 1])
        test_features = torch.cat([test[t], torch.ones(len(test[t]), 1, dtype=torch.float64)], 1)
        linear = (test_features @ A - test[t - 1]).pow(2).mean().item()
        line = f"T {T:6.1f}  floor {floor[t - 1].item():.5f}  linear {linear:.5f}"
        if run is not None:
            network = run.model.network
            state = test[t].to(torch.float32)
            mu = run.model.operator.mean(state, network(state, T))[:, :784]
            line += f"  run {(mu.double() - test[t - 1][:, :784]).pow(2).mean().item():.5f}"
        print(line, flush=True)


if __name__ == "__main__":
    sys.exit(run_script("studies.mnist_stdp.linear_reference", main))

"""Does a finished noise-heated MNIST run fit its training images better than held-out ones, and at which
noise levels? The walk back's loss per step and the data estimate's error on N training and N test images,
the same heating noise for both.

    python -m studies.mnist_stdp.overfit RUN_DIR [N]

For each block of levels (7 at a time, cold to hot): the temperatures, the mean posterior-target loss per
image (nats, walkback.walkback_losses with walkback.posterior_targets) of the training and the test images
and their gap, and the rms error per pixel of the walk back's mean at each level's step against the posterior
mean (the target) for both. A gap near zero says the level generalises; a training loss well below the test
loss says the level has learned its training images, which a chain that re-cools from that level will fall
onto (studies/mnist_stdp_experiments.md, R1). Used for studies/mnist_stdp_experiments.md.
"""

from __future__ import annotations

import sys

import torch

from asymnet import walkback
from asymnet.model import eval_temperatures, load_run
from studies.mnist_stdp import positional, positive_int, run_script

USAGE = "python -m studies.mnist_stdp.overfit RUN_DIR [N]"
BLOCK = 7


@torch.no_grad()
def level_figures(trained, images: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per level (K,): the mean loss per image and the rms error of the walk back's mean against its target."""
    model = trained.model
    net, op, heating = model.network, model.operator, model.heating
    T = eval_temperatures(model, trained.study)
    gen = torch.Generator().manual_seed(seed)
    x = trained.data.batch(images, gen, torch.float32)
    states = walkback.heating_trajectory(net, op, x, T, torch.Generator().manual_seed(seed + 1), heating)
    targets = walkback.posterior_targets(op, heating, states, T)
    losses = walkback.walkback_losses(net, op, states, T, targets=targets)  # (K,): the batch's mean
    errors = torch.stack([(op.mean(states[t + 1], net(states[t + 1], T[t])) - targets.means[t]).pow(2).mean().sqrt()
                          for t in range(len(T))])
    return losses, errors


def main(argv: list[str]) -> int:
    run_dir, n = positional(argv, USAGE, ("RUN_DIR", str), ("N", positive_int, 256))
    trained = load_run(run_dir)
    if trained.model.heating is None:
        raise SystemExit(f"{run_dir}: needs a noise-heated run (walkback.heating_kernel: noise)")
    T = eval_temperatures(trained.model, trained.study)
    train_loss, train_error = level_figures(trained, trained.data.train[:n], 0)
    test_loss, test_error = level_figures(trained, trained.data.test[:n], 0)
    print(f"{run_dir}: {n} training and {n} test images, {len(T)} levels; per block of {BLOCK} levels: T, loss per image "
          f"(train / test / gap, nats), rms error of the mean against the target (train / test)")
    for start in range(0, len(T), BLOCK):
        block = slice(start, start + BLOCK)
        a, b = train_loss[block].sum().item(), test_loss[block].sum().item()
        print(f"T {T[start]:.2f}-{T[min(start + BLOCK, len(T)) - 1]:.2f} | {a:.1f} / {b:.1f} / {b - a:+.1f} | "
              f"{train_error[block].mean():.4f} / {test_error[block].mean():.4f}")
    a, b = train_loss.sum().item(), test_loss.sum().item()
    print(f"all levels | {a:.1f} / {b:.1f} / {b - a:+.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_script("studies.mnist_stdp.overfit", main))

"""The T = 1 chain of a finished noise-heated MNIST run with its noise scaled: s <- mu(s) + c sigma_1(s) eps,
for several c, from the same cooled samples (studies.mnist_stdp.heated_chain.cooled_starts).

    python -m studies.mnist_stdp.chain_noise RUN_DIR [STEPS [CHAINS [C,C,...]]]

A C of ``posterior`` gives each pixel its own noise: the std of the first level's exact posterior for a
Gaussian pixel of the test images' variance v_i, sqrt(v_i tau_1 / (v_i + tau_1)), in place of c sigma_1(s)
(near 0 on the background, where the data hardly vary, and near sqrt(tau_1) on the strokes).

What it asks. c = 1 is the run's own T = 1 chain (asymnet.long_run). c = 0 iterates the drive's mean alone,
s <- mu(s): where that map's fixed points are digits, the drift of the c = 1 chain comes from the noise it
adds; where they are blurs, the map itself has attractors away from the data (the spurious modes a walk back
is meant to remove). For Gaussian data of variance v and the exact posterior of the first level (noise
tau, a = v / (v + tau)) the chain settles at variance c^2 a tau / (1 - a^2), so c = sqrt(2) keeps the data's
variance where v >> tau (the heated chain's total noise per step) and c = 1 about halves it.

Prints the operator's noise at T = 1 against the first level's heating noise sqrt(tau_1) and its posterior's
std sqrt(a tau_1) at the pixel variance of the test images (rms over pixels), then, at 10, 30, ..., STEPS
(default 10^3) steps of CHAINS (default 50) chains, the image figures of each chain's states and of their
means mu(s) (the evaluation's final_mean readout). Used for studies/mnist_stdp_experiments.md.
"""

from __future__ import annotations

import sys
import time

import torch

from asymnet.long_run import log_spaced_steps
from asymnet.model import eval_temperatures
from studies.mnist_stdp import positional, positive_int, run_script
from studies.mnist_stdp.heated_chain import cooled_starts, row

USAGE = "python -m studies.mnist_stdp.chain_noise RUN_DIR [STEPS [CHAINS [C,C,...]]]"


def posterior_std(trained) -> tuple[float, torch.Tensor]:
    """tau_1, the first level's heating variance, and the std (n_visible,) of its exact posterior for Gaussian
    pixels of the variances of the first 1,000 test images (model scale)."""
    model, study, data = trained.model, trained.study, trained.data
    tau = model.heating.step_variances(model.operator, torch.tensor(eval_temperatures(model, study)[0])).item()
    v = data.batch(data.test[:1000], torch.Generator().manual_seed(0), torch.float32).var(0)
    return tau, (v * tau / (v + tau)).sqrt()


def noise_levels(trained, start: torch.Tensor) -> str:
    """The T = 1 operator's rms noise on the cooled samples against the first level's heating noise and the
    rms over pixels of its exact posterior's std (:func:`posterior_std`)."""
    std = trained.model.operator.std(trained.model.network(start, 1.0), 1.0).expand_as(start)
    tau, posterior = posterior_std(trained)
    return (f"operator std at T = 1 (rms) {std.pow(2).mean().sqrt().item():.4f}; first level's heating noise "
            f"sqrt(tau_1) {tau**0.5:.4f}; its posterior's std (rms, Gaussian pixels) "
            f"{posterior.pow(2).mean().sqrt().item():.4f}, median {posterior.median().item():.4f}")


def noise_scales(text: str) -> list[str]:
    """C,C,...: numbers or ``posterior``, kept as typed."""
    scales = text.split(",")
    for c in scales:
        if c != "posterior":
            try:
                float(c)
            except ValueError:
                raise ValueError("a comma-separated list of numbers or posterior") from None
    return scales


def scaled_chain(network, operator, s: torch.Tensor, n_steps: int, c: float, generator,
                 pixel_std: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """n_steps of s <- mean + c std eps at T = 1 (with ``pixel_std``: mean + pixel_std eps): (the last state,
    the last step's mean)."""
    mean = s
    for _ in range(n_steps):
        drive = network(s, 1.0)
        mean = operator.mean(s, drive)
        std = c * operator.std(drive, 1.0) if pixel_std is None else pixel_std
        s = mean + std * torch.randn(s.shape, generator=generator, dtype=s.dtype)
    return s, mean


@torch.no_grad()
def main(argv: list[str]) -> int:
    run_dir, n_steps, n_chains, scales = positional(argv, USAGE, ("RUN_DIR", str), ("STEPS", positive_int, 1_000),
                                                    ("CHAINS", positive_int, 50),
                                                    ("C,C,...", noise_scales, ["0", "0.5", "1"]))
    trained, scorer, start = cooled_starts(run_dir, n_chains, "scaled T = 1 chain")
    model = trained.model
    visible = slice(0, trained.data.n_visible)
    print(f"{run_dir}: {n_chains} chains; {noise_levels(trained, start)}")
    print(f"start | {row(scorer.figures(start[:, visible]))}")
    for c in scales:
        s, done, clock = start, 0, time.perf_counter()
        gen = torch.Generator().manual_seed(1)
        pixel_std = posterior_std(trained)[1] if c == "posterior" else None
        for stop in log_spaced_steps(n_steps):
            s, mean = scaled_chain(model.network, model.operator, s, stop - done, 1.0 if pixel_std is not None else float(c),
                                   gen, pixel_std)
            done = stop
            print(f"c = {c} | {stop} | states: {row(scorer.figures(s[:, visible]))} | means: "
                  f"{row(scorer.figures(mean[:, visible]))}", flush=True)
        print(f"c = {c}: {time.perf_counter() - clock:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(run_script("studies.mnist_stdp.chain_noise", main))

"""Two long runs of a finished noise-heated MNIST run from the same cooled samples: the T = 1 chain of the
run's evaluation (s <- a draw of p_1(. | s), asymnet.long_run) and the heated chain at the schedule's first
level T_1 = f (s <- s + sqrt(tau_1) eps, then s <- a draw of p_{T_1}(. | s): walkback.Corrector's step at
T_1, the corrupt-and-reconstruct chain of a denoising auto-encoder, Bengio et al. 2013).

    python -m studies.mnist_stdp.heated_chain RUN_DIR [STEPS [CHAINS]]

Why the two differ. The noise-heated walk back learns p_{T_1}(s_0 | s_1) for s_1 = s_0 + sqrt(tau_1) eps;
at T = 1 (c(1) = 0, networks.temperature.posterior_leak) the operator is the same map at a temperature the
loss never scores: a draw around F(s), the estimate of the data behind s, read as if s were noisy. Its chain
never adds the corruption the estimate undoes. For Gaussian data x ~ N(0, v) and the exact posterior of
s = x + sqrt(tau) eps, mean a s with a = v / (v + tau) and variance a tau, the chain s <- a s + sqrt(a tau)
eps settles at variance a tau / (1 - a^2) = v (v + tau) / (2 v + tau): about half the data's variance in
every direction the data vary much more than tau, reached in about v / (2 tau) steps. The heated chain draws
the corruption first, s <- a (s + sqrt(tau) eps) + sqrt(a tau) eps', and keeps variance a^2 (v + tau) + a tau
= v: the data's law is its stationary law whenever the walk back is the heating's exact posterior (a Gibbs
sweep of the pair (s_0, s_1)).

Prints, at 10, 30, ..., STEPS (default 10^4) steps of CHAINS (default 50) chains: the image figures
(evaluate.ImageScorer) of each chain's states (draws) and of the heated chain's readout, the mean of its
last walk back (evaluation.final_mean's readout), and the seconds each chain took. Used for
studies/mnist_stdp_experiments.md.
"""

from __future__ import annotations

import sys
import time

import torch

from asymnet import walkback
from asymnet.long_run import image_scorer, log_spaced_steps
from asymnet.model import cooling_corrector, eval_temperatures, load_run
from studies.mnist_stdp import positional, positive_int, run_script

USAGE = "python -m studies.mnist_stdp.heated_chain RUN_DIR [STEPS [CHAINS]]"
FIGURES = ("confident_fraction", "label_entropy", "frechet_distance", "precision", "recall", "nearest_train_distance")


def heated_step(network, operator, heating, s: torch.Tensor, T: float, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """walkback.heated_chain's step at T, with the mean of its walk back: (the draw, its mean)."""
    s = heating.heat(operator, s, T, generator)
    drive = network(s, T)
    return operator.sample(s, drive, T, generator), walkback.operator_mean(operator, s, drive, T)


def row(figures: dict[str, float]) -> str:
    return " | ".join(f"{figures[name]:.3f}" if name != "frechet_distance" else f"{figures[name]:.0f}" for name in FIGURES
                      if name in figures)


@torch.no_grad()
def cooled_starts(run_dir: str, n_chains: int, chain: str, scored: bool = True):
    """A finished noise-heated run, its image scorer (None with ``scored=False``) and n_chains cooled draws (its
    cooling, seed 0): the start of the long chains of this study and of studies.mnist_stdp.restart_chain."""
    trained = load_run(run_dir)
    model, study = trained.model, trained.study
    if model.heating is None:
        raise SystemExit(f"{run_dir}: the {chain} needs a noise-heated run (walkback.heating_kernel: noise)")
    scorer = image_scorer(trained, None, True, n_chains) if scored else None
    start = walkback.generate(model.network, model.operator, model.p_star, eval_temperatures(model, study), n_chains,
                              torch.Generator().manual_seed(0), corrector=cooling_corrector(model, study))
    return trained, scorer, start


@torch.no_grad()
def main(argv: list[str]) -> int:
    run_dir, n_steps, n_chains = positional(argv, USAGE, ("RUN_DIR", str), ("STEPS", positive_int, 10_000),
                                            ("CHAINS", positive_int, 50))
    trained, scorer, start = cooled_starts(run_dir, n_chains, "heated chain")
    model, study = trained.model, trained.study
    first = eval_temperatures(model, study)[0]
    visible = slice(0, trained.data.n_visible)
    print(f"{run_dir}: {n_chains} chains, T = 1 chain and heated chain at T_1 = {first:g}; figures {', '.join(FIGURES)}")
    print(f"start | {row(scorer.figures(start[:, visible]))}")
    plain, heated, done = start, start, 0
    gen_plain, gen_heated = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    seconds = [0.0, 0.0]
    for stop in log_spaced_steps(n_steps):
        clock = time.perf_counter()
        plain = walkback.run_chain(model.network, model.operator, plain, stop - done, gen_plain)
        seconds[0] += time.perf_counter() - clock
        clock = time.perf_counter()
        heated = walkback.heated_chain(model.network, model.operator, model.heating, heated, stop - done - 1, first,
                                       gen_heated)
        heated, mean = heated_step(model.network, model.operator, model.heating, heated, first, gen_heated)
        seconds[1] += time.perf_counter() - clock
        done = stop
        print(f"{stop} | T = 1: {row(scorer.figures(plain[:, visible]))} | heated: "
              f"{row(scorer.figures(heated[:, visible]))} | heated mean: {row(scorer.figures(mean[:, visible]))}",
              flush=True)
    print(f"seconds: T = 1 chain {seconds[0]:.0f}, heated chain {seconds[1]:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_script("studies.mnist_stdp.heated_chain", main))

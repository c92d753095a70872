"""The T = 1 chain of a finished noise-heated MNIST run against Langevin chains on the first level's score, from
the same cooled samples (studies.mnist_stdp.heated_chain.cooled_starts).

    python -m studies.mnist_stdp.langevin_chain RUN_DIR [STEPS [CHAINS [ARM,ARM,...]]]

Why. The first level of a noise-heated walk back estimates the data behind s = x + sqrt(tau_1) eps, and by
Tweedie's formula F(s, T_1) - s = tau_1 grad log p_1(s), p_1 the data's law blurred by that noise. The T = 1
chain s <- F(s) + sigma eps (the operator's mean at T = 1, c(1) = 0) is then a Langevin chain of step tau_1
whose noise, sigma^2 ~ 0.8 tau_1 here, is less than the 2 tau_1 the step needs: along directions where F's
slope is 1 (the data's tangent directions) it draws from about p_1^(2 tau_1 / sigma^2), a law sharper than the
data's that trades recall for precision. A Langevin chain of step eta,

    s <- s + (eta / tau_1) (F(s, T_1) - s) + sqrt(2 eta) eps,

keeps p_1 to first order in eta. With eta = sigma^2 / 2 it adds the operator's own noise at every step, so
along the tangent directions it moves as fast as the T = 1 chain: the two are compared at the same number of
steps and the same mixing. Arms (default ``operator,langevin``):

- ``operator``: the run's T = 1 chain (asymnet.long_run), read as each step's mean;
- ``langevin``: eta = sigma_1^2 / 2, sigma_1 the operator's rms noise at T = 1 on the cooled samples;
- ``langevin/K``: eta = sigma_1^2 / (2 K), a K times smaller step (K times slower along the data);
- ``langevin*M``: eta = M tau_1 (``langevin*1`` is Tweedie's step at its full size, t3 of the record);
- ``level@T``: the same chain one level higher, on the law p_T of the data heated to the schedule's level at or
  above T (variance V_T, all the heating adds up to it): s <- s + (eta / V_T) (F(s, T) - s) + sqrt(2 eta) eps
  with eta = 0.2 V_T (``level@T:F``: eta = F V_T), F = (mu - c(T) s) / (1 - c(T)) the level's estimate of the data
  (networks.temperature.posterior_leak). Each readout cools a copy of the state from that level with the run's
  own cooling (its corrector steps and final mean); the copy does not go back into the chain. Where the level's
  score is exact this draws the model's samples at every readout.

Every other Langevin arm is read as F(s, T_1), the first level's estimate of the data, as the cooling's last
mean is. Prints, at 10, 30, ..., STEPS (default 10^4) steps of CHAINS (default 50) chains: the image figures, the
share of chains whose label differs from their start's (how far the chains mixed across classes) and the rms
distance per pixel of each readout from its start's. Used for studies/mnist_stdp_experiments.md.
"""

from __future__ import annotations

import sys
import time

import torch

from asymnet import walkback
from asymnet.long_run import log_spaced_steps
from asymnet.model import cooling_corrector, eval_temperatures, generation_temperatures
from studies.mnist_stdp import positional, positive_int, run_script
from studies.mnist_stdp.chain_noise import scaled_chain
from studies.mnist_stdp.class_balance import heat_to, levels_up_to
from studies.mnist_stdp.heated_chain import cooled_starts, row

USAGE = "python -m studies.mnist_stdp.langevin_chain RUN_DIR [STEPS [CHAINS [ARM,ARM,...]]]"
LEVEL_STEP = 0.2  # eta / V_T of the level@T arms


def parse_arm(arm: str, sigma2: float, tau: float) -> float | None:
    """The Langevin step eta of an arm's name, None for ``operator`` and ``level@T``."""
    if arm == "operator" or arm.startswith("level@"):
        return None
    if arm == "langevin":
        return sigma2 / 2
    if arm.startswith("langevin/"):
        return sigma2 / (2 * float(arm[len("langevin/"):]))
    if arm.startswith("langevin*"):
        return float(arm[len("langevin*"):]) * tau
    raise SystemExit(f"unknown arm {arm!r}: operator, langevin, langevin/K, langevin*M or level@T")


def level_arm(arm: str) -> tuple[float, float]:
    """T and eta / V_T of a ``level@T`` or ``level@T:F`` arm."""
    T, _, fraction = arm[len("level@"):].partition(":")
    T, fraction = float(T), float(fraction) if fraction else LEVEL_STEP
    if not (T > 0 and 0 < fraction <= 1):
        raise ValueError(arm)
    return T, fraction


def arm_names(text: str) -> list[str]:
    """ARM,ARM,...: names :func:`parse_arm` reads (or ``level@T``), checked before the run is loaded."""
    arms = text.split(",")
    for arm in arms:
        try:
            if arm.startswith("level@"):
                level_arm(arm)
            else:
                parse_arm(arm, 1.0, 1.0)
        except (ValueError, ZeroDivisionError, SystemExit):
            raise ValueError("a comma-separated list of operator, langevin, langevin/K, langevin*M or "
                             "level@T[:F]") from None
    return arms


def langevin_chain(network, operator, s: torch.Tensor, n_steps: int, level: float, tau: float, eta: float,
                   generator) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`level_chain` at the schedule's first level T_1 (its leak c(T_1) is 0, so F is the drive's mean):
    (the last state, F at it)."""
    s = level_chain(network, operator, s, n_steps, level, tau, eta, generator)
    return s, operator.mean(s, network(s, level))


def level_chain(network, operator, s: torch.Tensor, n_steps: int, T: float, V: float, eta: float, generator) -> torch.Tensor:
    """n_steps of s <- s + (eta / V) (F(s, T) - s) + sqrt(2 eta) eps, F the level's estimate of the data."""
    keep = network.leak(T) if getattr(network, "posterior_leak", None) is not None else 0.0
    for _ in range(n_steps):
        mu = operator.mean(s, network(s, T))
        estimate = (mu - keep * s) / (1.0 - keep)
        s = s + (eta / V) * (estimate - s) + (2 * eta) ** 0.5 * torch.randn(s.shape, generator=generator, dtype=s.dtype)
    return s


@torch.no_grad()
def main(argv: list[str]) -> int:
    run_dir, n_steps, n_chains, arms = positional(argv, USAGE, ("RUN_DIR", str), ("STEPS", positive_int, 10_000),
                                                  ("CHAINS", positive_int, 50),
                                                  ("ARM,ARM,...", arm_names, ["operator", "langevin"]))
    trained, scorer, start = cooled_starts(run_dir, n_chains, "Langevin chain")
    model, study = trained.model, trained.study
    network, operator = model.network, model.operator
    level = eval_temperatures(model, study)[0]
    tau = model.heating.step_variances(operator, torch.tensor(level)).item()
    sigma2 = operator.std(network(start, 1.0), 1.0).expand_as(start).pow(2).mean().item()
    steps = {arm: parse_arm(arm, sigma2, tau) for arm in arms}
    corrector, cooling = cooling_corrector(model, study), generation_temperatures(model, study)
    n = trained.data.n_visible
    if start.shape[1] != n:
        raise SystemExit(f"{run_dir}: the Langevin chain needs a chain whose state is the visible units alone")
    print(f"{run_dir}: {n_chains} chains; tau_1 {tau:.5f} at T_1 = {level:g}, sigma_1^2 {sigma2:.5f} at T = 1; "
          + ", ".join(f"{arm}: eta {eta:.5f} ({eta / tau:.3f} tau_1)" for arm, eta in steps.items() if eta))
    labels0 = scorer.classifier(start.clamp(0, 1)).argmax(1)
    print(f"start | {row(scorer.figures(start))}")
    for arm, eta in steps.items():
        s, done, clock = start, 0, time.perf_counter()
        gen, readout_gen = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
        if arm.startswith("level@"):
            T_arm, fraction = level_arm(arm)
            levels, top = levels_up_to(cooling, T_arm)
            if top is None:
                raise SystemExit(f"{run_dir}: {arm} is above the schedule's top level")
            V = float(sum(model.heating.step_variances(operator, T) for T in levels))
            print(f"{arm}: level T = {top:g}, V_T {V:.5f}, eta {fraction * V:.5f}, readout cooled over "
                  f"{len(levels)} levels", flush=True)
            s = heat_to(trained, start, levels, gen)
        for stop in log_spaced_steps(n_steps):
            if arm.startswith("level@"):
                s = level_chain(network, operator, s, stop - done, top, V, fraction * V, gen)
                readout = walkback.cool_levels(network, operator, s.clone(), levels, readout_gen,
                                               study.evaluation.final_mean, corrector=corrector)
            elif eta is None:
                s, readout = scaled_chain(network, operator, s, stop - done, 1.0, gen)  # the run's T = 1 chain
            else:
                s, readout = langevin_chain(network, operator, s, stop - done, level, tau, eta, gen)
            done = stop
            moved = (scorer.classifier(readout.clamp(0, 1)).argmax(1) != labels0).float().mean().item()
            shift = (readout.clamp(0, 1) - start.clamp(0, 1)).pow(2).mean().sqrt().item()
            print(f"{arm} | {stop} | {row(scorer.figures(readout))} | label moved {moved:.2f} | rms shift {shift:.3f}",
                  flush=True)
        print(f"{arm}: {time.perf_counter() - clock:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_script("studies.mnist_stdp.langevin_chain", main))

"""The T = 1 chain of a finished noise-heated MNIST run: variants of the chain, and a cheap proxy for a loss
change (fine-tune the run's model under other study keys, then score its cooling and its chain).

    python -m studies.mnist_stdp.t1_chain chain RUN_DIR STEPS VARIANT[,VARIANT...]
    python -m studies.mnist_stdp.t1_chain finetune RUN_DIR UPDATES LR [KEY=VALUE ...]
    python -m studies.mnist_stdp.t1_chain steps RUN_DIR [RUN_DIR ...]

``chain``: 200 samples cooled from p* (seed 0), then STEPS steps of each variant, scored by the classifier
figures at 10, 100, 1000, 3000, 10000 steps (the states, and the T_1 step's mean of them):
- ``model``: the run's own T = 1 step, s' ~ p_1(. | s) (what asymnet.sample runs);
- ``gsn``: one heating step at T_1 by the fixed kernel, then the walk back's step at T_1 (the corrupt-and-
  reconstruct chain of generalized denoising auto-encoders, Bengio et al. 2013);
- ``langK``: F(s, T_1) + sqrt(K V_1) eps, V_1 the variance of the heating's first step (K = 2: the Langevin
  chain at the denoiser's own noise level, Tweedie's F = s + V grad log p_V).
``finetune``: UPDATES updates of the run's model from its checkpoint (its optimizer state, learning rate LR
decayed to 0 along a half cosine) under the run's study with KEY=VALUE overrides (as --set takes them),
then the T = 1 step's denoising error on 256 test images, 200 cooled samples and the ``model`` chain to
3,000 steps. ``steps``: each run's walk-back loss per step (nats) on the noise-heated trajectories of 256
test images with posterior targets, summed over blocks of 7 steps, its learned sigma, and its T = 1 step's
denoising error (as after ``finetune``). Used for studies/mnist_stdp_experiments.md, "The T = 1 chain".
"""

from __future__ import annotations

import math
import sys
import time

import torch

from asymnet import run as run_module
from asymnet import walkback
from asymnet.evaluate import ImageScorer, mnist_classifier
from asymnet.model import eval_temperatures, load_run
from asymnet.study import parse_study
from asymnet.runlog import read_summary
from studies.mnist_stdp import nonnegative_int, positional, positive_int, run_script

N_CHAINS = 200
USAGES = {"chain": "python -m studies.mnist_stdp.t1_chain chain RUN_DIR STEPS VARIANT[,VARIANT...]",
          "finetune": "python -m studies.mnist_stdp.t1_chain finetune RUN_DIR UPDATES LR [KEY=VALUE ...]",
          "steps": "python -m studies.mnist_stdp.t1_chain steps RUN_DIR [RUN_DIR ...]"}


def _line(figures: dict) -> str:
    return (f"conf {figures['confident_fraction']:.3f} ent {figures['label_entropy']:.3f} "
            f"FD {figures['frechet_distance']:.0f}")


def chain_step(run, variant: str, s: torch.Tensor, T1: float, generator: torch.Generator) -> torch.Tensor:
    """One step of the chain ``variant`` (see the module's docstring) from s; T1 the heating's first temperature."""
    net, op, sigma0 = run.model.network, run.model.operator, run.study.operator.sigma
    if variant == "model":
        return op.sample(s, net(s, 1.0), 1.0, generator)
    if variant == "gsn":
        s = s + op.temperature_factor(T1) * sigma0 * torch.randn(s.shape, generator=generator)
        return op.sample(s, net(s, T1), T1, generator)
    if variant.startswith("lang"):
        k = float(variant[4:] or 2)
        return net(s, T1).mu + math.sqrt(k * T1) * sigma0 * torch.randn(s.shape, generator=generator)
    raise SystemExit(f"unknown chain variant {variant!r}; use model, gsn or langK")


@torch.no_grad()
def score_chain(run, scorer, variants: list[str], n_steps: int, seed: int = 0) -> None:
    net, op, T = run.model.network, run.model.operator, eval_temperatures(run.model, run.study)
    start = walkback.generate(net, op, run.model.p_star, T, N_CHAINS, torch.Generator().manual_seed(seed))
    stops = [stop for stop in (10, 100, 1000, 3000, 10000) if stop <= n_steps]
    for variant in variants:
        s, done, clock, generator = start.clone(), 0, time.perf_counter(), torch.Generator().manual_seed(seed + 1)
        for stop in stops:
            for _ in range(stop - done):
                s = chain_step(run, variant, s, T[0], generator)
            done = stop
            mean = op.mean(s, net(s, T[0]))
            print(f"{variant} {stop}: {_line(scorer.figures(s[:, : run.data.n_visible]))} | mean "
                  f"{_line(scorer.figures(mean[:, : run.data.n_visible]))} | {time.perf_counter() - clock:.0f} s",
                  flush=True)


@torch.no_grad()
def denoising_error(run) -> None:
    """The rms error and -log p of the step at T = 1 (clean test images) and T = 1.1 (their first heating step)."""
    net, op, sigma0 = run.model.network, run.model.operator, run.study.operator.sigma
    generator = torch.Generator().manual_seed(0)
    x = run.data.batch(run.data.test[:256], generator, torch.float32)
    for T, V in ((1.0, 0.0), (1.1, 1.1 * sigma0**2)):
        s = x + math.sqrt(V) * torch.randn(x.shape, generator=generator)
        drive = net(s, T)
        print(f"F(x + noise of variance {V:.5f}, T = {T}): rms error {(op.mean(s, drive) - x).pow(2).mean().sqrt():.4f}, "
              f"-log p {-op.log_prob(x, s, drive, T).mean():.0f} nats")


@torch.no_grad()
def step_losses(run) -> None:
    net, op, heating = run.model.network, run.model.operator, run.model.heating
    T, generator = eval_temperatures(run.model, run.study), torch.Generator().manual_seed(0)
    x = run.data.batch(run.data.test[:256], generator, torch.float32)
    states = walkback.heating_trajectory(net, op, x, T, generator, heating)
    losses = walkback.walkback_losses(net, op, states, T, targets=walkback.posterior_targets(op, heating, states, T))
    sigma = torch.nn.functional.softplus(net.sigma_visible)
    print(f"{run.run_dir}: loss {losses.sum():.0f} nats; per 7 steps {[round(float(losses[i:i + 7].sum())) for i in range(0, len(T), 7)]}; "
          f"sigma mean {sigma.mean():.4f}, range {sigma.min():.4f}-{sigma.max():.4f}")
    denoising_error(run)


def finetune(run, n_updates: int, lr: float, overrides: list[str]) -> None:
    study = parse_study(read_summary(run.run_dir).attrs["study_resolved"], overrides=overrides)
    model, net = run.model, run.model.network
    net.train()
    clock, losses = time.perf_counter(), []
    for k in range(n_updates):
        for group in model.optimizer.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * k / n_updates))
        losses.append(run_module.train_step(model, study, run.data, run.device, torch.float32, with_terms=False)["loss"])
        if (k + 1) % 250 == 0:
            print(f"update {k + 1}: loss {sum(losses[-250:]) / 250:.0f}, {time.perf_counter() - clock:.0f} s", flush=True)
    net.eval()
    denoising_error(run)


def command_name(text: str) -> str:
    """COMMAND: one of USAGES' keys."""
    if text not in USAGES:
        raise ValueError("chain, finetune or steps")
    return text


def variant_names(text: str) -> list[str]:
    """VARIANT[,VARIANT...]: names :func:`chain_step` reads, checked before the run is loaded."""
    variants = text.split(",")
    for variant in variants:
        try:
            ok = variant in ("model", "gsn") or variant.startswith("lang") and float(variant[4:] or 2) >= 0
        except ValueError:
            ok = False
        if not ok:
            raise ValueError("a comma-separated list of model, gsn or langK")
    return variants


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    command, = positional(argv[:1], " or ".join(USAGES.values()), ("COMMAND", command_name))
    usage = USAGES[command]
    if command == "steps":
        run_dirs, = positional(argv[1:], usage, ("RUN_DIR ...", str))
        for run_dir in run_dirs:
            step_losses(load_run(run_dir))
        return
    if command == "chain":
        run_dir, n_steps, variants = positional(argv[1:], usage, ("RUN_DIR", str), ("STEPS", positive_int),
                                                ("VARIANT[,VARIANT...]", variant_names))
    else:
        run_dir, n_updates, lr, overrides = positional(argv[1:], usage, ("RUN_DIR", str), ("UPDATES", nonnegative_int),
                                                       ("LR", float), ("KEY=VALUE ...", str, []))
    run = load_run(run_dir)
    scorer = ImageScorer.build(mnist_classifier(None, True), run.data, N_CHAINS)
    if command == "chain":
        score_chain(run, scorer, variants, n_steps)
    else:
        finetune(run, n_updates, lr, overrides)
        net, op, T = run.model.network, run.model.operator, eval_temperatures(run.model, run.study)
        with torch.no_grad():
            images = walkback.generate(net, op, run.model.p_star, T, N_CHAINS, torch.Generator().manual_seed(0),
                                       final_mean=True)
        print(f"cooled (the last step's mean): {_line(scorer.figures(images[:, : run.data.n_visible]))}", flush=True)
        score_chain(run, scorer, ["model"], 3000)


if __name__ == "__main__":
    sys.exit(run_script("studies.mnist_stdp.t1_chain", main))

"""Fine-tune a finished noise-heated MNIST run with the first level scored at the states its own T = 1 chain
reaches, against targets the model's own cooling draws from a warmer level, then measure what the chain does.

    python -m studies.mnist_stdp.chain_targets RUN_DIR UPDATES LR BETA [T_HOT [STEPS]]

Why. studies.mnist_stdp.langevin_chain finds that a Langevin chain on the first level's estimate loses the
digits at every small step: the estimate's own law is not the data's, because a denoising loss at level T_1
scores the estimate only within about sqrt(784 tau_1) of a training image, and a long chain walks out of that
shell. The level's exact estimate there reads the training set (the kernel-density anchor); this term asks the
model instead. CHAINS persistent T = 1 chains (the run's own chain, 32 of them, started from cooled samples)
take 10 steps per update, so they reach the states a long chain reaches; each update heats their states to
the schedule's level at or above T_HOT (default 5), cools them back with the model's walk back (its final
mean, no corrector steps) and adds

    BETA * mean over the chains of -log p_{T_1}(cooled | chain state),

the first level's walk-back step scored from the chain's state to the model's own draw of the data behind it.
Its gradient is taken by autograd; for the main study's network the local rule with B = K moves each synapse
by the same amount (tests/test_pathway.py), so this is a probe of the term, not yet the rule. Each update is
first the run's own training step (learning rate LR, half cosine to 0). BETA 0 is the control: the same
updates, the chains run, no term. Prints the term every 250 updates, then 200 cooled samples' figures (the
run's cooling) and the run's T = 1 chain over STEPS (default 10^4) steps from 50 of them, read as each
chain's last mean (studies.mnist_stdp.slope_hinge.cooled_and_chain). Used for
studies/mnist_stdp_experiments.md.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable

import torch

from asymnet import run as run_module
from asymnet import walkback
from asymnet.model import eval_temperatures, generation_temperatures, load_run
from studies.mnist_stdp import nonnegative_int, positional, positive_int, run_script
from studies.mnist_stdp.class_balance import heat_to, levels_up_to
from studies.mnist_stdp.slope_hinge import autograd_step, cooled_and_chain

USAGE = "python -m studies.mnist_stdp.chain_targets RUN_DIR UPDATES LR BETA [T_HOT [STEPS]]"
CHAINS, STEPS_PER_UPDATE = 32, 10


def chain_term(net, op, chains: torch.Tensor, target: torch.Tensor, T_1: float) -> torch.Tensor:
    """The mean over chains of -log p_{T_1}(target | chain state), with its gradient."""
    return -op.log_prob(target, chains, net(chains, T_1), T_1).mean()


def fine_tune_with_chains(run, n_updates: int, lr: float, n_steps: int, term: Callable, description: str) -> None:
    """The fine-tune both chain studies share: ``n_updates`` updates of a finished run, each the run's own
    training step (learning rate ``lr``, half cosine to 0), then CHAINS persistent T = 1 chains (started from
    cooled samples) advanced STEPS_PER_UPDATE steps, then ``term(chains, generator)``, which takes the study's
    own optimizer step and returns its figures (name: value); their means over each 250 updates are printed.
    Then cooled_and_chain's 200 cooled samples and the T = 1 chain over ``n_steps`` steps."""
    model, study, data = run.model, run.study, run.data
    net, op = model.network, model.operator
    print(f"{run.run_dir}: {n_updates} updates at learning rate {lr:g} (half cosine), {description}, {CHAINS} chains "
          f"of {STEPS_PER_UPDATE} T = 1 steps per update")
    gen = torch.Generator().manual_seed(12345)
    with torch.no_grad():
        chains = walkback.generate(net, op, model.p_star, eval_temperatures(model, study), CHAINS,
                                   torch.Generator().manual_seed(7))
    clock, losses, figures = time.perf_counter(), [], {}
    net.train()
    for k in range(n_updates):
        for group in model.optimizer.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * k / n_updates))
        losses.append(run_module.train_step(model, study, data, run.device, torch.float32, with_terms=False)["loss"])
        with torch.no_grad():
            for _ in range(STEPS_PER_UPDATE):
                chains = op.sample(chains, net(chains, 1.0), 1.0, gen)
        for name, value in term(chains, gen).items():
            figures.setdefault(name, []).append(value)
        if (k + 1) % 250 == 0:
            shown = "".join(f", {name} {sum(v[-250:]) / 250:.1f}" for name, v in figures.items())
            print(f"update {k + 1}: loss {sum(losses[-250:]) / 250:.0f}{shown}; {time.perf_counter() - clock:.0f} s",
                  flush=True)
    net.eval()
    with torch.no_grad():
        cooled_and_chain(run, n_steps)


def main(argv: list[str]) -> int:
    run_dir, n_updates, lr, beta, T_hot, n_steps = positional(
        argv, USAGE, ("RUN_DIR", str), ("UPDATES", nonnegative_int), ("LR", float), ("BETA", float),
        ("T_HOT", float, 5.0), ("STEPS", positive_int, 10_000))
    run = load_run(run_dir)
    model, study = run.model, run.study
    net, op = model.network, model.operator
    if model.heating is None or net.pathway is None:
        raise SystemExit(f"{run_dir}: needs a noise-heated run with a convolutional pathway")
    T_1 = eval_temperatures(model, study)[0]
    levels, top = levels_up_to(generation_temperatures(model, study), T_hot)
    if top is None:
        raise SystemExit(f"{run_dir}: T_HOT = {T_hot:g} is above the schedule's top level")

    def scored(chains: torch.Tensor, gen: torch.Generator) -> dict[str, float]:
        with torch.no_grad():
            target = walkback.cool_levels(net, op, heat_to(run, chains, levels, gen), levels, gen, True)
        if beta:
            term = chain_term(net, op, chains, target, T_1)
            autograd_step(model, study, beta * term)
        else:
            with torch.no_grad():
                term = chain_term(net, op, chains, target, T_1)
        return {"chain term (nats)": term.item()}

    fine_tune_with_chains(run, n_updates, lr, n_steps, scored,
                          f"chain-target weight {beta:g}, targets cooled from T = {top:g}")
    return 0


if __name__ == "__main__":
    sys.exit(run_script("studies.mnist_stdp.chain_targets", main))

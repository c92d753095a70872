"""Fine-tune a finished noise-heated MNIST run with a hinge on the T = 1 map's slope along its leading
directions at heated training images, then measure what the chain does.

    python -m studies.mnist_stdp.slope_hinge RUN_DIR UPDATES LR BETA [ROUNDS [T [STEPS]]]

Each of UPDATES updates (learning rate LR, half cosine to 0) is the run's own training step, then, with BETA >
0, one more optimizer step on

    BETA * mean over the batch of relu(||J(s) u|| - 1)^2,   s = x + sqrt(tau_1) eps,

J the Jacobian of the mean map at temperature T (default 1, the chain's; the schedule's first level T_1 is
the coldest the walk back scores) at s, u its leading direction there from ROUNDS (default 3) rounds of
power iteration from a random vector, ||J u|| by central differences (step 10^-2). Why: studies.mnist_stdp.
contraction finds 8 to 15 directions with eigenvalues 1.07 to 1.27 at every digit, and slow_noise finds about
half the chain's drift goes through them; a map held to slopes of at most 1 there should drift less. The
term's gradient is taken by autograd: for the main study's network, whose pathway rule with B = K is the
exact gradient of any loss on the visible drive (tests/test_pathway.py), the local rule would move each
synapse by the same amount; this is a probe of the term, not yet the rule. BETA 0 is the control, the same
fine-tune without the term. Prints the term and slopes every 250 updates, then the leading eigenvalues at 50
heated test images (contraction.print_leading), the 200 cooled samples' figures (the run's cooling) and a
T = 1 chain of STEPS (default 1,000) steps from 50 of them, scored on each chain's last mean. Used for
studies/mnist_stdp_experiments.md.
"""

from __future__ import annotations

import copy
import math
import sys
import time

import torch

from asymnet import run as run_module
from asymnet import walkback
from asymnet.evaluate import ImageScorer, mnist_classifier
from asymnet.long_run import log_spaced_steps
from asymnet.model import cooling_corrector, eval_temperatures, load_run
from studies.mnist_stdp import nonnegative_int, positional, positive_int, run_script
from studies.mnist_stdp.chain_noise import posterior_std, scaled_chain
from studies.mnist_stdp.contraction import jacobian_products, principal_directions, print_leading
from studies.mnist_stdp.heated_chain import row

USAGE = "python -m studies.mnist_stdp.slope_hinge RUN_DIR UPDATES LR BETA [ROUNDS [T [STEPS]]]"
H = 1e-2  # the central differences' step (float32 states, pixels of order 1)


def leading_direction(mean_map, s: torch.Tensor, rounds: int, generator: torch.Generator) -> torch.Tensor:
    """Unit vectors (n, dim) from ``rounds`` rounds of power iteration on each row's Jacobian, from random ones."""
    u = torch.randn(s.shape, generator=generator, dtype=s.dtype)
    u = u / u.norm(dim=1, keepdim=True)
    with torch.no_grad():
        for _ in range(rounds):
            u = jacobian_products(mean_map, s, u.unsqueeze(2), H).squeeze(2)
            u = u / u.norm(dim=1, keepdim=True)
    return u


def slope_hinge(mean_map, s: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean of relu(||J u|| - 1)^2 over the rows, differentiable, and the slopes ||J u|| (detached)."""
    slope = jacobian_products(mean_map, s, u.unsqueeze(2), H).squeeze(2).norm(dim=1)
    return torch.relu(slope - 1).pow(2).mean(), slope.detach()


def parameter_grad_norm(net) -> float:
    """The norm over a network's parameters of the gradients they hold (the last update's)."""
    return math.sqrt(sum(p.grad.pow(2).sum().item() for p in net.parameters() if p.grad is not None))


def autograd_step(model, study, loss: torch.Tensor) -> float:
    """One optimizer step of a run's network on the autograd gradient of ``loss``, its pathway's feedback
    kernels moved as the run's own updates move them (Kolen-Pollack). Returns that gradient's norm over all
    parameters."""
    net = model.network
    model.optimizer.zero_grad(set_to_none=False)
    loss.backward()
    norm = parameter_grad_norm(net)
    kernels = net.pathway.kernels_before()
    model.optimizer.step()
    if study.network.feedback == "kolen_pollack":
        net.pathway.kolen_pollack_step(kernels, study.network.feedback_decay)
    return norm


def main(argv: list[str]) -> int:
    run_dir, n_updates, lr, beta, rounds, T, n_steps = positional(
        argv, USAGE, ("RUN_DIR", str), ("UPDATES", nonnegative_int), ("LR", float), ("BETA", float),
        ("ROUNDS", nonnegative_int, 3), ("T", float, 1.0), ("STEPS", positive_int, 1_000))
    run = load_run(run_dir)
    model, study, data = run.model, run.study, run.data
    net, op = model.network, model.operator
    if model.heating is None or net.pathway is None:
        raise SystemExit(f"{run_dir}: needs a noise-heated run with a convolutional pathway")
    tau, _ = posterior_std(run)

    def mean_map(s: torch.Tensor) -> torch.Tensor:
        return op.mean(s, net(s, T))

    print(f"{run_dir}: {n_updates} updates at learning rate {lr:g} (half cosine), slope hinge weight {beta:g} at "
          f"T = {T:g}, {rounds} power rounds, tau_1 {tau:.5f}")
    gen = torch.Generator().manual_seed(12345)
    clock, losses, terms, slopes = time.perf_counter(), [], [], []
    net.train()
    for k in range(n_updates):
        for group in model.optimizer.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * k / n_updates))
        losses.append(run_module.train_step(model, study, data, run.device, torch.float32, with_terms=False)["loss"])
        x = data.batch(data.train[torch.randint(len(data.train), (study.training.batch_size,), generator=gen)], gen,
                       torch.float32)
        s = x + tau**0.5 * torch.randn(x.shape, generator=gen)
        u = leading_direction(mean_map, s, rounds, gen)
        if beta:
            term, slope = slope_hinge(mean_map, s, u)
            autograd_step(model, study, beta * term)
        else:
            with torch.no_grad():
                term, slope = slope_hinge(mean_map, s, u)
        terms.append(term.item())
        slopes.append(slope.median().item())
        if (k + 1) % 250 == 0:
            print(f"update {k + 1}: loss {sum(losses[-250:]) / 250:.0f}, hinge {sum(terms[-250:]) / 250:.4f}, "
                  f"median leading slope {sum(slopes[-250:]) / 250:.3f}, {time.perf_counter() - clock:.0f} s",
                  flush=True)
    net.eval()
    with torch.no_grad():
        evaluate(run, tau, n_steps)
    return 0


def evaluate(run, tau: float, n_steps: int) -> None:
    """The fine-tuned network's leading eigenvalues at 50 heated test images, its cooled samples and chain."""
    model, data = run.model, run.data
    net, op = model.network, model.operator
    test = data.batch(data.test[:5000], torch.Generator().manual_seed(0), torch.float64)
    directions = principal_directions(test)[1]
    gen = torch.Generator().manual_seed(3)
    heated = test[:50] + tau**0.5 * torch.randn(50, data.n_visible, generator=gen, dtype=torch.float64)
    network = copy.deepcopy(net).double()
    print_leading("50 heated test images, T = 1", lambda s: op.mean(s, network(s, 1.0)), heated, directions, gen)
    cooled_and_chain(run, n_steps)


def cooled_and_chain(run, n_steps: int) -> None:
    """A run's 200 cooled samples' figures (its own cooling) and its T = 1 chain of n_steps steps from 50 cooled
    draws, read as each chain's last mean at 10, 30, ..., n_steps steps."""
    model, study, data = run.model, run.study, run.data
    net, op = model.network, model.operator
    scorer = ImageScorer.build(mnist_classifier(None, True), data, 200)
    cooled = walkback.generate(net, op, model.p_star, eval_temperatures(model, study), 200,
                               torch.Generator().manual_seed(0), corrector=cooling_corrector(model, study),
                               final_mean=study.evaluation.final_mean)
    print(f"cooled (200) | {row(scorer.figures(cooled))}", flush=True)
    s = walkback.generate(net, op, model.p_star, eval_temperatures(model, study), 50,
                          torch.Generator().manual_seed(0), corrector=cooling_corrector(model, study))
    done, clock, noise = 0, time.perf_counter(), torch.Generator().manual_seed(1)
    for stop in log_spaced_steps(n_steps):
        s, mean = scaled_chain(net, op, s, stop - done, 1.0, noise)  # the run's own T = 1 chain
        done = stop
        print(f"chain {stop} | {row(scorer.figures(mean))} | {time.perf_counter() - clock:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(run_script("studies.mnist_stdp.slope_hinge", main))

"""Fine-tune a finished noise-heated MNIST run with a negative phase at the states its own T = 1 chain reaches:
the first level's implied energy lowered at training images and raised at the chain's states, then measure what
the chain does.

    python -m studies.mnist_stdp.chain_contrast RUN_DIR UPDATES LR BETA [STEPS]

Why. studies.mnist_stdp.langevin_chain finds that the T = 1 chain heads for the law of the first level's own
estimate, which is right on its noise shell around the training images and wrong off it; scoring the first
level at the chain's states against the model's own warmer draws (studies.mnist_stdp.chain_targets) made it
jump farther. A Boltzmann machine meets the same problem with a negative phase: the energy is pushed down at
the data and up where the model's own chain goes, and the push vanishes when the two laws agree. By Tweedie's
formula the first level's mean mu(s, T_1) implies a score (mu(s) - s) / tau_1 (up to the share of the drive
the leak keeps), so the energy it implies, where that field is a gradient (its Jacobian is symmetric to 2 %:
record, J2), differs between a training image x and a chain's state c by the line integral

    E(x) - E(c) = integral_0^1 (s_u - mu(s_u, T_1)) . (x - c) / tau_1 du,   s_u = c + u (x - c),

estimated at two stratified draws of u per pair (asymnet.contrast, which
walkback.contrast_weight now adds to training from the first update). The images are heated by the first level's noise, x = x_0 +
sqrt(tau_1) eps, so that at the law the chain should keep, that of the data blurred at T_1, the two phases
balance (a clean image sits at the blurred law's mode, about 390 nats below a typical state of it). The
term is BETA * mean over pairs of E(x) - E(c): its
gradient moves each mean mu(s_u) along x - c, an error present at each visible unit, so the local rule could
carry it as it carries the walk back's; here autograd takes it (equal to the local rule's for the main study's
network, B = K). CHAINS persistent T = 1 chains (the run's own chain, started from cooled samples) take 10
steps per update, each paired with a fresh training image. Each update is first the run's own training step
(learning rate LR, half cosine to 0); BETA 0 is the control (the chains run, no term). Prints every 250
updates the walk-back loss, the energy difference and both updates' gradient norms, then 200 cooled samples'
figures and the run's T = 1 chain over STEPS (default 10^4) steps from 50 of them, read as each chain's last
mean (studies.mnist_stdp.slope_hinge.cooled_and_chain). Used for studies/mnist_stdp_experiments.md.
"""

from __future__ import annotations

import sys

import torch

from asymnet.contrast import ContrastPairs, energy_gap, heated_images, segment_points
from asymnet.model import eval_temperatures, load_run
from studies.mnist_stdp import nonnegative_int, positional, positive_int, run_script
from studies.mnist_stdp.chain_noise import posterior_std
from studies.mnist_stdp.chain_targets import CHAINS, fine_tune_with_chains
from studies.mnist_stdp.slope_hinge import autograd_step, parameter_grad_norm

USAGE = "python -m studies.mnist_stdp.chain_contrast RUN_DIR UPDATES LR BETA [STEPS]"


def main(argv: list[str]) -> int:
    run_dir, n_updates, lr, beta, n_steps = positional(
        argv, USAGE, ("RUN_DIR", str), ("UPDATES", nonnegative_int), ("LR", float), ("BETA", float),
        ("STEPS", positive_int, 10_000))
    run = load_run(run_dir)
    model, study, data = run.model, run.study, run.data
    net, op = model.network, model.operator
    if model.heating is None or net.pathway is None:
        raise SystemExit(f"{run_dir}: needs a noise-heated run with a convolutional pathway")
    T_1 = eval_temperatures(model, study)[0]
    tau, _ = posterior_std(run)

    def contrast(chains: torch.Tensor, gen: torch.Generator) -> dict[str, float]:
        rule_norm = parameter_grad_norm(net)  # the run's own update, just taken
        x = heated_images(data, CHAINS, tau, gen, torch.float32, chains.device)
        points, directions = segment_points(x, chains, gen)
        pairs = ContrastPairs(points, directions, T_1, tau, chains)
        if beta:
            gap = energy_gap(net, op, pairs)
            term_norm = autograd_step(model, study, beta * gap)
        else:
            with torch.no_grad():
                gap = energy_gap(net, op, pairs)
            term_norm = 0.0
        return {"E(data) - E(chain) (nats)": gap.item(), "gradient norm of the walk back": rule_norm,
                "of the term": term_norm}

    fine_tune_with_chains(run, n_updates, lr, n_steps, contrast,
                          f"contrast weight {beta:g} at T_1 = {T_1:g} (tau_1 {tau:.5f})")
    return 0


if __name__ == "__main__":
    sys.exit(run_script("studies.mnist_stdp.chain_contrast", main))

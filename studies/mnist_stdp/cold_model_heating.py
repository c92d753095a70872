"""Fine-tune a finished noise-heated MNIST run with Variational Walkback's own remedy for the states its chain
visits and the data do not, restricted to the cold levels: beside every noise-heated update, with probability
FRACTION, one more update of the local rule on a trajectory the model heats with its own kernel over the first
LEVELS levels of the schedule (s_t ~ p_{T_t}(. | s_{t-1}) from a training image, T_1 = f up), each step walked
back to the state it came from (the sample target, Algorithm 1). Then the cooling and the T = 1 chain, as
studies.mnist_stdp.t1_chain's proxy scores them.

    python -m studies.mnist_stdp.cold_model_heating RUN_DIR UPDATES LR FRACTION LEVELS

FRACTION 0 is t1_chain's ``finetune`` with no key changed: the control. Why it might help: with the posterior
leak the model's step at T_1 from a clean image is the T = 1 chain's step (denoise, then add sigma(T_1)), so
the walk back of the first level learns to return the chain's own draws to the data, which no noise-heated
trajectory shows it. Used for studies/mnist_stdp_experiments.md.
"""

from __future__ import annotations

import math
import sys
import time

import torch

from asymnet import plasticity, walkback
from asymnet import run as run_module
from asymnet.evaluate import ImageScorer, mnist_classifier
from asymnet.model import eval_temperatures, load_run
from asymnet.runlog import read_summary
from asymnet.study import parse_study
from studies.mnist_stdp import nonnegative_int, positional, positive_int, run_script
from studies.mnist_stdp.t1_chain import N_CHAINS, _line, denoising_error, score_chain

USAGE = "python -m studies.mnist_stdp.cold_model_heating RUN_DIR UPDATES LR FRACTION LEVELS"


def cold_update(model, study, data, levels: int) -> float:
    """One optimizer step of the local rule on a model-heated trajectory over the schedule's first ``levels``
    levels (no gradient through the heating); returns its loss."""
    net, op = model.network, model.operator
    x, _, temperatures = run_module.draw_step(model, study, data, torch.device("cpu"), torch.float32)
    T = list(temperatures)[:levels]
    states, drives = walkback.heating_trajectory_with_drives(net, op, x, T, model.noise_generator, model.shard, None)
    update = plasticity.trajectory_update(net, op, states, T, drives, False, study.walkback.step_weight_power, None,
                                          run_module.continuous_weighting(study))
    model.optimizer.zero_grad(set_to_none=False)
    plasticity.write_gradients(net, update)
    kernels = net.pathway.kernels_before() if net.pathway is not None else None
    model.optimizer.step()
    if kernels is not None and study.network.feedback == "kolen_pollack":
        net.pathway.kolen_pollack_step(kernels, study.network.feedback_decay)
    return float(update.loss)


def main(argv: list[str]) -> int:
    run_dir, n_updates, lr, fraction, levels = positional(argv, USAGE, ("RUN_DIR", str), ("UPDATES", nonnegative_int),
                                                          ("LR", float), ("FRACTION", float), ("LEVELS", positive_int))
    run = load_run(run_dir)
    study = parse_study(read_summary(run.run_dir).attrs["study_resolved"])
    model, net = run.model, run.model.network
    if study.training.learning != "local" or model.heating is None:
        raise SystemExit(f"{run_dir}: needs a noise-heated run trained by the local rule")
    print(f"{run_dir}: {n_updates} updates at learning rate {lr:g} (half cosine), cold model heating over the first "
          f"{levels} levels ({', '.join(f'{T:.3g}' for T in eval_temperatures(model, study)[:levels])}) with "
          f"probability {fraction:g}")
    net.train()
    gen = torch.Generator().manual_seed(12345)
    clock, losses, cold = time.perf_counter(), [], []
    for k in range(n_updates):
        for group in model.optimizer.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * k / n_updates))
        losses.append(run_module.train_step(model, study, run.data, run.device, torch.float32, with_terms=False)["loss"])
        if fraction and torch.rand((), generator=gen).item() < fraction:
            cold.append(cold_update(model, study, run.data, levels))
        if (k + 1) % 250 == 0:
            recent = f", cold {sum(cold[-50:]) / max(len(cold[-50:]), 1):.0f}" if cold else ""
            print(f"update {k + 1}: loss {sum(losses[-250:]) / 250:.0f}{recent}, {time.perf_counter() - clock:.0f} s",
                  flush=True)
    net.eval()
    denoising_error(run)
    scorer = ImageScorer.build(mnist_classifier(None, True), run.data, N_CHAINS)
    with torch.no_grad():
        images = walkback.generate(net, model.operator, model.p_star, eval_temperatures(model, study), N_CHAINS,
                                   torch.Generator().manual_seed(0), final_mean=True)
    print(f"cooled (the last step's mean): {_line(scorer.figures(images[:, : run.data.n_visible]))}", flush=True)
    score_chain(run, scorer, ["model"], 3000)
    return 0


if __name__ == "__main__":
    sys.exit(run_script("studies.mnist_stdp.cold_model_heating", main))

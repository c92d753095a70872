"""``python -m asymnet.run STUDY.yaml``: build, train with Variational Walkback, evaluate, log, plot.

This module wires the pure math (operators, networks, schedule, walkback, plasticity, metrics) to
the study file (study.py), the data (data/), the HDF5 log (runlog.py) and the figures (plots.py).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from asymnet import __version__, anchor, contrast, distributed, plasticity, plots, readout, schedule, walkback
from asymnet.cli import run_command
from asymnet.data import Dataset
from asymnet.distributed import Shard
from asymnet.errors import RunError, TrainingDiverged
from asymnet.evaluate import (IMAGE_FIGURES, ImageScorer, detailed_balance_figures, final_evaluation,
                              generate_visible, has_classifier, held_out_bound, log_symmetry, mnist_classifier)
from asymnet.inpainting import check_mask, measure_inpainting
from asymnet.long_run import measure_long_run
from asymnet.model import (CHECKPOINT_NAME, Model, ReplicaModel, build_model, build_replica_model, check_finite,
                           load_checkpoint, load_data, noise_exponent, pick_device, sampling_precision, save_checkpoint,
                           single_models)
from asymnet.networks import RecurrentNetwork
from asymnet.operators import Drive
from asymnet.runlog import LOG_NAME, LogLayout, RunLog, open_log
from asymnet.study import Study, StudyError, load_study, parse_study, replace_in, study_to_dict


WINDOW_LAGS = torch.arange(-20, 21)


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_autocast(study: Study, device: torch.device) -> None:
    """training.autocast needs autograd learning, and fp16 a GPU (its loss scaling is CUDA's)."""
    mode = study.training.autocast
    if mode == "none":
        return
    if study.training.learning == "local":
        raise StudyError(f"training.autocast: {mode} applies to autograd learning; the local rule runs in the "
                         f"network's dtype. Set training.learning: autograd or training.autocast: none")
    if mode == "fp16" and device.type != "cuda":
        raise StudyError("training.autocast: fp16 needs --device cuda; on a CPU use training.autocast: bf16 or none")


def draw_minibatch(generator: torch.Generator, shard: Shard, study: Study, data: Dataset, std: torch.Tensor | None,
                   dtype) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """One network's share of a training step, on the CPU: this process's rows of one global minibatch,
    started where anchor.start_noise puts them, and the (start, target) pairs of the anchor term when
    anchor.weight is set (else None; ``std``: the operator's T = 1 noise level), both drawn from the clean
    global batch."""
    cfg = study.anchor
    rows = data.train[torch.randint(0, len(data.train), (study.training.batch_size,), generator=generator)]
    clean = data.batch(rows, generator, dtype)
    x = shard.take(anchor.noisy_starts(clean, cfg.start_noise, generator, cfg.start_noise_fraction))
    if not cfg.weight:
        return x, None
    pairs = anchor.anchor_pairs(clean, std, generator, cfg.noise, cfg.bandwidth, cfg.wide, cfg.wide_noise, data.train)
    return x, tuple(shard.take(a) for a in pairs)


def draw_step(model: Model | ReplicaModel, study: Study, data: Dataset, device, dtype) -> tuple[
        torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None, list[float] | walkback.ReplicaSchedule]:
    """The random draws of one training step before the chain: the minibatch x (batch, n_visible) on
    ``device``, the anchor's pairs or None, and the heating schedule [T_1, ..., T_K] with K = n + n_heating,
    n ~ U{0..N1} (Algorithm 1, line 1). With replicas each replica draws its own, from its generator in its
    single run's order: x (R, batch, n_visible), pairs (R, batch, n_visible), a walkback.ReplicaSchedule."""
    replicated = isinstance(model, ReplicaModel)
    members = list(zip(model.generators, model.studies, model.datasets, [s.n_heating for s in model.singles])) \
        if replicated else [(model.generator, study, data, model.n_heating)]
    std = None
    if study.anchor.weight:
        std = model.operator.std(Drive(None, model.network.sigma.detach().cpu().to(dtype)), 1.0)
    draws, schedules = [], []
    for r, (generator, member_study, member_data, n_heating) in enumerate(members):
        draws.append(draw_minibatch(generator, model.shard, member_study, member_data,
                                    std[r, 0] if replicated and std is not None else std, dtype))
        n_extra = schedule.sample_extra_steps(study.walkback.n_extra_max, generator)
        schedules.append(schedule.heating_temperatures(n_extra, n_heating, study.walkback.heating_factor))
    if replicated:
        x = torch.stack([x for x, _ in draws])
        pairs = None if draws[0][1] is None else tuple(torch.stack(part) for part in zip(*(p for _, p in draws)))
        temperatures = walkback.ReplicaSchedule.pad(schedules, dtype, device)
    else:
        (x, pairs), temperatures = draws[0], schedules[0]
    x = (x.pin_memory() if device.type == "cuda" else x).to(device, non_blocking=True)
    return x, None if pairs is None else tuple(a.to(device) for a in pairs), temperatures


def learns_hidden_locally(study: Study) -> bool:
    """Learned fast hidden units under the local rule: the runs whose feedback pathway the log follows."""
    return study.network.hidden_learning == "learned" and study.training.learning == "local"


def learns_pathway_locally(study: Study) -> bool:
    """A convolutional pathway (network.conv_channels) under the local rule: its feedback kernels are logged."""
    return bool(study.network.conv_channels) and study.training.learning == "local"


def continuous_weighting(study: Study) -> float:
    """q of walkback.step_weighting: continuous (1 for noise_scaling sqrt_T, 2 for T; walkback.drift_gain), 0
    for the walk back's own (elbo) weighting."""
    return noise_exponent(study) if study.walkback.step_weighting == "continuous" else 0.0


def train_step(model: Model | ReplicaModel, study: Study, data: Dataset, device, dtype, with_terms: bool = True,
               gradient_check: bool = False, step: int | None = None) -> dict[str, float] | list[dict[str, float]]:
    """One minibatch of Algorithm 1: heat, score the walk back, update by autograd or the local rule
    (with the sizes of its STDP and equal-time terms when ``with_terms``), plus the anchor's term when the
    study has one. In a data-parallel run this process takes its rows of the global batch and the gradients
    are averaged over the processes. Returns the step's figures; with replicas (a ReplicaModel, whose
    tensors carry a leading replica axis through the same code) a list of them, one per replica.
    Learned hidden units under the local rule: with ``gradient_check`` the figures hold
    ``rule_gradient_cosine``, the rule's W_hv update against autograd's on this minibatch (this process's
    rows), and under network.feedback: kolen_pollack B follows W_vh's update (plasticity.kolen_pollack_step).
    ``step`` is the update's number, counted from 1 (None: any update); walkback.contrast_weight's term acts
    on those after the first contrast_start(study)."""
    net, operator, shard, power = model.network, model.operator, model.shard, study.walkback.step_weight_power
    q = continuous_weighting(study)
    replicated = isinstance(model, ReplicaModel)
    x, pairs, temperatures = draw_step(model, study, data, device, dtype)
    noise = model.heating_noise() if replicated else model.noise_generator
    heating = model.heating
    fraction = study.walkback.model_heating_fraction
    if fraction and heating is not None:  # this step heated by the model's own kernel (drawn as the minibatch is)
        heating = None if torch.rand((), generator=model.generator).item() < fraction else heating
    autocast = torch.autocast(device.type, AUTOCAST_DTYPES.get(study.training.autocast, torch.bfloat16),
                              enabled=study.training.autocast != "none")
    targets, scale = None, 1.0
    with autocast:
        s0 = walkback.settle_hidden(net, operator, x, study.walkback.settle_steps, noise, shard)
        if heating is not None and study.walkback.sampled_steps:  # m steps drawn from s_0 (walkback.sample_steps)
            sampled = walkback.sample_steps(operator, heating, s0, temperatures, study.walkback.sampled_steps,
                                            model.generator, walkback.noise_source(noise, shard))
            states, temperatures, targets, scale = sampled.states, sampled.temperatures, sampled.targets, sampled.scale
            drives, last = None, sampled.last
        else:
            states, drives = walkback.heating_trajectory_with_drives(net, operator, s0, temperatures, noise, shard,
                                                                         heating)
            last = states[-1]
    if heating is not None and study.walkback.target == "posterior" and targets is None:
        targets = walkback.posterior_targets(operator, heating, states, temperatures)
    unit, weight = None, study.walkback.unit_step_weight / scale  # the trajectory's update is times K / m below
    if heating is not None and weight:  # walkback.unit_step_weight: one T = 1 step of the heating, walked back
        unit = walkback.heating_trajectory_with_drives(net, operator, s0, [1.0], noise, shard, heating)[0]
    contrasted = study.walkback.contrast_weight and (step is None or step > contrast_start(study))
    pairs_c = contrast.draw_pairs(model, study, data, dtype) if contrasted else None
    contrast_weight = study.walkback.contrast_weight / scale
    model.optimizer.zero_grad(set_to_none=False)
    if isinstance(model.optimizer, readout.LeastSquaresReadout):
        terms = [readout.regression(net, operator, states, temperatures, power)]
        if pairs:
            terms.append(readout.regression(net, operator, list(pairs[::-1]), [1.0], weight=study.anchor.weight))
        model.optimizer.accumulate(terms, shard)
    check = None  # rule_gradient_cosine, on the steps that ask for it
    if study.training.learning == "local":
        update = plasticity.trajectory_update(net, operator, states, temperatures, drives, with_terms, power,
                                              targets, q)
        if gradient_check and (learns_hidden_locally(study) or learns_pathway_locally(study)):
            check = plasticity.rule_gradient_cosines(net, operator, states, temperatures, update, power, targets, q)
        if pairs:
            update = anchor.add_anchor(update, anchor.local_update(net, operator, pairs), study.anchor.weight)
        if unit is not None:
            update = plasticity.add_update(update, plasticity.trajectory_update(
                net, operator, unit, [1.0], None, with_terms), weight)
        if pairs_c is not None:
            contrast_update, gap = contrast.local_update(net, operator, pairs_c)
            update = plasticity.add_update(update, contrast_update, contrast_weight)
        plasticity.write_gradients(net, update)
        loss = update.loss.detach()
        terms = [update.temporal_norm, update.equal_time_norm] if with_terms else []
    else:
        with autocast:
            loss = walkback.walkback_losses(net, operator, states, temperatures, power, targets, q).sum(0)
            if unit is not None:
                loss = loss + weight * walkback.walkback_losses(net, operator, unit, [1.0]).sum(0)
            total = loss + study.anchor.weight * anchor.score_anchor_loss(net, operator, *pairs) if pairs else loss
        if pairs_c is not None:
            gap = contrast.energy_gap(net, operator, pairs_c)
            total, gap = total + contrast_weight * gap, gap.detach()
        (model.scaler.scale(total.sum()) if model.scaler else total.sum()).backward()
        loss, terms = loss.detach(), []
    reported = torch.stack([loss.to(dtype), *(torch.as_tensor(t, dtype=dtype, device=loss.device) for t in terms)])
    if scale != 1.0:  # the m scored steps stand for all K (walkback.sample_steps)
        reported.mul_(scale)
        for p in net.parameters():
            if p.grad is not None:
                p.grad.mul_(scale)
    shard.average_([p.grad for p in net.parameters() if p.grad is not None] + [reported])
    for r, value in enumerate(reported[0].reshape(-1).tolist()):
        if not math.isfinite(value):
            raise TrainingDiverged(f"the walkback loss{f' of replica {r}' if replicated else ''} became {value}")
    if getattr(net, "receptive_mask", None) is not None:
        net.mask_gradients()
    mirrored = learns_hidden_locally(study) and study.network.feedback == "kolen_pollack"
    W_vh_before = net.W[..., : net.n_visible, net.n_visible:].detach().clone() if mirrored else None
    kernels_before = None  # the pathway's forward kernels before the step, for its Kolen-Pollack feedback
    if learns_pathway_locally(study) and study.network.feedback == "kolen_pollack":
        kernels_before = net.pathway.kernels_before()
    if model.scaler:
        model.scaler.step(model.optimizer)
        model.scaler.update()
    else:
        model.optimizer.step()
    if mirrored:
        plasticity.kolen_pollack_step(net, W_vh_before, study.network.feedback_decay)
    if kernels_before is not None:
        net.pathway.kolen_pollack_step(kernels_before, study.network.feedback_decay)
    model.p_star.update(last, study.walkback.p_star_momentum, shard)
    if pairs_c is not None:
        model.contrast_chains = pairs_c.states
    names = ("loss", "stdp_temporal", "stdp_equal_time")[: len(reported)]
    figures = [dict(zip(names, row)) for row in reported.reshape(len(names), -1).T.tolist()]
    if pairs_c is not None:  # E(x) - E(c) at this update's pairs, before its step (every process holds them all)
        figures[0]["contrast_gap"] = gap.item()
    if check is not None:
        for name, values in check.items():
            for row, value in zip(figures, torch.as_tensor(values).reshape(-1).tolist()):
                row[name] = value
    return figures if replicated else figures[0]


def learning_rate(study: Study, step: int) -> float:
    """training.learning_rate, constant or decayed to 0 along a half cosine over the run (a pure
    function of the step, so a resumed run continues the same schedule)."""
    lr = study.training.learning_rate
    if study.training.lr_schedule == "cosine":
        lr *= 0.5 * (1.0 + math.cos(math.pi * (step - 1) / study.training.steps))
    return lr


def set_learning_rate(optimizer: torch.optim.Optimizer, study: Study, step: int) -> None:
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(study, step)


def contrast_start(study: Study) -> int:
    """The number of updates before walkback.contrast_weight's term acts: walkback.contrast_start (a share of
    training.steps) times training.steps, rounded."""
    return round(study.walkback.contrast_start * study.training.steps)


def train_members(model: Model | ReplicaModel, study: Study, data: Dataset, device, dtype, step: int,
                  with_terms: bool, gradient_check: bool = False) -> list[dict[str, float]]:
    """One training step of every network of the run (the single one, or all replicas, each with the
    learning rate of its own study): figures of each."""
    if isinstance(model, ReplicaModel):
        model.optimizer.param_groups[0]["lr"] = [learning_rate(single, step) for single in model.studies]
        return train_step(model, study, data, device, dtype, with_terms, gradient_check, step)
    set_learning_rate(model.optimizer, study, step)
    return [train_step(model, study, data, device, dtype, with_terms, gradient_check, step)]


@dataclass(frozen=True)
class Member:
    """One network's share of a run: the log (or replica group) it writes, its study and its data."""

    log: RunLog
    study: Study
    data: Dataset


def members_of(log: RunLog, model: Model | ReplicaModel, study: Study, data: Dataset) -> list[Member]:
    if isinstance(model, Model):
        return [Member(log, study, data)]
    return [Member(log.replica(r), single, single_data)
            for r, (single, single_data) in enumerate(zip(model.studies, model.datasets))]


ROOT_ONLY = ("wall_time", "learning_window", *("test_" + name for name in IMAGE_FIGURES))


def layout_for(study: Study, model: Model | ReplicaModel, data: Dataset) -> LogLayout:
    """Every dataset this run will write, declared before the log goes live. With replicas, each replica's
    group /replicas/<r> holds what a single run's log holds, less what they share (ROOT_ONLY: the clock,
    the learning window, the test images' figures), which stays at the root."""
    if isinstance(model, Model):
        return _network_layout(study, model, data)
    one = _network_layout(model.studies[0], model.singles[0], model.datasets[0])
    names = lambda group, root: tuple(name for name in group if (name in ROOT_ONLY) == root)  # noqa: E731
    samples = lambda root: {tag: shape for tag, shape in one.samples.items() if (tag in ROOT_ONLY) == root}  # noqa: E731
    replica = LogLayout(names(one.metrics, False), one.weights, samples(False), names(one.evals, False))
    return LogLayout(names(one.metrics, True), {}, samples(True), names(one.evals, True),
                     tuple(replica_attrs(study, single) for single in model.studies), replica)


def replica_attrs(study: Study, single: Study) -> dict:
    """Attributes of a replica's log group: its seed and, with a sweep, the swept key and its value."""
    attrs = {"seed": single.seed}
    if study.replica_sweep.key:
        key = study.replica_sweep.key
        section, _, leaf = key.rpartition(".")
        attrs.update(swept_key=key, swept_value=getattr(getattr(single, section) if section else single, leaf))
    return attrs


def _network_layout(study: Study, model: Model, data: Dataset) -> LogLayout:
    metrics = ["loss", "wall_time", "bound", "symmetry_cosine", "symmetric_norm", "antisymmetric_norm"]
    if study.evaluation.ep_chains:
        metrics += ["ep", "ep_stderr", "relative_irreversibility"]
    weights = {}
    samples = {"final": (study.evaluation.n_samples, data.n_visible)}
    if isinstance(model.network, RecurrentNetwork):
        weights["W"] = tuple(model.network.W.shape)
    if study.training.learning == "local":
        metrics += ["stdp_temporal", "stdp_equal_time"]
        samples["learning_window"] = (len(WINDOW_LAGS), 3)
    if learns_hidden_locally(study):
        metrics += ["feedback_alignment", "rule_gradient_cosine"]
    if learns_pathway_locally(study):
        metrics += ["pathway_alignment", "pathway_gradient_cosine"]
    if study.walkback.contrast_weight:
        metrics += ["contrast_gap"]
    evals = ["bound"]
    if data.rescaling is not None:
        samples["untrained"] = samples["final"]
        evals += ["bound_bits_per_dim"] if model.network.n_units == data.n_visible else []
    if has_classifier(data):
        evals += [*IMAGE_FIGURES, *(prefix + name for prefix in ("untrained_", "test_") for name in IMAGE_FIGURES)]
    if data.toy is not None:
        samples["data"] = (min(study.evaluation.n_samples, len(data.test)), data.n_visible)
        evals += ["mmd", "mmd_baseline", "mmd_p_value", "sample_log_density", "data_log_density"]
    return LogLayout(tuple(metrics), weights, samples, tuple(evals))


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m asymnet.run", description=__doc__.splitlines()[0])
    parser.add_argument("study", nargs="?", help="study YAML file (omit with --resume: the log holds the study)")
    parser.add_argument("--out", help="run directory (default runs/<study>/<time>)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a study key, e.g. --set training.steps=100 (repeatable)")
    parser.add_argument("--data", help="data folder (default: $ASYMNET_DATA, then ./data)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--seed", type=int, help="override the study's seed")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def resolve_study(args) -> tuple[Study, str, Path]:
    """The study, the YAML text that records it, and the run directory; nothing is written yet."""
    if args.resume:
        run_dir = Path(args.resume)
        with open_log(run_dir) as log:
            text = log.attrs["study_resolved"]
        if args.overrides or args.seed is not None or args.study:
            raise RunError("--resume continues a run exactly as it started: drop the study file, --set and --seed")
        return parse_study(text, source=str(run_dir / LOG_NAME), from_log=True), text, run_dir
    if not args.study:
        raise RunError("no study file given: python -m asymnet.run STUDY.yaml (or --resume RUN_DIR)")
    study, text = load_study(args.study, args.overrides)
    if args.seed is not None:
        study = replace_in(study, "seed", args.seed)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path(args.out) if args.out else Path("runs") / study.name / stamp
    if (run_dir / LOG_NAME).exists():
        raise RunError(f"{run_dir} already holds a run log; choose another --out, or continue it with --resume {run_dir}")
    return study, text, run_dir


def run(args) -> Path:
    """Train and evaluate the study (or continue --resume); under torchrun, one process of the group."""
    shard, device = distributed.start(args.device)
    try:
        return _run(args, shard, device)
    finally:
        distributed.stop(shard)


def _resolve_on_main(args, shard: Shard) -> tuple[Study, str, Path]:
    """resolve_study on rank 0, whose run directory and resolved study every other rank then receives."""
    if not shard.active:
        return resolve_study(args)
    if shard.is_main:
        try:
            study, text, run_dir = resolve_study(args)
        except BaseException:
            shard.broadcast_text(None)
            raise
        shard.broadcast_text(json.dumps({"run_dir": str(run_dir), "text": text, "resolved": _resolved_yaml(study)}))
        return study, text, run_dir
    received = shard.broadcast_text("")
    if received is None:
        raise RunError("process 0 could not start the run (its error is printed above)")
    message = json.loads(received)
    return parse_study(message["resolved"], source="<from process 0>"), message["text"], Path(message["run_dir"])


def _run(args, shard: Shard, device: torch.device) -> Path:
    study, text, run_dir = _resolve_on_main(args, shard)
    device = pick_device(args.device) if not shard.active else device
    dtype = getattr(torch, study.training.dtype)
    check_autocast(study, device)
    if shard.active:
        if study.replicas > 1:
            raise distributed.DistributedError(f"replicas: {study.replicas} trains its replicas in one process; "
                                               "run it without torchrun (or set replicas: 1)")
        shard.rows(study.training.batch_size)  # the batch must split evenly over the processes
    for mask in study.evaluation.inpaint_masks:
        check_mask(mask)
    data = load_data(study, args.data)
    if study.evaluation.inpaint_masks and data.image_shape is None:
        raise StudyError(f"evaluation.inpaint_masks needs an image dataset, got data.name: {study.data.name}; "
                         "set evaluation.inpaint_masks: []")
    if study.replicas > 1:
        model = build_replica_model(study, data, args.data, device, dtype)
    else:
        model = build_model(study, data, device, dtype, shard)
    checkpoint = run_dir / CHECKPOINT_NAME
    if not shard.is_main:
        start = load_checkpoint(checkpoint, model) if args.resume else 0
        train_worker(model, study, data, device, dtype, start)
        return run_dir
    layout = layout_for(study, model, data)
    if args.resume:
        start = load_checkpoint(checkpoint, model)
        log = RunLog.resume(run_dir / LOG_NAME, layout, start)
    else:
        attrs = {"asymnet_version": __version__, "torch_version": str(torch.__version__), "seed": study.seed,
                 "device": str(device), "study_yaml": text, "study_resolved": _resolved_yaml(study),
                 "dtype": study.training.dtype, "noise_scaling": study.operator.noise_scaling,
                 "n_heating_steps": single_models(model)[0].n_heating, "replicas": study.replicas,
                 "world_size": shard.world_size, "created": datetime.datetime.now().isoformat(),
                 "sampling_precision": sampling_precision(study, device)}
        if data.image_shape is not None:
            attrs["image_shape"] = list(data.image_shape)
        made = not run_dir.exists()
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            log = RunLog.create(run_dir / LOG_NAME, layout, attrs)
        except BaseException:
            if made and not any(run_dir.iterdir()):
                run_dir.rmdir()
            raise
        start = 0
        save_checkpoint(checkpoint, model, 0)
    scorer = None
    if has_classifier(data):
        scorer = ImageScorer.build(mnist_classifier(args.data, args.quiet), data, study.evaluation.n_samples)
    with log:
        members = members_of(log, model, study, data)
        if study.training.learning == "local" and start == 0:
            log.write_samples("learning_window", torch.stack([WINDOW_LAGS.double(),
                                                              plasticity.learning_window(WINDOW_LAGS, order="cooling"),
                                                              plasticity.learning_window(WINDOW_LAGS, order="heating")], 1))
        if scorer is not None and start == 0:
            real = data.test[: study.evaluation.n_samples].float() / 255.0  # the scale a reader compares with
            for name, value in scorer.figures(real, "test_").items():
                log.write_eval(name, value)
        if data.rescaling is not None and start == 0:
            for member, single in zip(members, single_models(model)):
                # the baseline of an untrained network: its plain cooling (corrector steps only cost time there)
                plain = replace_in(replace_in(member.study, "evaluation.corrector_steps", 0),
                                   "evaluation.corrector_bands", [])
                untrained = generate_visible(single, plain, member.data, device)
                member.log.write_samples("untrained", untrained)
                if scorer is not None:
                    for name, value in scorer.figures(untrained, "untrained_").items():
                        member.log.write_eval(name, value)
        train(members, log, model, study, data, device, dtype, start, checkpoint, args.quiet)
        for member, single in zip(members, single_models(model)):
            final_evaluation(member.log, single, member.study, member.data, device, dtype, scorer)
        log.set_status("finished")
    plots.plot_all(run_dir / LOG_NAME, run_dir, density=_density(data))
    for r in range(study.replicas if study.replicas > 1 else 0):  # over the data's histogram: a density grid costs 10 s
        plots.plot_all(run_dir / LOG_NAME, run_dir / f"replica_{r}", replica=r)
    if study.evaluation.long_run_steps:
        measure_long_run(run_dir, study.evaluation.long_run_steps, study.evaluation.long_run_chains or None, args.data,
                         args.device, study.seed, args.quiet)
    if study.evaluation.inpaint_masks:
        for mask in study.evaluation.inpaint_masks:
            measure_inpainting(run_dir, mask, study.evaluation.inpaint_images, args.data, args.device, study.seed,
                               args.quiet)
    return run_dir


def train_worker(model: Model, study: Study, data: Dataset, device, dtype, start: int) -> None:
    """The training loop of a data-parallel process other than rank 0: the same steps as rank 0's
    (train_members: the same learning-rate schedule, and with_terms on rank 0's schedule so the
    all-reduces match), no log, no checkpoint, no evaluation."""
    every = study.logging
    for step in range(start + 1, study.training.steps + 1):
        train_members(model, study, data, device, dtype, step, with_terms=step % every.metrics_every == 0)
        if step % every.checkpoint_every == 0:
            check_finite(model)  # rank 0 stops here too, so no process is left waiting for it


def train(members: list[Member], log: RunLog, model: Model | ReplicaModel, study: Study, data: Dataset, device,
          dtype, start: int, checkpoint: Path, quiet: bool) -> None:
    """The training loop: one Algorithm 1 minibatch per step (for every member: the network, or each
    replica), logging and checkpointing on schedule. The bar shows steps/s and training images/s
    (the global batch, over every process of a data-parallel run)."""
    every = study.logging
    windows: list[dict[str, list[float]]] = [{} for _ in members]
    clock = time.perf_counter()
    last_time, last_step = clock, start
    bar = tqdm(range(start + 1, study.training.steps + 1), initial=start, total=study.training.steps,
               disable=quiet, unit="step", dynamic_ncols=True)
    for step in bar:
        try:
            rows = train_members(model, study, data, device, dtype, step, with_terms=step % every.metrics_every == 0,
                                 gradient_check=step % every.eval_every == 0)
        except TrainingDiverged as error:
            raise diverged(step, error, checkpoint) from None
        for member, figures in zip(members, rows):  # a figure of this step alone, not a window's mean
            for name in ("rule_gradient_cosine", "pathway_gradient_cosine"):
                if name in figures:
                    member.log.append(name, step, figures.pop(name))
        for window, figures in zip(windows, rows):
            for name, value in figures.items():
                window.setdefault(name, []).append(value)
        if step % every.metrics_every == 0 or step == study.training.steps:
            for member, window in zip(members, windows):
                for name, values in window.items():
                    member.log.append(name, step, sum(values) / len(values))
                window.clear()
            now = time.perf_counter()
            log.append("wall_time", step, now - clock)
            images_per_s = (step - last_step) * study.training.batch_size * len(members) / max(now - last_time, 1e-9)
            last_time, last_step = now, step
            bar.set_postfix(loss=f"{sum(figures['loss'] for figures in rows) / len(rows):.3f}",
                            img_s=f"{images_per_s:,.0f}")
        if step % every.weights_every == 0 or step == study.training.steps:
            for member, single in zip(members, single_models(model)):
                log_symmetry(member.log, single, member.data, dtype, step, feedback=learns_hidden_locally(study),
                             pathway=learns_pathway_locally(study))
        if step % every.eval_every == 0:
            for member, single in zip(members, single_models(model)):
                member.log.append("bound", step, held_out_bound(single, member.study, member.data, device, dtype, step))
                for name, value in detailed_balance_figures(single, member.study, member.data, device, step).items():
                    member.log.append(name, step, value)
        if step % every.checkpoint_every == 0 or step == study.training.steps:
            log.flush()
            try:
                save_checkpoint(checkpoint, model, step)
            except TrainingDiverged as error:
                raise diverged(step, error, checkpoint) from None
        elif step % every.metrics_every == 0:
            log.flush()
    bar.close()


def diverged(step: int, error: TrainingDiverged, checkpoint: Path) -> TrainingDiverged:
    """The error a user reads when training diverged at ``step``: where, why, what was kept, the fix."""
    return TrainingDiverged(f"training diverged at step {step}: {error}; the last good checkpoint is kept in "
                            f"{checkpoint}. Lower training.learning_rate or operator.alpha and start again; the log "
                            "stays readable")


def _resolved_yaml(study: Study) -> str:
    return yaml.safe_dump(study_to_dict(study), sort_keys=False)


def _density(data: Dataset):
    if data.toy is None:
        return None
    return lambda points: data.toy.log_density(torch.as_tensor(points, dtype=torch.float64)).exp().numpy()


def main(argv=None) -> int:
    args = parse_args(argv)

    def work() -> None:
        run_dir = run(args)
        if not args.quiet:
            print(f"run written to {run_dir}")

    return run_command("asymnet.run", work)


if __name__ == "__main__":
    raise SystemExit(main())

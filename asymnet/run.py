"""``python -m asymnet.run STUDY.yaml``: build, train with Variational Walkback, evaluate, log, plot.

This module wires the pure math (operators, networks, schedule, walkback, plasticity, metrics) to
the study file (study.py), the data (data/), the HDF5 log (runlog.py) and the figures (plots.py).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from asymnet import __version__, distributed, plasticity, plots, readout, replicas, schedule, walkback
from asymnet.classifier import WEIGHTS_NAME, load_classifier, save_classifier, to_unit_interval, train_classifier
from asymnet.data import DataError, Dataset, find_data_dir, load_dataset
from asymnet.data.mnist import bits_per_dim, load_mnist
from asymnet.measure import detailed_balance
from asymnet.metrics import quality
from asymnet.metrics.symmetry import jacobian_symmetry, weight_symmetry
from asymnet.distributed import Shard
from asymnet.networks import MLPNetwork, RecurrentNetwork, UNetNetwork
from asymnet.operators import BernoulliOperator, Drive, GaussianOperator, Operator
from asymnet.runlog import LOG_NAME, LogError, LogLayout, RunLog, open_log
from asymnet.study import Study, StudyError, load_study, parse_study, replace_in, replica_study, study_to_dict
from asymnet.trained import CHECKPOINT_NAME, RunError, check_mask, pick_device

WINDOW_LAGS = torch.arange(-20, 21)


class TrainingDiverged(Exception):
    """The loss or the weights stopped being finite."""


@dataclass
class Model:
    """Everything that learns or carries state across training steps. ``generator`` draws the minibatch
    rows and dequantisation (CPU); ``noise_generator`` the heating noise (the same generator on CPU, one
    on the GPU for CUDA). ``shard``: this process's share of each global batch (asymnet.distributed)."""

    network: torch.nn.Module
    operator: Operator
    p_star: walkback.PStar
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    n_heating: int
    noise_generator: torch.Generator | None = None
    shard: Shard = Shard()
    scaler: "torch.amp.GradScaler | None" = None

    def __post_init__(self):
        if self.noise_generator is None:
            self.noise_generator = self.generator


def build_network(study: Study, data: Dataset, generator: torch.Generator) -> torch.nn.Module:
    """The study's network F, its weights drawn from ``generator``."""
    net_cfg, op_cfg = study.network, study.operator
    if net_cfg.kind == "recurrent":
        return RecurrentNetwork(data.n_visible, net_cfg.n_hidden, net_cfg.phi, op_cfg.sigma, op_cfg.learn_sigma,
                                net_cfg.init_scale, generator, op_cfg.sigma_hidden or None,
                                net_cfg.temperature_conditioned,
                                None if net_cfg.phi_visible == "same" else net_cfg.phi_visible,
                                net_cfg.hidden_units, net_cfg.hidden_gain, net_cfg.hidden_bias,
                                net_cfg.hidden_temperature_gain)
    if net_cfg.kind == "unet":
        if data.image_shape is None:
            raise StudyError(f"network.kind: unet needs an image dataset (mnist, cifar10, svhn, celeba64), "
                             f"got data.name: {study.data.name}; use network.kind: mlp or recurrent for 2-D data")
        try:
            return UNetNetwork(data.image_shape, net_cfg.unet_channels, tuple(net_cfg.unet_channel_mults),
                               net_cfg.unet_res_blocks, op_cfg.sigma, op_cfg.learn_sigma,
                               net_cfg.temperature_conditioned, generator)
        except ValueError as error:
            raise StudyError(f"network.unet_channel_mults = {list(net_cfg.unet_channel_mults)}: {error}") from None
    return MLPNetwork(data.n_visible, net_cfg.mlp_width, net_cfg.mlp_depth, op_cfg.sigma, op_cfg.learn_sigma,
                      net_cfg.temperature_conditioned, generator)


def build_model(study: Study, data: Dataset, device: torch.device, dtype: torch.dtype,
                shard: Shard = Shard()) -> Model:
    """Network, operator, p*, optimizer and the training RNG, all from the study's seed (so every process
    of a data-parallel run builds the same model)."""
    generator = torch.Generator(device="cpu").manual_seed(study.seed)
    op_cfg = study.operator
    network = build_network(study, data, generator).to(device=device, dtype=dtype)
    if op_cfg.family == "gaussian":
        operator = GaussianOperator(op_cfg.alpha, op_cfg.noise_scaling)
    else:
        operator = BernoulliOperator(op_cfg.alpha)
    train_points = data.batch(data.train[:10000], generator, torch.float64)
    sigma_max = study.walkback.sigma_max or train_points.var(0).mean().sqrt().item()
    if study.walkback.T_max:
        T_max = study.walkback.T_max
    elif op_cfg.family == "gaussian":
        T_max = schedule.max_temperature(sigma_max, op_cfg.sigma, op_cfg.noise_scaling)
    else:
        T_max = 16.0
    training = study.training
    if training.optimizer == "least_squares":
        optimizer = readout.LeastSquaresReadout(network, operator, training.learning_rate, training.ls_step,
                                                training.ls_memory, training.ls_damping)
    else:
        optimizer = torch.optim.Adam(network.parameters(), lr=training.learning_rate)
    p_star = walkback.PStar(network.n_units).to(device=device, dtype=dtype)
    noise_generator = None
    if device.type == "cuda":
        noise_generator = torch.Generator(device=device).manual_seed(study.seed)
    scaler = torch.amp.GradScaler(device.type) if study.training.autocast == "fp16" else None
    return Model(network, operator, p_star, optimizer, generator,
                 schedule.n_heating_steps(T_max, study.walkback.heating_factor), noise_generator, shard, scaler)


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


def train_step(model: Model, study: Study, data: Dataset, device, dtype, with_terms: bool = True) -> dict[str, float]:
    """One minibatch of Algorithm 1: heat, score the walk back, update by autograd or the local rule
    (with the sizes of its STDP and equal-time terms when ``with_terms``), plus walkback.score_anchor's term.
    In a data-parallel run this process takes its rows of the global batch and the gradients are averaged
    over the processes."""
    net, gen, noise_gen, shard = model.network, model.generator, model.noise_generator, model.shard
    rows = data.train[torch.randint(0, len(data.train), (study.training.batch_size,), generator=gen)]
    clean = data.batch(rows, gen, dtype)
    x = shard.take(walkback.noisy_starts(clean, study.walkback.start_noise, gen, study.walkback.start_noise_fraction))
    x = (x.pin_memory() if device.type == "cuda" else x).to(device, non_blocking=True)
    anchor = None  # (start, target) of walkback.score_anchor's term, drawn from the clean global batch
    if study.walkback.score_anchor:
        std = model.operator.std(Drive(None, net.sigma.detach().cpu().to(dtype)), 1.0)
        pairs = walkback.score_anchor_pairs(clean, std, study.walkback.score_anchor_noise, gen)
        if study.walkback.score_anchor_bandwidth:
            start = walkback.widen_starts(pairs[0], clean, study.walkback.score_anchor_wide,
                                          study.walkback.score_anchor_wide_noise, gen)
            pairs = (start, walkback.kernel_langevin_step(start, data.train.to(dtype),
                                                            study.walkback.score_anchor_bandwidth, std))
        anchor = tuple(shard.take(a).to(device) for a in pairs)
    n_extra = schedule.sample_extra_steps(study.walkback.n_extra_max, gen)
    temperatures = schedule.heating_temperatures(n_extra, model.n_heating, study.walkback.heating_factor)
    autocast = torch.autocast(device.type, AUTOCAST_DTYPES.get(study.training.autocast, torch.bfloat16),
                              enabled=study.training.autocast != "none")
    with autocast:
        s0 = walkback.settle_hidden(net, model.operator, x, study.walkback.settle_steps, noise_gen, shard)
        states, drives = walkback.heating_trajectory_with_drives(net, model.operator, s0, temperatures, noise_gen,
                                                                 shard)
    model.optimizer.zero_grad(set_to_none=False)
    if isinstance(model.optimizer, readout.LeastSquaresReadout):
        terms = [readout.regression(net, model.operator, states, temperatures, study.walkback.step_weight_power)]
        if anchor:
            terms.append(readout.regression(net, model.operator, [anchor[1], anchor[0]], [1.0],
                                            weight=study.walkback.score_anchor))
        model.optimizer.accumulate(terms, shard)
    if study.training.learning == "local":
        update = plasticity.trajectory_update(net, model.operator, states, temperatures, drives, with_terms,
                                                study.walkback.step_weight_power)
        if anchor:
            start, target = anchor
            update = plasticity.add_anchor(update, plasticity.trajectory_update(
                net, model.operator, [target, start], [1.0], None, False), study.walkback.score_anchor)
        plasticity.write_gradients(net, update)
        loss = update.loss.detach()
        terms = [update.temporal_norm, update.equal_time_norm] if with_terms else []
    else:
        with autocast:
            loss = walkback.walkback_losses(net, model.operator, states, temperatures,
                                           study.walkback.step_weight_power).sum()
            total = loss
            if anchor:
                total = loss + study.walkback.score_anchor * walkback.score_anchor_loss(net, model.operator, *anchor)
        (model.scaler.scale(total) if model.scaler else total).backward()
        loss, terms = loss.detach(), []
    reported = torch.cat([loss.reshape(1).to(dtype), torch.tensor(terms, dtype=dtype, device=loss.device)])
    shard.average_([p.grad for p in net.parameters() if p.grad is not None] + [reported])
    if not torch.isfinite(reported[0]):
        raise TrainingDiverged(f"the walkback loss became {reported[0].item()}")
    if model.scaler:
        model.scaler.step(model.optimizer)
        model.scaler.update()
    else:
        model.optimizer.step()
    model.p_star.update(states[-1], study.walkback.p_star_momentum, shard)
    figures = {"loss": reported[0].item()}
    if terms:
        figures.update(stdp_temporal=reported[1].item(), stdp_equal_time=reported[2].item())
    return figures


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


@dataclass
class ReplicaModel:
    """``replicas: R`` networks trained as one batched program (asymnet.replicas): stacked weights, p* and
    Adam moments, and replica r's generator, seeded and consumed as the single run of replica_study(study, r)
    would (build_model draws its initial weights from it). ``singles[r]`` is that single run's Model, which
    evaluation and logging read after :func:`single_models` copied replica r's weights and p* into it."""

    network: replicas.StackedRecurrentNetwork
    operator: Operator
    p_star: replicas.StackedPStar
    optimizer: replicas.StackedAdam
    generators: list[torch.Generator]
    studies: list[Study]
    datasets: list[Dataset]
    singles: list[Model]


def build_replica_model(study: Study, data: Dataset, data_dir: str | None, device, dtype) -> ReplicaModel:
    """Each replica built as its single run (build_model), then stacked. A toy dataset is drawn from the seed,
    so a replica with another seed gets its own; MNIST is one dataset for all."""
    studies = [replica_study(study, r) for r in range(study.replicas)]
    datasets = [data if data.toy is None or single.seed == study.seed else load_data(single, data_dir)
                for single in studies]
    singles = [build_model(single, single_data, device, dtype) for single, single_data in zip(studies, datasets)]
    network = replicas.StackedRecurrentNetwork.from_networks([single.network for single in singles])
    optimizer = replicas.StackedAdam(dict(network.named_parameters()), [s.training.learning_rate for s in studies])
    p_star = replicas.StackedPStar(study.replicas, network.n_units).to(device=device, dtype=dtype)
    return ReplicaModel(network, singles[0].operator, p_star, optimizer, [single.generator for single in singles],
                        studies, datasets, singles)


def replica_train_step(model: ReplicaModel, device, dtype, step: int, with_terms: bool) -> list[dict[str, float]]:
    """train_step for all replicas at once: each draws its minibatch, n and noise from its own generator in
    the single run's order; the chain, the update and Adam run batched. One dict of figures per replica."""
    net, study = model.network, model.studies[0]  # the keys a sweep cannot change are read from replica 0
    x, temperatures = [], []
    for single, data, gen in zip(model.singles, model.datasets, model.generators):
        rows = data.train[torch.randint(0, len(data.train), (study.training.batch_size,), generator=gen)]
        x.append(walkback.noisy_starts(data.batch(rows, gen, dtype), study.walkback.start_noise, gen,
                                       study.walkback.start_noise_fraction).to(device))
        n_extra = schedule.sample_extra_steps(study.walkback.n_extra_max, gen)
        temperatures.append(schedule.heating_temperatures(n_extra, single.n_heating, study.walkback.heating_factor))
    padded = replicas.Schedule.pad(temperatures, dtype, device)
    generators = model.generators if device.type == "cpu" else None
    s0 = replicas.settle_hidden(net, model.operator, torch.stack(x), study.walkback.settle_steps, generators)
    trajectory = replicas.heating_trajectory(net, model.operator, s0, padded, generators)
    states = trajectory.states
    model.optimizer.zero_grad()
    if study.training.learning == "local":
        update = replicas.trajectory_update(net, model.operator, trajectory, padded, with_terms,
                                             study.walkback.step_weight_power)
        replicas.write_gradients(net, update)
        loss = update.loss
        terms = {"stdp_temporal": update.temporal_norm.tolist(), "stdp_equal_time": update.equal_time_norm.tolist()}
    else:
        loss = replicas.walkback_losses(net, model.operator, states, padded, study.walkback.step_weight_power)
        loss.sum().backward()
        terms = {}
    loss = loss.detach().tolist()
    for r, value in enumerate(loss):
        if not math.isfinite(value):
            raise TrainingDiverged(f"the walkback loss of replica {r} became {value}")
    model.optimizer.lr = [learning_rate(single, step) for single in model.studies]
    model.optimizer.step()
    model.p_star.update(states[-1], study.walkback.p_star_momentum)
    return [{"loss": value, **({name: terms[name][r] for name in terms} if with_terms else {})}
            for r, value in enumerate(loss)]


def train_members(model: Model | ReplicaModel, study: Study, data: Dataset, device, dtype, step: int,
                  with_terms: bool) -> list[dict[str, float]]:
    """One training step of every network of the run (the single one, or all replicas): figures of each."""
    if isinstance(model, ReplicaModel):
        return replica_train_step(model, device, dtype, step, with_terms)
    set_learning_rate(model.optimizer, study, step)
    return [train_step(model, study, data, device, dtype, with_terms)]


def single_models(model: Model | ReplicaModel) -> list[Model]:
    """The run's networks as single-run Models, for evaluation and logging: the model itself, or every
    replica's weights and p* copied into its single run's Model."""
    if isinstance(model, Model):
        return [model]
    for r, single in enumerate(model.singles):
        model.network.copy_replica(r, single.network)
        model.p_star.copy_replica(r, single.p_star)
    return model.singles


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


def _on(generator: torch.Generator, device: torch.device) -> torch.Generator | None:
    """The training generator where it can drive sampling (CPU); None (global CUDA RNG) on GPU."""
    return generator if device.type == "cpu" else None


def eval_temperatures(model: Model, study: Study) -> list[float]:
    """The fixed schedule of generation and of the bound: n = n_extra_max steps at T = 1, then heating."""
    return schedule.heating_temperatures(study.walkback.n_extra_max, model.n_heating, study.walkback.heating_factor)


def generation_temperatures(model: Model, study: Study) -> list[float]:
    """The cooling schedule of generation: evaluation.extra_cooling_steps more T = 1 steps (they run last)
    before eval_temperatures."""
    return [1.0] * study.evaluation.extra_cooling_steps + eval_temperatures(model, study)


def held_out_bound(model: Model, study: Study, data: Dataset, device, dtype, step: int) -> float:
    """Mean eq. 5 bound on the first n_bound held-out examples, nats per example (fresh RNG per step)."""
    gen = torch.Generator().manual_seed(study.seed * 1_000_003 + step)
    x = data.batch(data.test[: study.evaluation.n_bound], gen, dtype).to(device)
    s0 = walkback.settle_hidden(model.network, model.operator, x, study.walkback.settle_steps, _on(gen, device))
    bound = walkback.variational_bound(model.network, model.operator, model.p_star, s0,
                                       eval_temperatures(model, study), _on(gen, device))
    return bound.mean().item()


def detailed_balance_figures(model: Model, study: Study, data: Dataset, device, step: int) -> dict[str, float]:
    """EP and relative irreversibility of the T = 1 chain (asymnet.measure's convention) from a fixed
    evaluation seed per step, beside the symmetry figures; empty when evaluation.ep_chains is 0."""
    cfg = study.evaluation
    if cfg.ep_chains == 0:
        return {}
    gen = torch.Generator().manual_seed(study.seed + 7907 + step)
    figures = detailed_balance(model, study, data, device, cfg.ep_chains, cfg.ep_steps, cfg.ep_burn_in, gen, 10)
    return {name: figures[name] for name in ("ep", "ep_stderr", "relative_irreversibility")}


def log_symmetry(log: RunLog, model: Model, data: Dataset, dtype, step: int) -> None:
    """cos(W, W^T) and the norms of W's symmetric and antisymmetric parts, with a W snapshot; for an
    MLP the same figures of its Jacobian dF_mu/ds at 64 held-out points, from 16 random probes each."""
    network = model.network
    if isinstance(network, RecurrentNetwork):
        figures = weight_symmetry(network.W.detach())
        log.snapshot("W", step, network.W.detach())
    else:
        gen = torch.Generator().manual_seed(step)
        points = data.batch(data.test[:64], gen, dtype).to(next(network.parameters()).device)
        figures = jacobian_symmetry(lambda s: network(s, 1.0).mu, points, 16, gen)
    log.append("symmetry_cosine", step, figures.cosine)
    log.append("symmetric_norm", step, figures.symmetric_norm)
    log.append("antisymmetric_norm", step, figures.antisymmetric_norm)


def toy_mmd_null(study: Study, data: Dataset, reference: torch.Tensor) -> torch.Tensor:
    """The end of training's exact draws of a toy: MMD^2 (quality.NULL_DRAWS,) of that many exact draws of
    len(reference) points against ``reference`` (the test points the samples are scored against), from the
    study's seed + 7877 stream. Their mean is ``mmd_baseline``; the samples' rank among them ``mmd_p_value``."""
    gen = torch.Generator().manual_seed(study.seed + 7877)
    return quality.toy_null(data.toy, reference, len(reference), quality.NULL_DRAWS, gen)["mmd"]


def toy_mmd_figures(study: Study, data: Dataset, reference: torch.Tensor, mmd: float | None) -> dict[str, float]:
    """The end of training's ``mmd_baseline`` of a toy, the mean of :func:`toy_mmd_null`, and, given the
    samples' ``mmd``, its ``mmd_p_value``: one draw of the samples scatters widely
    (benchmarks/cooling_spread.py), so its rank among the exact draws says what the ratio cannot."""
    null = toy_mmd_null(study, data, reference)
    figures = {"mmd_baseline": null.mean().item()}
    if mmd is not None:
        figures["mmd_p_value"] = quality.null_p_value(mmd, null)
    return figures


def final_evaluation(log: RunLog, model: Model, study: Study, data: Dataset, device, dtype,
                     scorer: "ImageScorer | None" = None) -> dict[str, float]:
    """Samples, the held-out bound, and the sample-quality figures of the dataset."""
    samples = generate_visible(model, study, data, device)
    n = len(samples)
    log.write_samples("final", samples)
    figures = {"bound": held_out_bound(model, study, data, device, dtype, study.training.steps)}
    if data.toy is not None:
        reference = data.test[:n].to(torch.float64)
        log.write_samples("data", reference)
        figures["mmd"] = quality.mmd2_rbf(samples[: len(reference)], reference)
        figures.update(toy_mmd_figures(study, data, reference, figures["mmd"]))
        figures["sample_log_density"] = data.toy.log_density(samples.to(torch.float64)).mean().item()
        figures["data_log_density"] = data.toy.log_density(reference).mean().item()
    if data.rescaling is not None and model.network.n_units == data.n_visible:
        # with (slow) hidden units the bound is on log p(x, h_0), not a bits/dim figure of x
        figures["bound_bits_per_dim"] = bits_per_dim(torch.tensor([figures["bound"]]), data.n_visible,
                                                     data.rescaling).item()
    if scorer is not None:
        figures.update(scorer.figures(samples))
    for name, value in figures.items():
        log.write_eval(name, value)
    return figures


IMAGE_FIGURES = ("confident_fraction", "label_entropy", "frechet_distance")


def generate_visible(model: Model, study: Study, data: Dataset, device) -> torch.Tensor:
    """n_samples generated visible states (n, n_visible) by cooling from p*, from a fixed evaluation seed."""
    gen = torch.Generator().manual_seed(study.seed + 7919)
    states = walkback.generate(model.network, model.operator, model.p_star, generation_temperatures(model, study),
                               study.evaluation.n_samples, _on(gen, device), final_mean=study.evaluation.final_mean)
    return states[:, : data.n_visible].cpu()


@dataclass(frozen=True)
class ImageScorer:
    """The MNIST classifier and the features of the reference images (the test images after the first
    n_samples), computed once per run."""

    classifier: torch.nn.Module
    reference_features: torch.Tensor

    @classmethod
    def build(cls, classifier: torch.nn.Module, data: Dataset, n_samples: int) -> "ImageScorer":
        return cls(classifier, classifier.features(data.test[n_samples:].float() / 255.0))

    def figures(self, images: torch.Tensor, prefix: str = "") -> dict[str, float]:
        """Classifier figures of images (n, 784) in [0, 1] (clamped) against the reference images."""
        scores = quality.classifier_scores(self.classifier, images.clamp(0, 1).float(), self.reference_features)
        return {prefix + name: scores[name] for name in IMAGE_FIGURES}


def mnist_classifier(data_dir: str | None, quiet: bool):
    """The cached MNIST classifier (./data, then the data folder); when absent, trained on the data
    folder's training set and cached in ./data (never in a shared data folder)."""
    folders = [Path("data"), find_data_dir(data_dir)]
    for folder in folders:
        if (folder / WEIGHTS_NAME).is_file():
            return load_classifier(folder)
    images, labels = load_mnist(folders[1], "train")
    model = train_classifier(to_unit_interval(images), torch.from_numpy(labels), progress=not quiet)
    save_classifier(model, folders[0] / WEIGHTS_NAME)
    return model


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


def save_checkpoint(path: Path, model: Model | ReplicaModel, step: int) -> None:
    """Model, optimizer, p*, RNG state and step, written atomically (temp file, fsync, rename); with
    replicas the stacked tensors and every replica's generator state (R, state size)."""
    check_finite(model)
    state = {
        "step": step,
        "network": model.network.state_dict(),
        "optimizer": model.optimizer.state_dict(),
        "p_star": model.p_star.state_dict(),
        "generator": model.generator.get_state() if isinstance(model, Model)
        else torch.stack([gen.get_state() for gen in model.generators]),
    }
    if isinstance(model, Model) and model.noise_generator is not model.generator:  # the GPU's heating noise
        state["noise_generator"] = model.noise_generator.get_state()
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path, model: Model | ReplicaModel) -> int:
    """Restore what save_checkpoint wrote (no pickle: weights_only=True); returns the step."""
    if not path.exists():
        raise RunError(f"no checkpoint at {path}: this run stopped before its first checkpoint; start it again "
                       "without --resume in a new --out directory")
    state = torch.load(path, weights_only=True, map_location="cpu")
    model.network.load_state_dict(state["network"])
    model.optimizer.load_state_dict(state["optimizer"])
    model.p_star.load_state_dict(state["p_star"])
    if isinstance(model, Model):
        model.generator.set_state(state["generator"])
        if model.noise_generator is not model.generator and "noise_generator" in state:
            model.noise_generator.set_state(state["noise_generator"])
    else:
        for gen, row in zip(model.generators, state["generator"]):
            gen.set_state(row.clone())  # a row of the stack is a view, and set_state wants a tensor of its own
    return int(state["step"])


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
        return parse_study(text, source=str(run_dir / LOG_NAME)), text, run_dir
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


def load_data(study: Study, data_dir: str | None) -> Dataset:
    """The study's dataset; a toy's points are drawn from its seed."""
    data_gen = torch.Generator().manual_seed(study.seed + 104729)
    return load_dataset(study.data.name, study.data.n_train, study.data.n_test, data_dir, data_gen,
                        study.data.binarize, study.data.download)


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
    if study.training.learning == "local":
        plasticity.check_supported(study)
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
                 "world_size": shard.world_size, "created": datetime.datetime.now().isoformat()}
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
                untrained = generate_visible(single, member.study, member.data, device)
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
        from asymnet.sample import measure_long_run

        measure_long_run(run_dir, study.evaluation.long_run_steps, None, args.data, args.device, study.seed, args.quiet)
    if study.evaluation.inpaint_masks:
        from asymnet.inpaint import measure_inpainting

        for mask in study.evaluation.inpaint_masks:
            measure_inpainting(run_dir, mask, study.evaluation.inpaint_images, args.data, args.device, study.seed,
                               args.quiet)
    return run_dir


def has_classifier(data: Dataset) -> bool:
    """Whether the classifier figures apply: the MNIST classifier scores MNIST-shaped images only."""
    return data.name == "mnist"


def check_finite(model: Model | ReplicaModel) -> None:
    for value in model.network.state_dict().values():
        if not torch.isfinite(value).all():
            raise TrainingDiverged("the weights are no longer finite")


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
            rows = train_members(model, study, data, device, dtype, step, with_terms=step % every.metrics_every == 0)
        except TrainingDiverged as error:
            raise TrainingDiverged(f"step {step}: {error}; the last good checkpoint is kept in {checkpoint}") from None
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
                log_symmetry(member.log, single, member.data, dtype, step)
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
                raise TrainingDiverged(f"step {step}: {error}; the last good checkpoint is kept in {checkpoint}")
        elif step % every.metrics_every == 0:
            log.flush()
    bar.close()


def _resolved_yaml(study: Study) -> str:
    return yaml.safe_dump(study_to_dict(study), sort_keys=False)


def _density(data: Dataset):
    if data.toy is None:
        return None
    return lambda points: data.toy.log_density(torch.as_tensor(points, dtype=torch.float64)).exp().numpy()


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run_dir = run(args)
    except (StudyError, DataError, LogError, RunError, plasticity.PlasticityError,
            distributed.DistributedError) as error:
        print(f"asymnet.run: error: {error}", file=sys.stderr)
        return 2
    except TrainingDiverged as error:
        print(f"asymnet.run: error: training diverged at {error}. Lower training.learning_rate or "
              "operator.alpha and start again; the log stays readable.", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"run written to {run_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

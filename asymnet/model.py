"""A model built from a study, its checkpoint, and a finished run loaded back from its directory.

:func:`build_model` turns a :class:`~asymnet.study.Study` and its dataset into the network F, the
operator, p*, the optimizer and the training generator, all from the study's seed (so every process of a
data-parallel run builds the same model); :func:`build_replica_model` does it for ``replicas: R`` (the same
network with a leading replica axis, and :class:`ReplicaAdam`, Adam with one learning rate per replica).
:func:`save_checkpoint` / :func:`load_checkpoint` write and read them (tensors only, atomically);
:func:`load_run` rebuilds a finished run for the measurement commands. The temperatures of evaluation and
generation are here too, since every command that samples a trained model uses them.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from asymnet import readout, schedule, walkback
from asymnet.data import Dataset, load_dataset
from asymnet.distributed import Shard
from asymnet.errors import RunError, TrainingDiverged
from asymnet.networks import MLPNetwork, RecurrentNetwork, UNetNetwork
from asymnet.networks.pathway import ConvPathway
from asymnet.operators import BernoulliOperator, GaussianOperator, Operator
from asymnet.runlog import LOG_NAME, LogError, read_summary
from asymnet.study import Study, StudyError, parse_study, replica_study


CHECKPOINT_NAME = "checkpoint.pt"


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
    heating: walkback.NoiseHeating | None = None  # walkback.heating_kernel: noise; None: the model heats
    contrast_chains: torch.Tensor | None = None  # walkback.contrast_weight's persistent T = 1 chains (asymnet.contrast)

    def __post_init__(self):
        if self.noise_generator is None:
            self.noise_generator = self.generator


def noise_exponent(study: Study) -> float:
    """q of the heating's step variances tau = sigma_0^2 T^q: 1 for operator.noise_scaling sqrt_T, 2 for T."""
    return 1.0 if study.operator.noise_scaling == "sqrt_T" else 2.0


def build_network(study: Study, data: Dataset, generator: torch.Generator) -> torch.nn.Module:
    """The study's network F, its weights drawn from ``generator`` (a random feedback matrix B of learned fast
    hidden units last, so the other weights are those the same study with fixed hidden units draws)."""
    net_cfg, op_cfg = study.network, study.operator
    leak = ((study.walkback.heating_factor, noise_exponent(study))
            if net_cfg.posterior_leak else None)  # c(T) of noise heating's schedule (networks.temperature)
    if net_cfg.kind == "recurrent":
        network = RecurrentNetwork(data.n_visible, net_cfg.n_hidden, net_cfg.phi, op_cfg.sigma, op_cfg.learn_sigma,
                                net_cfg.init_scale, generator, op_cfg.sigma_hidden or None,
                                net_cfg.temperature_conditioned,
                                None if net_cfg.phi_visible == "same" else net_cfg.phi_visible,
                                net_cfg.hidden_units, net_cfg.hidden_gain, net_cfg.hidden_bias,
                                net_cfg.hidden_temperature_gain, hidden_learning=net_cfg.hidden_learning,
                                feedback=net_cfg.feedback if net_cfg.hidden_learning == "learned" else "transpose",
                                feedback_scale=net_cfg.feedback_scale,
                                posterior_leak=leak,
                                receptive_field=(net_cfg.hidden_receptive_field, *data.image_shape)
                                if net_cfg.hidden_receptive_field else None)
        if net_cfg.conv_channels:  # drawn after the network's own weights
            try:
                network.attach_pathway(ConvPathway(data.image_shape, tuple(net_cfg.conv_channels), net_cfg.phi,
                                                   net_cfg.conv_gain, net_cfg.hidden_temperature_gain,
                                                   net_cfg.feedback if study.training.learning == "local" else "transpose",
                                                   net_cfg.feedback_scale, generator,
                                                   pathway_input_gain(study, data) if net_cfg.conv_input_gain else None,
                                                   net_cfg.conv_middle, net_cfg.conv_residual,
                                                   net_cfg.conv_groups))
            except ValueError as error:
                raise StudyError(f"network.conv_channels = {list(net_cfg.conv_channels)}: {error}") from None
        return network
    if net_cfg.kind == "unet":
        if data.image_shape is None:
            raise StudyError(f"network.kind: unet needs an image dataset (mnist, cifar10, svhn, celeba64), "
                             f"got data.name: {study.data.name}; use network.kind: mlp or recurrent for 2-D data")
        try:
            return UNetNetwork(data.image_shape, net_cfg.unet_channels, tuple(net_cfg.unet_channel_mults),
                               net_cfg.unet_res_blocks, op_cfg.sigma, op_cfg.learn_sigma,
                               net_cfg.temperature_conditioned, generator, leak)
        except ValueError as error:
            raise StudyError(f"network.unet_channel_mults = {list(net_cfg.unet_channel_mults)}: {error}") from None
    return MLPNetwork(data.n_visible, net_cfg.mlp_width, net_cfg.mlp_depth, op_cfg.sigma, op_cfg.learn_sigma,
                      net_cfg.temperature_conditioned, generator)


def pathway_input_gain(study: Study, data: Dataset) -> tuple[float, float, float, float]:
    """(var, sigma_0, f, q) of network.conv_input_gain: var the per-pixel variance of (up to) 10,000 training
    images, dequantised by a stream of its own (the study's generator draws the weights), averaged over
    pixels; sigma_0 operator.sigma; f the heating factor; q 1 for noise_scaling sqrt_T, 2 for T."""
    images = data.batch(data.train[:10000], torch.Generator().manual_seed(0), torch.float64)
    return images.var(0).mean().item(), study.operator.sigma, study.walkback.heating_factor, noise_exponent(study)


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
                 schedule.n_heating_steps(T_max, study.walkback.heating_factor), noise_generator, shard, scaler,
                 heating_kernel(study))


def heating_kernel(study: Study) -> walkback.NoiseHeating | None:
    """The study's heating steps: None for the operator's own (walkback.heating_kernel: model), else the
    fixed noise steps at the T = 1 level operator.sigma (walkback.NoiseHeating)."""
    return walkback.NoiseHeating(study.operator.sigma) if study.walkback.heating_kernel == "noise" else None


class ReplicaAdam(torch.optim.Optimizer):
    """torch.optim.Adam (betas (0.9, 0.999), eps 1e-8, no weight decay) on parameters with a leading replica
    axis (R, ...), with one learning rate per replica: the param group's ``lr`` is a list of R numbers.

    Adam is elementwise, so on replica r's slice this is Adam with lr[r]. The update is written operation
    for operation as torch's single-tensor Adam computes it (m <- lerp(m, g, 1 - beta1);
    v <- beta2 v + (1 - beta2) g^2; p <- p - (lr / (1 - beta1^t)) m / (sqrt(v) / sqrt(1 - beta2^t) + eps)),
    so replica r's parameters equal a single run's to round-off. torch.optim.Adam itself takes one lr per
    parameter group, and a group cannot hold a slice of a tensor. A parameter without a gradient is
    skipped, its step count too, as in torch."""

    def __init__(self, params, lr: list[float], betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, {"lr": list(lr), "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None) -> None:
        for group in self.param_groups:
            (beta1, beta2), eps = group["betas"], group["eps"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state.update(step=0, exp_avg=torch.zeros_like(param), exp_avg_sq=torch.zeros_like(param))
                state["step"] += 1
                exp_avg, exp_avg_sq, grad = state["exp_avg"], state["exp_avg_sq"], param.grad
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                bias_correction1 = 1 - beta1 ** float(state["step"])
                bias_correction2 = 1 - beta2 ** float(state["step"])
                step_size = torch.tensor([lr / bias_correction1 for lr in group["lr"]], dtype=param.dtype,
                                         device=param.device)
                denom = (exp_avg_sq.sqrt() / bias_correction2**0.5).add_(eps)
                param.sub_(step_size.view(-1, *[1] * (param.dim() - 1)) * exp_avg / denom)


@dataclass
class ReplicaModel:
    """``replicas: R`` networks trained as one batched program: one network with a replica axis
    (RecurrentNetwork(replicas=R): W (R, n, n), ...), one p* per replica, Adam with one learning rate per
    replica, and replica r's generator, seeded and consumed as the single run of replica_study(study, r)
    would (build_model draws its initial weights from it). ``singles[r]`` is that single run's Model, which
    evaluation and logging read after :func:`single_models` copied replica r's weights and p* into it.
    ``noise_generator``: on a GPU, the one generator whose draws serve all replicas (None on a CPU, where
    each replica draws from its own). ``shard`` and ``scaler`` as in :class:`Model` (one process)."""

    network: RecurrentNetwork
    operator: Operator
    p_star: walkback.PStar
    optimizer: ReplicaAdam
    generators: list[torch.Generator]
    studies: list[Study]
    datasets: list[Dataset]
    singles: list[Model]
    noise_generator: torch.Generator | None = None
    shard: Shard = Shard()
    scaler: "torch.amp.GradScaler | None" = None
    heating: walkback.NoiseHeating | None = None  # as in Model; one for all replicas

    def heating_noise(self) -> walkback.ReplicaNoise:
        """The noise source of the replicas' chains (walkback.ReplicaNoise)."""
        return walkback.ReplicaNoise(self.generators if self.noise_generator is None else self.noise_generator)


def build_replica_model(study: Study, data: Dataset, data_dir: str | None, device, dtype) -> ReplicaModel:
    """Each replica built as its single run (build_model), then stacked. A toy dataset is drawn from the seed,
    so a replica with another seed gets its own; MNIST is one dataset for all."""
    studies = [replica_study(study, r) for r in range(study.replicas)]
    datasets = [data if data.toy is None or single.seed == study.seed else load_data(single, data_dir)
                for single in studies]
    singles = [build_model(single, single_data, device, dtype) for single, single_data in zip(studies, datasets)]
    network = RecurrentNetwork.stack([single.network for single in singles])
    optimizer = ReplicaAdam(network.parameters(), [single.training.learning_rate for single in studies])
    p_star = walkback.PStar(network.n_units, study.replicas).to(device=device, dtype=dtype)
    noise_generator = torch.Generator(device=device).manual_seed(study.seed) if device.type == "cuda" else None
    scaler = torch.amp.GradScaler(device.type) if study.training.autocast == "fp16" else None
    return ReplicaModel(network, singles[0].operator, p_star, optimizer, [single.generator for single in singles],
                        studies, datasets, singles, noise_generator, Shard(), scaler, singles[0].heating)


def single_models(model: Model | ReplicaModel) -> list[Model]:
    """The run's networks as single-run Models, for evaluation and logging: the model itself, or every
    replica's weights and p* copied into its single run's Model."""
    if isinstance(model, Model):
        return [model]
    for r, single in enumerate(model.singles):
        model.network.copy_replica(r, single.network)
        model.p_star.copy_replica(r, single.p_star)
    return model.singles


def load_data(study: Study, data_dir: str | None, download: bool | None = None) -> Dataset:
    """The study's dataset; a toy's points are drawn from its seed. ``download``: fetch missing files
    (default: the study's data.download)."""
    data_gen = torch.Generator().manual_seed(study.seed + 104729)
    return load_dataset(study.data.name, study.data.n_train, study.data.n_test, data_dir, data_gen,
                        study.data.binarize, study.data.download if download is None else download)


def sampling_generator(generator: torch.Generator, device: torch.device) -> torch.Generator | None:
    """The training generator where it can drive sampling (CPU); None (global CUDA RNG) on GPU."""
    return generator if device.type == "cpu" else None


def eval_temperatures(model: Model, study: Study) -> list[float]:
    """The fixed schedule of generation and of the bound: n = n_extra_max steps at T = 1, then heating."""
    return schedule.heating_temperatures(study.walkback.n_extra_max, model.n_heating, study.walkback.heating_factor)


def generation_temperatures(model: Model, study: Study) -> list[float]:
    """The cooling schedule of generation: evaluation.extra_cooling_steps more T = 1 steps (they run last)
    before eval_temperatures."""
    return [1.0] * study.evaluation.extra_cooling_steps + eval_temperatures(model, study)


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 in hardware: a CUDA GPU that supports it, or a CPU with
    AVX512-BF16 or AMX tiles (elsewhere a CPU emulates bfloat16, often more slowly than float32)."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # a torch before the keyword
            return torch.cuda.is_bf16_supported()
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe() for probe in probes if probe is not None)


def sampling_precision(study: Study, device: torch.device) -> str:
    """What evaluation.autocast resolves to on ``device``: "bfloat16", or "none" (training.dtype)."""
    mode = study.evaluation.autocast
    return "bfloat16" if mode == "bf16" or (mode == "auto" and native_bfloat16(device)) else "none"


def sampling_autocast(study: Study, device: torch.device) -> torch.autocast:
    """The context the evaluation's coolings run their network calls in (evaluation.autocast)."""
    device = torch.device(device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=sampling_precision(study, device) == "bfloat16")


def cooling_corrector(model: Model, study: Study) -> walkback.Corrector | None:
    """The coolings' corrector steps (evaluation.corrector_steps and corrector_bands), None when there are
    none at any level of the generation schedule."""
    if model.heating is None:
        return None
    corrector = walkback.Corrector(model.heating, study.evaluation.corrector_steps,
                                   tuple((float(high), float(low), steps)
                                         for high, low, steps in study.evaluation.corrector_bands))
    return corrector if corrector.runs_at(generation_temperatures(model, study)) else None


def check_finite(model: Model | ReplicaModel) -> None:
    for value in model.network.state_dict().values():
        if not torch.isfinite(value).all():
            raise TrainingDiverged("the weights are no longer finite")


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
    if _noise_generator(model) is not None:  # the GPU's heating noise
        state["noise_generator"] = _noise_generator(model).get_state()
    if isinstance(model, Model) and model.contrast_chains is not None:
        state["contrast_chains"] = model.contrast_chains
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _noise_generator(model: Model | ReplicaModel) -> torch.Generator | None:
    """The generator of the heating noise where it is not the training generator (a GPU's), else None."""
    if isinstance(model, Model):
        return None if model.noise_generator is model.generator else model.noise_generator
    return model.noise_generator


CHECKPOINT_KEYS = ("step", "network", "optimizer", "p_star", "generator")


def load_checkpoint(path: Path, model: Model | ReplicaModel) -> int:
    """Restore what save_checkpoint wrote (no pickle: weights_only=True); returns the step.

    A file that torch cannot read as tensors only, that lacks a checkpoint's entries, or whose tensors do
    not fit this study's model is refused with a RunError that names the file and the problem.
    """
    if not path.exists():
        raise RunError(f"no checkpoint at {path}: this run stopped before its first checkpoint; start it again "
                       "without --resume in a new --out directory")
    try:
        with warnings.catch_warnings():  # torch warns about a foreign pickle protocol before it refuses it
            warnings.simplefilter("ignore")
            state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:  # torch's unpickler raises many kinds; each means "not ours"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RunError(f"not an asymnet checkpoint: {path} cannot be read as tensors only ({reason[:200]}); "
                       "point at the run directory asymnet.run wrote, or start the run again") from None
    missing = [key for key in CHECKPOINT_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise RunError(f"not an asymnet checkpoint: {path} lacks {', '.join(missing)}; point at the run directory "
                       "asymnet.run wrote, or start the run again")
    try:
        model.network.load_state_dict(state["network"])
        model.optimizer.load_state_dict(state["optimizer"])
        model.p_star.load_state_dict(state["p_star"])
        if isinstance(model, Model):
            model.generator.set_state(state["generator"])
        else:
            for gen, row in zip(model.generators, state["generator"]):
                gen.set_state(row.clone())  # a row of the stack is a view, and set_state wants a tensor of its own
        if _noise_generator(model) is not None and "noise_generator" in state:
            _noise_generator(model).set_state(state["noise_generator"])
        if isinstance(model, Model) and "contrast_chains" in state:
            model.contrast_chains = state["contrast_chains"].to(next(model.network.parameters()).device)
    except (RuntimeError, KeyError, ValueError, TypeError) as error:
        reason = str(error).strip().splitlines()[0]
        raise RunError(f"{path} does not fit the study in its log ({reason[:200]}); it belongs to another run: "
                       "restore that run's checkpoint.pt, or start the run again") from None
    return int(state["step"])


def pick_device(name: str) -> torch.device:
    """The torch device ``name`` ('cpu' or 'cuda'), with a clear error when CUDA is asked for and absent."""
    if name == "cuda" and not torch.cuda.is_available():
        raise RunError("--device cuda was asked for but torch sees no CUDA device (torch.cuda.is_available() is "
                       "False); use --device cpu or install a CUDA build of torch")
    return torch.device(name)


@dataclass
class TrainedRun:
    run_dir: Path
    study: Study
    data: Dataset
    model: Model
    device: torch.device

    @property
    def log_path(self) -> Path:
        return self.run_dir / LOG_NAME


def load_run(run_dir, data_dir: str | None = None, device: str = "cpu") -> TrainedRun:
    """The finished run in ``run_dir``: its study, data and trained model (weights, p*).

    Raises LogError when ``run_dir`` holds no asymnet log, RunError when its run has not finished
    or its checkpoint is missing, DataError when the data folder is missing.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir} is not a directory; give the run directory that asymnet.run wrote "
                       f"(it holds {LOG_NAME} and {CHECKPOINT_NAME})")
    summary = read_summary(run_dir)
    status, text = summary.status, summary.attrs.get("study_resolved")
    if text is None:
        raise LogError(f"{run_dir / LOG_NAME} records no study (root attribute 'study_resolved'); "
                       "it was not written by asymnet.run")
    if status != "finished":
        raise RunError(f"{run_dir} has no finished model: its run's status is '{status}'; finish it with "
                       f"python -m asymnet.run --resume {run_dir}, then measure it")
    study = parse_study(text, source=str(run_dir / LOG_NAME))
    if study.replicas > 1:
        raise RunError(f"{run_dir} holds {study.replicas} replicas trained together; the measurement commands read "
                       "a single run: train the replica to measure alone, from a study with replicas: 1 and that "
                       "replica's seed and swept value (the attributes of /replicas/<r> in its log), and measure that run")
    torch_device = pick_device(device)
    data = load_data(study, data_dir, download=False)
    model = build_model(study, data, torch_device, getattr(torch, study.training.dtype))
    load_checkpoint(run_dir / CHECKPOINT_NAME, model)
    model.network.eval()
    return TrainedRun(run_dir, study, data, model, torch_device)

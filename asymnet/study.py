"""A study YAML file as typed, frozen configuration objects.

This module alone knows YAML. ``load_study`` turns a file (plus ``--set key.sub=value``
overrides) into a :class:`Study`; every unknown key, wrong type and out-of-range value is a
:class:`StudyError` whose message names the key, its line in the file, the value, and what is
allowed (for an unknown key: the nearest valid spelling). ``parse_study`` does the same for text,
``replace_in`` for one programmatic override, and ``study_to_dict`` gives the plain nested dict.

Range checks live beside each field, in ``metadata["check"]``, as one of
``"positive"`` (> 0), ``"non_negative"`` (>= 0), ``"unit_open_closed"`` (in (0, 1]),
``"unit_closed_open"`` (in [0, 1)), ``"at_least_one"`` (>= 1), ``"above_one"`` (> 1), or a tuple of allowed strings.

``replicas: R`` trains R independent networks in one batched program (the training code with a leading
replica axis, asymnet.model.build_replica_model); replica r is the single run :func:`replica_study` gives
(seed + r, or the r-th value of ``replica_sweep``).
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import get_type_hints

import yaml

from asymnet.errors import AsymnetError


TOY_DATASETS = ("spiral", "circle", "mog")  # asymnet.data.toy.TOYS, named here without importing torch


def _check(rule, default):
    return field(default=default, metadata={"check": rule})


@dataclass(frozen=True)
class DataConfig:
    """Which dataset and how much of it."""

    name: str = _check((*TOY_DATASETS, "mnist", "cifar10", "svhn", "celeba64"), "spiral")
    n_train: int = _check("positive", 20000)
    n_test: int = _check("positive", 2000)
    binarize: bool = False
    download: bool = False


@dataclass(frozen=True)
class NetworkConfig:
    """The network F of the transition operator (docs/design.md, "Operators"). temperature_conditioned:
    the MLP reads log T as an input; the recurrent network gets a log T input neuron (weights w_T).
    unet_*: the convolutional operator (asymnet.networks.unet): base channels, the channel multiplier of
    each resolution level (one downsampling between levels), residual blocks per level.
    hidden_units: slow (hidden units are part of the chain's state) or fast (they relax within each step to
    a random expansion of the visible state and log T, drawn with the gains hidden_gain, hidden_bias and
    hidden_temperature_gain; see asymnet.networks.recurrent). hidden_learning (fast hidden units): fixed (the
    expansion never learns) or learned (its weights W_hv, b_h, w_T,h learn: by the exact gradient under
    training.learning: autograd, by a three-factor rule under training.learning: local, asymnet.plasticity).
    feedback (learned hidden units, local rule): the synapses B that carry the visible errors to the hidden
    units: transpose (B = W_vh^T, the exact gradient), random (a fixed B, feedback alignment) or kolen_pollack
    (B moves by the mirror of W_vh's update and both decay by feedback_decay per step, so B - W_vh^T shrinks
    by that factor each step). feedback_scale: a random or Kolen-Pollack B starts N(0, feedback_scale^2 /
    n_visible), so each hidden unit's feedback (B e)_i is about as large as one visible error e_j; 0 with
    kolen_pollack starts B where W_vh^T starts (at 0), so B stays W_vh^T, each feedback synapse moved by its
    forward partner's change alone. posterior_leak (recurrent or unet, noise heating, operator.alpha 1, walkback.n_extra_max 0): the drive keeps the
    share c(T) of the state that the mean of s_{t-1} given s_t and the data keeps, mu = c(T) s + (1 - c(T)) F,
    so F estimates the data behind the state (RecurrentNetwork.leak). hidden_receptive_field r (fast hidden
    units, image data; 0: every pixel): each hidden unit sees, and projects back to, an r x r square of the
    image around its centre, the units' centres tiling the image (recurrent.receptive_field_mask).
    conv_channels (recurrent, image data, the chain's state the visible units): the channels of a
    convolutional pathway of fast hidden layers, one count per level (e.g. [16, 32, 64]: 28 -> 14 -> 7 and
    back), whose output D(v, T) adds to the visible drive (asymnet.networks.pathway; []: none). Its units use
    phi, its forward kernels are drawn N(0, conv_gain^2 / fan_in) and its log T weights N(0,
    hidden_temperature_gain^2); under the local rule network.feedback, feedback_scale and feedback_decay set
    its feedback kernels as they set B (feedback_scale 0: each starts at its forward kernel). conv_input_gain
    (noise heating): the pathway reads the visible rates times 1 / sqrt(var + V(T)), var the training images'
    per-pixel variance and V(T) the variance the heating added by T, so its units see states of one spread
    at every temperature (networks.pathway). conv_middle: that many 3 x 3 layers at the pathway's lowest
    level, each widening its deepest units' field. conv_residual: each middle layer adds its output to its
    input through fixed one-to-one synapses (a residual skip; networks.pathway). conv_groups: each hidden
    layer's potentials normalised per image over that many groups of its channels before phi, with a learned
    gain per channel (group normalisation; 0: none; it must divide every entry of conv_channels)."""

    kind: str = _check(("recurrent", "mlp", "unet"), "recurrent")
    n_hidden: int = _check("non_negative", 64)
    phi: str = _check(("tanh", "sigmoid", "relu", "identity", "softplus"), "tanh")
    phi_visible: str = _check(("same", "tanh", "sigmoid", "relu", "identity", "softplus"), "same")
    init_scale: float = _check("non_negative", 1.0)
    mlp_width: int = _check("positive", 256)
    mlp_depth: int = _check("positive", 2)
    temperature_conditioned: bool = True
    hidden_units: str = _check(("slow", "fast"), "slow")
    hidden_gain: float = _check("non_negative", 4.0)
    hidden_bias: float = _check("non_negative", 4.0)
    hidden_temperature_gain: float = _check("non_negative", 1.0)
    hidden_learning: str = _check(("fixed", "learned"), "fixed")
    feedback: str = _check(("transpose", "random", "kolen_pollack"), "transpose")
    feedback_scale: float = _check("non_negative", 1.0)
    feedback_decay: float = _check("unit_closed_open", 1.0e-3)
    posterior_leak: bool = False
    hidden_receptive_field: int = _check("non_negative", 0)
    unet_channels: int = _check("positive", 32)
    unet_channel_mults: tuple = (1, 2, 2)
    unet_res_blocks: int = _check("positive", 1)
    conv_channels: tuple = ()
    conv_gain: float = _check("positive", 1.0)
    conv_input_gain: bool = False
    conv_middle: int = _check("non_negative", 0)
    conv_residual: bool = False
    conv_groups: int = _check("non_negative", 0)


@dataclass(frozen=True)
class OperatorConfig:
    """Noise family, leak alpha and T = 1 noise level (paper sec. 3.3); learn_sigma applies to visible
    units; sigma_hidden is the fixed noise of hidden units (0: the same as sigma)."""

    family: str = _check(("gaussian", "bernoulli"), "gaussian")
    alpha: float = _check("unit_open_closed", 0.5)
    sigma: float = _check("positive", 0.1)
    learn_sigma: bool = True
    sigma_hidden: float = _check("non_negative", 0.0)
    noise_scaling: str = _check(("sqrt_T", "T"), "sqrt_T")


@dataclass(frozen=True)
class WalkbackConfig:
    """Algorithm 1: extra T = 1 steps n ~ U{0..n_extra_max}, the heating factor (2: T doubles each
    step), hidden settling, p* tracking; sigma_max = 0 means the data's standard deviation; T_max = 0
    means the temperature at which the Gaussian noise reaches sigma_max (16 for the Bernoulli operator).
    step_weight_power p multiplies the gradient through the drift at step t by T_t^p (0: the paper's loss;
    the noise level and the logged loss are not weighted; walkback.walkback_losses). heating_kernel: model
    (the operator's own kernel heats, Algorithm 1) or noise (s_t = s_{t-1} + g(T_t) operator.sigma eps_t, a
    fixed forward process; Gaussian operator only; walkback.NoiseHeating). model_heating_fraction (noise
    heating): the share of training steps heated by the model's own kernel instead, drawn per step. target
    (noise heating): what each walk-back step is scored against: sample (the heating's own s_{t-1}) or
    posterior (the law of s_{t-1} given s_t and s_0, the same expected loss without the draw's noise;
    walkback.posterior_targets). sampled_steps m (the posterior target): each training step scores m of each
    image's K steps, drawn for each image uniformly without replacement, their loss and update times K / m, an unbiased
    estimate of the whole trajectory's (0: every step; walkback.sample_steps). unit_step_weight w (noise
    heating): each image also takes one T = 1 step of the heating, s_0 + sigma_0 eps, walked back at T = 1, its
    loss and update times w: the T = 1 operator, which the schedule's steps (from T = heating_factor up) never
    run, learns to denoise its own noise level, which is what the T = 1 chain does (Proposition 1; 0: no
    such step). step_weighting (noise heating, walkback.n_extra_max 0): elbo (each step's drift gradient as the
    loss weighs it) or continuous (times 1 - T_t^-q, so each step weighs what the continuous-time limit weighs
    its noise level, 1 / V_t, and the schedule's coarse first steps no more; walkback.drift_gain).
    contrast_weight (noise heating): a negative phase for the first level's implied energy: the loss adds that
    weight times E(x) - E(c), the energy the first level's mean implies between heated training images x and
    the states c of contrast_chains persistent T = 1 chains of the operator, each advanced contrast_steps steps
    per update (asymnet.contrast; 0: no such term), on the updates after the first contrast_start x
    training.steps, rounded (0: on every update; 0.7: a fine-tune of the last 30 %, where the cosine schedule's
    learning rate has fallen to a fifth)."""

    n_extra_max: int = _check("non_negative", 4)
    heating_factor: float = _check("above_one", 2.0)
    T_max: float = _check("non_negative", 0.0)
    settle_steps: int = _check("non_negative", 10)
    p_star_momentum: float = _check("unit_open_closed", 0.05)
    sigma_max: float = _check("non_negative", 0.0)
    step_weight_power: float = _check("non_negative", 0.0)
    step_weighting: str = _check(("elbo", "continuous"), "elbo")
    heating_kernel: str = _check(("model", "noise"), "model")
    model_heating_fraction: float = _check("unit_closed_open", 0.0)
    target: str = _check(("sample", "posterior"), "sample")
    sampled_steps: int = _check("non_negative", 0)
    unit_step_weight: float = _check("non_negative", 0.0)
    contrast_weight: float = _check("non_negative", 0.0)
    contrast_chains: int = _check("positive", 32)
    contrast_steps: int = _check("positive", 10)
    contrast_start: float = _check("unit_closed_open", 0.0)


@dataclass(frozen=True)
class AnchorConfig:
    """Terms beside the walk back that anchor the T = 1 operator to the data's Langevin step, for the
    Proposition-1 toy studies (asymnet.anchor); every default leaves the paper's loss as it is.
    start_noise tau_max: each training trajectory starts at x + tau eps, tau ~ U(0, tau_max) per row, eps
    standard normal, in the data's units (0: at x, the paper's start), for a start_noise_fraction of the rows
    (anchor.noisy_starts). weight lambda adds lambda times a denoising term that anchors the T = 1
    operator's mean to the Langevin step of the data smoothed by up to ``noise`` (data units;
    anchor.score_anchor_pairs); 0: no such term. bandwidth h > 0 (2-D toys) replaces the denoising targets
    by the exact Langevin step of the training set's Gaussian kernel density of bandwidth h at the same starts
    (anchor.kernel_langevin_step). wide F (with kernel targets) moves a fraction F of the anchor's starts to
    the data plus Gaussian noise of sd wide_noise (data units), which covers the gaps between modes that the
    anchor's own starts seldom reach (anchor.widen_starts)."""

    start_noise: float = _check("non_negative", 0.0)
    start_noise_fraction: float = _check("unit_open_closed", 1.0)
    weight: float = _check("non_negative", 0.0)
    noise: float = _check("non_negative", 0.5)
    bandwidth: float = _check("non_negative", 0.0)
    wide: float = _check("unit_closed_open", 0.0)
    wide_noise: float = _check("positive", 0.3)


MOVED_KEYS = {
    "walkback.start_noise": "anchor.start_noise",
    "walkback.start_noise_fraction": "anchor.start_noise_fraction",
    "walkback.score_anchor": "anchor.weight",
    "walkback.score_anchor_noise": "anchor.noise",
    "walkback.score_anchor_bandwidth": "anchor.bandwidth",
    "walkback.score_anchor_wide": "anchor.wide",
    "walkback.score_anchor_wide_noise": "anchor.wide_noise",
}
"""Keys that moved to another section: a study that gives the old name is told the new one; a run log
written with the old names (its root attribute study_resolved) is read with them moved."""


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation. autocast: run the network's forward passes in bfloat16 or float16 (fp16: GPU only,
    with loss scaling) while the operator's log-probabilities and the weights stay in ``dtype``.
    optimizer: adam, or least_squares: the recurrent network's readout W, b, w_T moves each step a fraction
    ls_step (times the schedule's lr / learning_rate) toward the least-squares fit of the walk back's loss
    over the minibatches, averaged with memory ls_memory (each earlier one's weight shrinks by that factor
    per step), damped by ls_damping times the Gram matrix's mean diagonal; the noise levels keep Adam
    (asymnet.readout)."""

    steps: int = _check("positive", 2000)
    batch_size: int = _check("positive", 128)
    learning_rate: float = _check("positive", 1e-3)
    learning: str = _check(("autograd", "local"), "autograd")
    lr_schedule: str = _check(("constant", "cosine"), "constant")
    dtype: str = _check(("float32", "float64"), "float32")
    autocast: str = _check(("none", "bf16", "fp16"), "none")
    optimizer: str = _check(("adam", "least_squares"), "adam")
    ls_step: float = _check("unit_open_closed", 0.5)
    ls_memory: float = _check("unit_closed_open", 0.99)
    ls_damping: float = _check("non_negative", 1.0e-6)


@dataclass(frozen=True)
class LoggingConfig:
    """How often the run log gets a metric row, a weight snapshot, a checkpoint, an evaluation."""

    metrics_every: int = _check("positive", 20)
    weights_every: int = _check("positive", 200)
    checkpoint_every: int = _check("positive", 200)
    eval_every: int = _check("positive", 500)


@dataclass(frozen=True)
class EvaluationConfig:
    """Final figures: generated samples and held-out bound. At every evaluation (logging.eval_every) the
    detailed-balance violation of the T = 1 chain: ep_chains chains, ep_burn_in unrecorded then ep_steps
    recorded steps (0 chains: off). long_run_steps > 0 runs ``asymnet.sample`` for that many T = 1 steps
    after training, on long_run_chains chains (0: n_samples); long_run_chain: operator (the T = 1 operator's
    own chain) or heated (noise heating only: each step heats by the coldest level's noise and walks back at
    that level, walkback.heated_chain). final_mean: generated (and inpainted) images are the mean of the last cooling
    step's operator (the denoised estimate) rather than a draw from it, which adds the T = 1 noise.
    extra_cooling_steps: that many more T = 1 steps at the end of generation (and inpainting), after the
    walkback.n_extra_max ones the training schedule has; the held-out bound keeps the training schedule.
    inpaint_masks: after training, ``asymnet.inpaint`` with each of these masks on inpaint_images test images.
    corrector_steps: that many corrector steps after each step of every cooling (generation, inpainting,
    the starts of the long run and of the EP chains): heat by the noise heating's step at that level, walk
    back again (walkback.Corrector; noise heating only); the held-out bound keeps the plain walk back.
    corrector_bands: [T_high, T_low, n] triplets: the levels with T_low < T_t <= T_high take n corrector
    steps instead of corrector_steps (T_high may be .inf); the bands may not overlap.
    autocast: the network calls of those coolings (not the T = 1 chains, the bounds or EP's log-probabilities,
    which stay in training.dtype) in bfloat16: bf16, or auto (bf16 where the device computes it natively, a
    CUDA GPU with bfloat16 or a CPU with AVX512-BF16 or AMX, none elsewhere; model.sampling_precision)."""

    n_samples: int = _check("positive", 2000)
    n_bound: int = _check("positive", 1000)
    ep_chains: int = _check("non_negative", 64)
    ep_steps: int = _check("positive", 400)
    ep_burn_in: int = _check("non_negative", 100)
    long_run_steps: int = _check("non_negative", 0)
    long_run_chains: int = _check("non_negative", 0)
    long_run_chain: str = _check(("operator", "heated"), "operator")
    final_mean: bool = False
    extra_cooling_steps: int = _check("non_negative", 0)
    inpaint_masks: tuple = ()
    inpaint_images: int = _check("positive", 1000)
    corrector_steps: int = _check("non_negative", 0)
    corrector_bands: tuple = ()
    autocast: str = _check(("none", "bf16", "auto"), "none")


# Keys whose value may differ between the replicas of one batched run: those that change a replica's seed,
# initial weights or optimizer step but not the shape or the arithmetic of the batched program.
SWEEPABLE = ("seed", "training.learning_rate", "network.init_scale")


@dataclass(frozen=True)
class ReplicaSweep:
    """One study key that differs between replicas: replica r runs with ``values[r]`` (one value per
    replica) and the seed of the study; without a sweep (key empty) replica r runs with seed + r."""

    key: str = ""
    values: tuple = ()


@dataclass(frozen=True)
class Study:
    """One study file. replicas: how many independent networks to train side by side (see replica_study)."""

    name: str = "study"
    seed: int = _check("non_negative", 0)
    replicas: int = _check("at_least_one", 1)
    replica_sweep: ReplicaSweep = field(default_factory=ReplicaSweep)
    data: DataConfig = field(default_factory=DataConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    operator: OperatorConfig = field(default_factory=OperatorConfig)
    walkback: WalkbackConfig = field(default_factory=WalkbackConfig)
    anchor: AnchorConfig = field(default_factory=AnchorConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)


class StudyError(AsymnetError):
    """A study file or override that cannot become a :class:`Study`; the message says where and the fix."""


def load_study(path, overrides: Sequence[str] = ()) -> tuple[Study, str]:
    """Read the study file at ``path``, apply ``--set key.sub=value`` overrides, validate.

    Returns the study and the YAML text that ran: the file text, followed by one
    ``# --set key=value`` comment line per override when there are any.
    """
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"no study file at {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise StudyError(f"{path}: not UTF-8 text (bad byte at offset {error.start})") from None
    try:
        empty = yaml.safe_load(text) is None
    except yaml.YAMLError:
        empty = False  # parse_study names the YAML error and its line
    if empty:
        raise StudyError(f"{path}: the study file is empty (no keys), so every key would take its default; write "
                         "the study's keys (copy studies/spiral.yaml to start; every key and its default: "
                         "docs/study_keys.md)")
    study = parse_study(text, str(path), overrides)
    if overrides:
        separator = "\n" if text and not text.endswith("\n") else ""
        text += separator + "# overrides given with --set:\n" + "".join(f"# --set {o}\n" for o in overrides)
    return study, text


def parse_study(text: str, source: str = "<string>", overrides: Sequence[str] = (), from_log: bool = False) -> Study:
    """Validate study YAML ``text``; ``source`` names it in messages (``name`` defaults to its stem).
    ``from_log``: the text is a run log's record of its study, in which keys that have moved since
    (MOVED_KEYS) are read at their new place."""
    if isinstance(overrides, str):
        raise TypeError("overrides must be a sequence of 'key=value' strings, not one string")
    lines: dict[str, int] = {}
    raw = _read_yaml(text, source, lines)
    if from_log:
        raw = _move_keys(raw)
    values = _check_section(Study, raw, "", lambda path: f"{source}:{lines.get(path, '?')}: ")
    if "name" not in values and not source.startswith("<"):
        values["name"] = Path(source).stem
    for item in overrides:
        key, equals, raw = item.partition("=")
        where = f"--set {item}: "
        if not equals or not key.strip():
            raise StudyError(f"{where}expected key=value, e.g. --set training.steps=50")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as error:
            raise StudyError(f"{where}value {raw!r} is not valid YAML ({getattr(error, 'problem', None) or error})") from None
        _set(values, key.strip(), value, where)
    study = _build(Study, values)
    _check_joined_keys(study, lambda path: f"{source}:{lines[path]}: " if path in lines else "")
    return study


def _move_keys(values: dict) -> dict:
    """``values`` with every key of MOVED_KEYS that it gives at its old place moved to the new one."""
    moved = {section: dict(keys) if isinstance(keys, dict) else keys for section, keys in values.items()}
    for old, new in MOVED_KEYS.items():
        (old_section, old_key), (new_section, new_key) = old.split("."), new.split(".")
        if isinstance(moved.get(old_section), dict) and old_key in moved[old_section]:
            moved.setdefault(new_section, {})[new_key] = moved[old_section].pop(old_key)
    return moved


def study_to_dict(study: Study) -> dict:
    """The study as a plain nested dict (lists for tuples); ``parse_study(yaml.safe_dump(d))`` gives it back."""
    values = asdict(study)
    values["replica_sweep"]["values"] = list(values["replica_sweep"]["values"])
    values["network"]["unet_channel_mults"] = list(values["network"]["unet_channel_mults"])
    values["network"]["conv_channels"] = list(values["network"]["conv_channels"])
    values["evaluation"]["inpaint_masks"] = list(values["evaluation"]["inpaint_masks"])
    values["evaluation"]["corrector_bands"] = [list(band) for band in values["evaluation"]["corrector_bands"]]
    return values


def replica_study(study: Study, r: int) -> Study:
    """The single run that replica r of ``study`` is: seed + r, or the study's seed and the r-th value of
    the swept key (the seed itself when the sweep is over seeds); replicas 1, no sweep."""
    single = replace_in(study, "replica_sweep", {"key": "", "values": []})
    single = replace_in(single, "replicas", 1)
    sweep = study.replica_sweep
    if not sweep.key:
        return replace_in(single, "seed", study.seed + r)
    return replace_in(single, sweep.key, sweep.values[r])


def _check_joined_keys(study: Study, where) -> None:
    """The rules that join several keys: anchor.start_noise needs the Gaussian operator, anchor.weight a
    recurrent network whose state is the visible units, the local rule a recurrent network, learned hidden
    units fast ones, and the feedback keys learned hidden units under the local rule; the sweep
    names a sweepable key, gives one valid value per replica, and the network is one the batched program
    runs, with the after-training measurements that read a single run's checkpoint off (``where(path)``
    places a key)."""
    sweep = study.replica_sweep
    if sweep.key and sweep.key not in SWEEPABLE:
        raise StudyError(f"{where('replica_sweep.key')}replica_sweep.key = {sweep.key!r} cannot differ between "
                         f"replicas, which run as one batched program; sweepable keys: {', '.join(SWEEPABLE)} "
                         "(run one study per value of any other key)")
    if sweep.key and len(sweep.values) != study.replicas:
        raise StudyError(f"{where('replica_sweep.values')}replica_sweep.values has {len(sweep.values)} "
                         f"value{'s' if len(sweep.values) != 1 else ''}"
                         f" but replicas = {study.replicas}; give one value per replica")
    if sweep.values and not sweep.key:
        raise StudyError(f"{where('replica_sweep.values')}replica_sweep.values given without replica_sweep.key; "
                         f"name the key they set (one of: {', '.join(SWEEPABLE)})")
    if sweep.key:
        *sections, leaf = sweep.key.split(".")
        cls = Study
        for part in sections:
            cls = get_type_hints(cls)[part]
        rule = {f.name: f.metadata.get("check") for f in fields(cls)}[leaf]
        for index, value in enumerate(sweep.values):
            _check_value(get_type_hints(cls)[leaf], rule, value, sweep.key,
                         f"{where('replica_sweep.values')}replica_sweep.values[{index}]: ")
    if study.walkback.model_heating_fraction and study.walkback.heating_kernel != "noise":
        raise StudyError(f"{where('walkback.model_heating_fraction')}walkback.model_heating_fraction = "
                         f"{study.walkback.model_heating_fraction:g} mixes the model's heating into noise heating, "
                         "but walkback.heating_kernel is model (every step is the model's already); set "
                         "walkback.heating_kernel: noise or drop walkback.model_heating_fraction")
    if study.network.posterior_leak:
        wrong = [f"{name} is {value}" for name, value, ok in (
            ("network.kind", study.network.kind, study.network.kind in ("recurrent", "unet")),
            ("walkback.heating_kernel", study.walkback.heating_kernel, study.walkback.heating_kernel == "noise"),
            ("operator.alpha", study.operator.alpha, study.operator.alpha == 1.0),
            ("walkback.n_extra_max", study.walkback.n_extra_max, study.walkback.n_extra_max == 0)) if not ok]
        if wrong:
            raise StudyError(f"{where('network.posterior_leak')}network.posterior_leak sets the leak from the noise "
                             f"heating's schedule and needs network.kind: recurrent or unet, walkback.heating_kernel: noise, "
                             f"operator.alpha: 1 and walkback.n_extra_max: 0, but {', '.join(wrong)}; set those or "
                             "drop network.posterior_leak")
    if study.walkback.step_weighting == "continuous":
        wrong = [f"{name} is {value}" for name, value, ok in (
            ("walkback.heating_kernel", study.walkback.heating_kernel, study.walkback.heating_kernel == "noise"),
            ("walkback.n_extra_max", study.walkback.n_extra_max, study.walkback.n_extra_max == 0),
            ("training.optimizer", study.training.optimizer, study.training.optimizer == "adam")) if not ok]
        if wrong:
            raise StudyError(f"{where('walkback.step_weighting')}walkback.step_weighting = continuous weighs each "
                             "step by the noise the heating added before it, which needs walkback.heating_kernel: "
                             "noise, walkback.n_extra_max: 0 (a T = 1 step would get weight 0) and "
                             f"training.optimizer: adam, but {', '.join(wrong)}; set those or "
                             "walkback.step_weighting: elbo")
    _check_corrector_bands(study.evaluation.corrector_bands, where)
    if study.evaluation.long_run_chain == "heated" and study.walkback.heating_kernel != "noise":
        raise StudyError(f"{where('evaluation.long_run_chain')}evaluation.long_run_chain: heated heats by the noise "
                         f"heating's step, but walkback.heating_kernel is {study.walkback.heating_kernel}; set "
                         "walkback.heating_kernel: noise or evaluation.long_run_chain: operator")
    if study.evaluation.corrector_steps and study.walkback.heating_kernel != "noise":
        raise StudyError(f"{where('evaluation.corrector_steps')}evaluation.corrector_steps = "
                         f"{study.evaluation.corrector_steps} heats each cooling step again with the noise heating's "
                         "step, but walkback.heating_kernel is model; set walkback.heating_kernel: noise or "
                         "evaluation.corrector_steps: 0")
    if any(band[2] for band in study.evaluation.corrector_bands) and study.walkback.heating_kernel != "noise":
        raise StudyError(f"{where('evaluation.corrector_bands')}evaluation.corrector_bands gives corrector steps, "
                         "which heat each cooling step again with the noise heating's step, but "
                         "walkback.heating_kernel is model; set walkback.heating_kernel: noise or "
                         "evaluation.corrector_bands: []")
    if study.walkback.target == "posterior" and study.walkback.heating_kernel != "noise":
        raise StudyError(f"{where('walkback.target')}walkback.target = posterior scores each step against the law "
                         "of s_{t-1} given s_t and the data, known in closed form for noise heating only; set "
                         "walkback.heating_kernel: noise or walkback.target: sample")
    if study.walkback.target == "posterior" and study.training.optimizer == "least_squares":
        raise StudyError(f"{where('walkback.target')}walkback.target = posterior is not in the least-squares "
                         "readout's regression, which fits the sampled s_{t-1}; set training.optimizer: adam or "
                         "walkback.target: sample")
    if study.walkback.sampled_steps and study.walkback.target != "posterior":
        raise StudyError(f"{where('walkback.sampled_steps')}walkback.sampled_steps = {study.walkback.sampled_steps} "
                         "scores steps apart from their neighbours, which only the posterior target allows (its "
                         "step t reads s_t and s_0, not the draw s_{t-1}); set walkback.heating_kernel: noise and "
                         "walkback.target: posterior, or walkback.sampled_steps: 0")
    if study.walkback.sampled_steps and study.replicas > 1:
        raise StudyError(f"{where('walkback.sampled_steps')}walkback.sampled_steps draws each step's scored steps, "
                         "which replicas (one batched program) cannot draw apart; set replicas: 1 or "
                         "walkback.sampled_steps: 0")
    if study.walkback.unit_step_weight:
        wrong = [f"{name} is {value}" for name, value, ok in (
            ("walkback.heating_kernel", study.walkback.heating_kernel, study.walkback.heating_kernel == "noise"),
            ("replicas", study.replicas, study.replicas == 1),
            ("training.optimizer", study.training.optimizer, study.training.optimizer != "least_squares")) if not ok]
        if wrong:
            raise StudyError(f"{where('walkback.unit_step_weight')}walkback.unit_step_weight = "
                             f"{study.walkback.unit_step_weight:g} adds a T = 1 step of noise heating and needs "
                             f"walkback.heating_kernel: noise (with the model's heating walkback.n_extra_max gives "
                             f"T = 1 steps), replicas: 1 and training.optimizer: adam, but {', '.join(wrong)}; set "
                             "those or walkback.unit_step_weight: 0")
    if study.walkback.contrast_weight:
        wrong = [f"{name} is {value}" for name, value, ok in (
            ("walkback.heating_kernel", study.walkback.heating_kernel, study.walkback.heating_kernel == "noise"),
            ("replicas", study.replicas, study.replicas == 1),
            ("training.optimizer", study.training.optimizer, study.training.optimizer != "least_squares"),
            ("network.hidden_units", study.network.hidden_units, study.network.kind != "recurrent"
             or not study.network.n_hidden or study.network.hidden_units == "fast")) if not ok]
        if wrong:
            raise StudyError(f"{where('walkback.contrast_weight')}walkback.contrast_weight = "
                             f"{study.walkback.contrast_weight:g} compares the first noise level's energy at "
                             "heated training images with its T = 1 chains' states, which needs "
                             "walkback.heating_kernel: noise, replicas: 1, training.optimizer: adam and a state of "
                             f"the visible units alone (network.hidden_units: fast), but {', '.join(wrong)}; set "
                             "those or walkback.contrast_weight: 0")
    if study.walkback.contrast_start and not study.walkback.contrast_weight:
        raise StudyError(f"{where('walkback.contrast_start')}walkback.contrast_start = "
                         f"{study.walkback.contrast_start:g} starts a term that walkback.contrast_weight: 0 leaves "
                         "out; set walkback.contrast_weight > 0 or drop walkback.contrast_start")
    if study.walkback.model_heating_fraction and study.replicas > 1:
        raise StudyError(f"{where('walkback.model_heating_fraction')}walkback.model_heating_fraction draws each "
                         "step's heating kernel, which replicas (one batched program) cannot draw apart; set "
                         "replicas: 1 or drop walkback.model_heating_fraction")
    if study.walkback.heating_kernel == "noise" and study.operator.family != "gaussian":
        raise StudyError(f"{where('walkback.heating_kernel')}walkback.heating_kernel = noise adds Gaussian noise to "
                         f"the state, but operator.family is {study.operator.family}, whose states are binary; set "
                         "walkback.heating_kernel: model or operator.family: gaussian")
    if study.anchor.start_noise and study.operator.family == "bernoulli":
        raise StudyError(f"{where('anchor.start_noise')}anchor.start_noise = {study.anchor.start_noise} adds "
                         "Gaussian noise to the start of each trajectory, but the Bernoulli operator's states are "
                         "binary; set anchor.start_noise: 0 or operator.family: gaussian")
    if study.anchor.weight:
        _check_score_anchor(study, where)
    if study.training.learning == "local" and study.network.kind != "recurrent":
        raise StudyError(f"{where('training.learning')}training.learning: local needs network.kind: recurrent (the "
                         f"rule is derived for F(s) = W phi(s) + b), got network.kind: {study.network.kind}; use "
                         "training.learning: autograd for it")
    if study.training.optimizer == "least_squares":
        _check_least_squares(study, where)
    _check_hidden_learning(study, where)
    if study.evaluation.long_run_chains == 1:
        raise StudyError(f"{where('evaluation.long_run_chains')}evaluation.long_run_chains = 1 gives the long run's "
                         "quality figures one sample to compare with the test set; give at least 2 chains (e.g. "
                         "200), or 0 for evaluation.n_samples")
    if study.replicas == 1:
        return
    if study.network.kind != "recurrent":
        raise StudyError(f"{where('replicas')}replicas = {study.replicas} needs network.kind: recurrent (the "
                         f"replicas are stacked weight matrices W of shape (replicas, n, n)), got network.kind: "
                         f"{study.network.kind}; set replicas: 1 and run one study per seed")
    if study.evaluation.long_run_steps:
        raise StudyError(f"{where('evaluation.long_run_steps')}evaluation.long_run_steps = "
                         f"{study.evaluation.long_run_steps} reads a single run's checkpoint, but replicas = "
                         f"{study.replicas}; set evaluation.long_run_steps: 0")
    if study.evaluation.inpaint_masks:
        raise StudyError(f"{where('evaluation.inpaint_masks')}evaluation.inpaint_masks reads a single run's "
                         f"checkpoint, but replicas = {study.replicas}; set evaluation.inpaint_masks: []")


def _check_hidden_learning(study: Study, where) -> None:
    """network.hidden_learning: learned needs fast hidden units of a recurrent network and Adam; the feedback
    keys act only on learned hidden units under the local rule (feedback_scale on a B of its own,
    feedback_decay under kolen_pollack), and are refused where they would be ignored."""
    net, defaults = study.network, NetworkConfig()
    if net.conv_channels:
        _check_pathway(study, where)
    elif net.conv_middle:
        raise StudyError(f"{where('network.conv_middle')}network.conv_middle = {net.conv_middle} adds layers to a "
                         "convolutional pathway, but network.conv_channels is []; set network.conv_channels (e.g. "
                         "[16, 32, 64]) or drop network.conv_middle")
    elif net.conv_residual:
        raise StudyError(f"{where('network.conv_residual')}network.conv_residual adds skips past a convolutional "
                         "pathway's middle layers, but network.conv_channels is []; set network.conv_channels and "
                         "network.conv_middle, or drop network.conv_residual")
    elif net.conv_groups:
        raise StudyError(f"{where('network.conv_groups')}network.conv_groups = {net.conv_groups} normalises the "
                         "layers of a convolutional pathway, but network.conv_channels is []; set "
                         "network.conv_channels (e.g. [16, 32, 64]) or drop network.conv_groups")
    elif net.conv_input_gain:
        raise StudyError(f"{where('network.conv_input_gain')}network.conv_input_gain scales the input of a "
                         "convolutional pathway, but network.conv_channels is []; set network.conv_channels (e.g. "
                         "[16, 32, 64]) or drop network.conv_input_gain")
    if net.hidden_learning == "learned":
        shown = f"{where('network.hidden_learning')}network.hidden_learning = learned "
        if net.kind != "recurrent":
            raise StudyError(f"{shown}trains the fast hidden units of the recurrent network, got network.kind: "
                             f"{net.kind}; set network.hidden_learning: fixed")
        if net.hidden_units != "fast":
            raise StudyError(f"{shown}needs fast hidden units (slow ones are part of the chain's state and learn "
                             "their own loss only); set network.hidden_units: fast or network.hidden_learning: fixed")
        if not net.n_hidden:
            raise StudyError(f"{shown}has no hidden units to train (network.n_hidden = 0); set network.n_hidden "
                             "(e.g. 64) or network.hidden_learning: fixed")
        if study.training.optimizer == "least_squares":
            raise StudyError(f"{shown}needs training.optimizer: adam (the least-squares step fits the visible "
                             "units' readout only); set training.optimizer: adam or network.hidden_learning: fixed")
    if net.hidden_receptive_field:
        shown = f"{where('network.hidden_receptive_field')}network.hidden_receptive_field = {net.hidden_receptive_field} "
        if net.kind != "recurrent" or net.hidden_units != "fast" or not net.n_hidden:
            raise StudyError(f"{shown}restricts the fast hidden units of a recurrent network; set network.kind: "
                             "recurrent, network.hidden_units: fast and network.n_hidden > 0, or drop it")
        if net.hidden_receptive_field % 2 == 0:
            raise StudyError(f"{shown}is even; a receptive field is centred on a pixel, so give an odd size "
                             "(e.g. 7)")
        if study.data.name not in ("mnist", "cifar10", "svhn", "celeba64"):
            raise StudyError(f"{shown}needs an image dataset, got data.name: {study.data.name}; set "
                             "network.hidden_receptive_field: 0")
    if net.feedback != defaults.feedback:
        shown = f"{where('network.feedback')}network.feedback = {net.feedback} "
        if net.hidden_learning != "learned" and not net.conv_channels:
            raise StudyError(f"{shown}carries the visible errors to learned hidden units, but "
                             "network.hidden_learning is fixed and there is no network.conv_channels pathway; set "
                             "network.hidden_learning: learned (with network.hidden_units: fast), or "
                             "network.feedback: transpose")
        if study.training.learning != "local":
            raise StudyError(f"{shown}is a choice of the local rule; training.learning: autograd follows the exact "
                             "gradient (B = W_vh^T); set training.learning: local or network.feedback: transpose")
    if net.feedback_scale == 0 and net.feedback == "random":
        raise StudyError(f"{where('network.feedback_scale')}network.feedback_scale = 0 gives a fixed random B of "
                         "zeros, which carries no error to the hidden units; give a positive scale (e.g. 1), or "
                         "network.feedback: kolen_pollack, whose B starting at 0 = W_vh^T stays the transpose")
    if net.feedback_scale != defaults.feedback_scale and net.feedback == "transpose":
        raise StudyError(f"{where('network.feedback_scale')}network.feedback_scale = {net.feedback_scale:g} sets "
                         "the start of a feedback matrix of its own, but network.feedback is transpose (B = W_vh^T); "
                         "set network.feedback: random or kolen_pollack, or drop network.feedback_scale")
    if net.feedback_decay != defaults.feedback_decay and net.feedback != "kolen_pollack":
        raise StudyError(f"{where('network.feedback_decay')}network.feedback_decay = {net.feedback_decay:g} acts "
                         f"under network.feedback: kolen_pollack only, got network.feedback: {net.feedback}; set "
                         "network.feedback: kolen_pollack or drop network.feedback_decay")


def _check_pathway(study: Study, where) -> None:
    """network.conv_channels: positive integer counts, a recurrent network over images whose chain state is
    the visible units, one run (no replicas), the Adam optimiser, no score anchor."""
    net = study.network
    shown = f"{where('network.conv_channels')}network.conv_channels = {list(net.conv_channels)} "
    if any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in net.conv_channels):
        raise StudyError(f"{shown}must list positive integers, one channel count per level (e.g. [16, 32, 64])")
    wrong = [f"{name} is {value}" for name, value, ok in (
        ("network.kind", net.kind, net.kind == "recurrent"),
        ("data.name", study.data.name, study.data.name in ("mnist", "cifar10", "svhn", "celeba64")),
        ("network.hidden_units", net.hidden_units, net.hidden_units == "fast" or not net.n_hidden),
        ("replicas", study.replicas, study.replicas == 1),
        ("training.optimizer", study.training.optimizer, study.training.optimizer == "adam"),
        ("anchor.weight", study.anchor.weight, not study.anchor.weight)) if not ok]
    if net.conv_input_gain and study.walkback.heating_kernel != "noise":
        raise StudyError(f"{where('network.conv_input_gain')}network.conv_input_gain scales the pathway's input by "
                         "the spread of a noise-heated state, but walkback.heating_kernel is model, whose states "
                         "spread as the model makes them; set walkback.heating_kernel: noise or "
                         "network.conv_input_gain: false")
    if net.conv_groups and any(c % net.conv_groups for c in net.conv_channels):
        raise StudyError(f"{where('network.conv_groups')}network.conv_groups = {net.conv_groups} must divide every "
                         f"entry of network.conv_channels = {list(net.conv_channels)}; pick a common divisor (e.g. "
                         f"{math.gcd(*net.conv_channels)}) or 0 for no normalisation")
    if net.conv_residual and not net.conv_middle:
        raise StudyError(f"{where('network.conv_residual')}network.conv_residual adds skips past the pathway's "
                         "middle layers, but network.conv_middle is 0; set network.conv_middle (e.g. 4) or drop "
                         "network.conv_residual")
    if wrong:
        raise StudyError(f"{shown}adds a convolutional pathway to the visible drive of a recurrent network over "
                         "images and needs network.kind: recurrent, an image dataset, network.hidden_units: fast "
                         "(or network.n_hidden: 0), replicas: 1, training.optimizer: adam and anchor.weight: 0, but "
                         f"{', '.join(wrong)}; set those or network.conv_channels: []")


def _check_least_squares(study: Study, where) -> None:
    shown = f"{where('training.optimizer')}training.optimizer = least_squares "
    if study.network.kind != "recurrent":
        raise StudyError(f"{shown}fits the readout W, b, w_T of the recurrent network, got network.kind: "
                         f"{study.network.kind}; set training.optimizer: adam")
    if study.operator.family != "gaussian":
        raise StudyError(f"{shown}needs the Gaussian operator (its loss is quadratic in the readout), but "
                         f"operator.family is {study.operator.family}; set training.optimizer: adam")
    if study.replicas > 1:
        raise StudyError(f"{shown}is not in the batched replica program (replicas = {study.replicas}); set "
                         "replicas: 1 and run one study per seed, or training.optimizer: adam")
    if study.training.autocast == "fp16":
        raise StudyError(f"{shown}has no fp16 loss scaling; set training.autocast: bf16 or none")


def _check_score_anchor(study: Study, where) -> None:
    anchor = f"{where('anchor.weight')}anchor.weight = {study.anchor.weight:g} "
    if study.operator.family != "gaussian":
        raise StudyError(f"{anchor}anchors the Gaussian operator's mean to the data's Langevin step, but "
                         f"operator.family is {study.operator.family}; set anchor.weight: 0 or "
                         "operator.family: gaussian")
    if study.network.kind != "recurrent":
        raise StudyError(f"{anchor}needs network.kind: recurrent (its noise level is one per unit, which sets the "
                         f"anchor's smoothing), got network.kind: {study.network.kind}; set anchor.weight: 0")
    if study.network.hidden_units == "slow" and study.network.n_hidden:
        raise StudyError(f"{anchor}needs a chain whose state is the visible units, but network.hidden_units is "
                         f"slow with n_hidden = {study.network.n_hidden} (the anchor has no target for hidden "
                         "units); set network.hidden_units: fast or anchor.weight: 0")
    if study.anchor.bandwidth and study.data.name not in TOY_DATASETS:
        raise StudyError(f"{where('anchor.bandwidth')}anchor.bandwidth = {study.anchor.bandwidth:g} needs a 2-D toy "
                         f"dataset (a kernel density of {study.data.name} images is not a density model), got "
                         f"data.name: {study.data.name}; set anchor.bandwidth: 0")
    if study.anchor.wide and not study.anchor.bandwidth:
        raise StudyError(f"{where('anchor.wide')}anchor.wide = {study.anchor.wide:g} moves anchor starts away from "
                         "the data, where only the kernel density's step gives them a target; set anchor.bandwidth "
                         "(e.g. 0.07) or anchor.wide: 0")
    if not study.anchor.noise:
        raise StudyError(f"{where('anchor.noise')}anchor.noise = 0 leaves the anchor no noise to denoise; give the "
                         "widest smoothing in data units (e.g. the distance between modes), or set anchor.weight: 0")


def replace_in(study: Study, dotted_key: str, value) -> Study:
    """A copy of ``study`` with ``dotted_key`` (e.g. ``"operator.alpha"``) set to ``value``, validated.

    A section key takes a mapping (or a config object) and sets just the keys it names.
    """
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    values = study_to_dict(study)
    _set(values, dotted_key, value, "")
    study = _build(Study, values)
    _check_joined_keys(study, lambda path: "")
    return study


# rule: (test, allowed range with {} for the key's name, what an integer field must be)
_RULES = {
    "positive": (lambda x: x > 0, "{} > 0", "a positive integer"),
    "non_negative": (lambda x: x >= 0, "{} >= 0", "a non-negative integer"),
    "unit_open_closed": (lambda x: 0 < x <= 1, "0 < {} <= 1", "an integer in (0, 1]"),
    "unit_closed_open": (lambda x: 0 <= x < 1, "0 <= {} < 1", "an integer in [0, 1)"),
    "at_least_one": (lambda x: x >= 1, "{} >= 1", "an integer >= 1"),
    "above_one": (lambda x: x > 1, "{} > 1", "an integer > 1"),
}


def _join(prefix, key) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _read_yaml(text, source, lines) -> dict:
    """The top-level mapping as nested dicts; ``lines`` gets the line of every key path."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return {}
        if not isinstance(node, yaml.MappingNode):
            found = "a list" if isinstance(node, yaml.SequenceNode) else f"the value {loader.construct_object(node)!r}"
            raise StudyError(f"{source}:{node.start_mark.line + 1}: a study must be a mapping of keys "
                             f"(e.g. 'training:' with 'steps: 2000' under it), not {found}")
        return _mapping_node(loader, node, "", source, lines)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise StudyError(f"{where}: not valid YAML: {getattr(error, 'problem', None) or error}") from None
    finally:
        loader.dispose()


def _mapping_node(loader, node, prefix, source, lines) -> dict:
    values = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        path = _join(prefix, key)
        line = key_node.start_mark.line + 1
        if path in lines:
            raise StudyError(f"{source}:{line}: duplicate key '{path}' (first given on line {lines[path]})")
        lines[path] = line
        if isinstance(value_node, yaml.MappingNode):
            values[key] = _mapping_node(loader, value_node, path, source, lines)
        else:
            values[key] = loader.construct_object(value_node, deep=True)
    return values


def _check_section(cls, values: dict, prefix: str, where) -> dict:
    """Validated copy of ``values`` (only the keys given) for config class ``cls``; ``where(path)`` places a key."""
    hints = get_type_hints(cls)
    rules = {f.name: f.metadata.get("check") for f in fields(cls)}
    checked = {}
    for key, value in values.items():
        path = _join(prefix, key)
        if key not in rules:
            raise StudyError(where(path) + _unknown_key(cls, key, path))
        kind = hints[key]
        if is_dataclass(kind):
            if not isinstance(value, dict):
                keys = ", ".join(sorted(f.name for f in fields(kind)))
                raise StudyError(f"{where(path)}{path} = {value!r} is not a section (expected a mapping of keys: {keys})")
            checked[key] = _check_section(kind, value, path, where)
        else:
            checked[key] = _check_value(kind, rules[key], value, path, where(path))
    return checked


def _unknown_key(cls, key, path) -> str:
    if path in MOVED_KEYS:
        return f"'{path}' has moved: write it as '{MOVED_KEYS[path]}' (section {MOVED_KEYS[path].split('.')[0]}:)"
    names = [f.name for f in fields(cls)]
    nearest = difflib.get_close_matches(str(key), names, n=1)
    hint = f"; did you mean '{nearest[0]}'?" if nearest else ""
    return f"unknown key '{path}'{hint} (valid keys: {', '.join(sorted(names))})"


def _check_corrector_bands(bands: tuple, where) -> None:
    """evaluation.corrector_bands: [T_high, T_low, n] triplets, T_high > T_low >= 0 (T_high may be .inf),
    n a non-negative integer, no two bands sharing a temperature."""
    form = "write each band as [T_high, T_low, steps] with T_high > T_low >= 0 and steps a non-negative integer"
    for index, band in enumerate(bands):
        shown = f"{where('evaluation.corrector_bands')}evaluation.corrector_bands[{index}] = {band!r}"
        if not isinstance(band, (list, tuple)) or len(band) != 3:
            raise StudyError(f"{shown} is not a [T_high, T_low, steps] triplet; {form}")
        high, low, steps = (_as_float(band[0]), _as_float(band[1]), band[2])
        if high is None or low is None or math.isnan(high) or not math.isfinite(low) or not high > low >= 0:
            raise StudyError(f"{shown} does not give T_high > T_low >= 0; {form}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise StudyError(f"{shown} has steps {steps!r}; {form}")
    spans = sorted((_as_float(band[0]), _as_float(band[1]), index) for index, band in enumerate(bands))
    for (high, _, first), (_, low, second) in zip(spans, spans[1:]):
        if low < high:
            raise StudyError(f"{where('evaluation.corrector_bands')}evaluation.corrector_bands[{first}] and "
                             f"[{second}] overlap (a level would take two counts); make each band's T_low at least "
                             "the next colder band's T_high")


def _check_value(kind, rule, value, path, where):
    shown = f"{where}{path} = {value!r}"
    if kind is tuple:
        if not isinstance(value, (list, tuple)):
            raise StudyError(f"{shown} is not a list (expected e.g. [1.0e-3, 3.0e-3])")
        return tuple(value)
    if isinstance(rule, tuple):
        if value not in rule:
            raise StudyError(f"{shown} is not one of: {', '.join(rule)}")
        return value
    if kind is bool or kind is str:
        if not isinstance(value, kind):
            raise StudyError(f"{shown} is not a {'boolean (expected true or false)' if kind is bool else 'string'}")
        return value
    test, allowed, integer = _RULES[rule] if rule else (lambda x: True, None, "an integer")
    allowed = allowed and allowed.format(path.rpartition(".")[2])
    if kind is int:
        if isinstance(value, float) and value.is_integer():
            raise StudyError(f"{shown} is not an integer (write {int(value)}, without a decimal point; expected {integer})")
        if isinstance(value, bool) or not isinstance(value, int):
            raise StudyError(f"{shown} is not an integer (expected {integer})")
        number = value
    else:
        number = _as_float(value)
        if number is None or not math.isfinite(number):
            raise StudyError(f"{shown} is not a finite number (expected a number{' with ' + allowed if allowed else ''})")
    if not test(number):
        raise StudyError(f"{shown} is out of range (allowed: {allowed})")
    return number


def _as_float(value) -> float | None:
    """ints, floats, and strings such as '1e-3' (which PyYAML, following YAML 1.1, leaves as text)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        return float(value)
    except (ValueError, OverflowError):
        return None


def _set(values: dict, dotted_key: str, value, where: str) -> None:
    """Validate ``value`` for ``dotted_key`` and merge it into the nested ``values``."""
    *sections, leaf = dotted_key.split(".")
    cls, target, prefix = Study, values, ""
    for part in sections:
        prefix = _join(prefix, part)
        kind = get_type_hints(cls).get(part)
        if kind is None:
            raise StudyError(where + _unknown_key(cls, part, prefix))
        if not is_dataclass(kind):
            raise StudyError(f"{where}{prefix} is a value, not a section, so '{dotted_key}' names nothing")
        cls, target = kind, target.setdefault(part, {})
    _merge(target, _check_section(cls, {leaf: value}, prefix, lambda path: where))


def _merge(target: dict, new: dict) -> None:
    for key, value in new.items():
        if isinstance(value, dict):
            _merge(target.setdefault(key, {}), value)
        else:
            target[key] = value


def _build(cls, values: dict):
    hints = get_type_hints(cls)
    return cls(**{k: _build(hints[k], v) if is_dataclass(hints[k]) else v for k, v in values.items()})


def key_reference() -> str:
    """Every study key as Markdown (docs/study_keys.md is this text): one table per section with each key's
    type, default and allowed values, under the section's own description."""
    rules = {"positive": "> 0", "non_negative": ">= 0", "unit_open_closed": "in (0, 1]", "unit_closed_open": "in [0, 1)",
             "at_least_one": ">= 1", "above_one": "> 1"}
    lines = ["# Study keys", "",
             "Every key a study YAML file may give, with its default. Generated from `asymnet/study.py` by "
             "`python -m asymnet.study > docs/study_keys.md`; a test fails when this file is out of date. A key "
             "is set in the file (`training:` then `steps: 2000` under it) or on the command line "
             "(`--set training.steps=2000`).", ""]
    if MOVED_KEYS:
        lines += ["Keys that moved (a study that gives the old name is told the new one; an older run log is read "
                  "with them moved):", ""] + [f"- `{old}` is now `{new}`" for old, new in MOVED_KEYS.items()] + [""]

    def table(cls, prefix: str) -> list[str]:
        hints = get_type_hints(cls)
        rows = ["| key | type | default | allowed |", "| --- | --- | --- | --- |"]
        for item in fields(cls):
            if is_dataclass(hints[item.name]):
                continue
            default = item.default if item.default_factory is MISSING else item.default_factory()
            rule = item.metadata.get("check")
            allowed = ", ".join(rule) if isinstance(rule, tuple) else rules.get(rule, "")
            kind = "list" if hints[item.name] is tuple else hints[item.name].__name__
            rows.append(f"| `{_join(prefix, item.name)}` | {kind} | `{json.dumps(list(default) if isinstance(default, tuple) else default)}` "
                        f"| {allowed} |")
        return rows

    lines += ["## Top level", "", " ".join(Study.__doc__.split()), ""] + table(Study, "") + [""]
    hints = get_type_hints(Study)
    for item in fields(Study):
        if is_dataclass(hints[item.name]):
            section = hints[item.name]
            lines += [f"## `{item.name}:`", "", " ".join((section.__doc__ or "").split()), ""] + table(section, item.name) + [""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(key_reference(), end="")

"""What a trained model is judged by: the held-out bound, detailed balance, weight symmetry, samples and
their quality figures, the classifier judge of MNIST images.

The training command calls these during training (symmetry, bound, EP) and at its end
(:func:`final_evaluation`); the measurement commands reuse the same scoring, so a figure means the same
thing wherever it is logged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from asymnet import plasticity, walkback
from asymnet.classifier import WEIGHTS_NAME, load_classifier, save_classifier, to_unit_interval, train_classifier
from asymnet.data import Dataset, find_data_dir
from asymnet.data.mnist import load_mnist
from asymnet.dequantization import bits_per_dim
from asymnet.metrics import balance, quality
from asymnet.metrics.symmetry import jacobian_symmetry, weight_symmetry
from asymnet.model import (Model, cooling_corrector, eval_temperatures, generation_temperatures, sampling_autocast,
                           sampling_generator)
from asymnet.networks import RecurrentNetwork
from asymnet.runlog import RunLog
from asymnet.study import Study


CPU_CHUNK = 250
"""Rows per network call of the evaluation's coolings and bounds on a CPU: a 1,000-row batch of the
convolutional pathway's 28 x 28 layers outgrows the caches and costs more per row than 250-row chunks
(studies/mnist_stdp_experiments.md, "Corrector steps, and the 20 minutes"); a GPU takes each batch whole."""


def chunks(n: int, device) -> list[int]:
    """The row counts, in order, that an evaluation of n rows runs in on ``device``."""
    size = n if torch.device(device).type == "cuda" else CPU_CHUNK
    return [min(size, n - start) for start in range(0, n, size)]


def held_out_bound(model: Model, study: Study, data: Dataset, device, dtype, step: int) -> float:
    """Mean eq. 5 bound on the first n_bound held-out examples, nats per example (fresh RNG per step), in
    :func:`chunks` drawn one after the other from that RNG."""
    gen = torch.Generator().manual_seed(study.seed * 1_000_003 + step)
    x = data.batch(data.test[: study.evaluation.n_bound], gen, dtype).to(device)
    bounds = []
    for rows in x.split(chunks(len(x), device)):
        s0 = walkback.settle_hidden(model.network, model.operator, rows, study.walkback.settle_steps,
                                    sampling_generator(gen, device))
        bounds.append(walkback.variational_bound(model.network, model.operator, model.p_star, s0,
                                                 eval_temperatures(model, study), sampling_generator(gen, device),
                                                 model.heating))
    return torch.cat(bounds).mean().item()


def detailed_balance(model, study, data, device, n_chains: int, n_steps: int, burn_in: int,
                     generator: torch.Generator, n_batches: int = 20) -> dict[str, float]:
    """EP and relative irreversibility of the T = 1 chain of ``model`` (asymnet.model.Model), started from
    generated samples; H on the 8-bit scale of the visible units for images (asymnet.measure.EP_CONVENTION)."""
    on = sampling_generator(generator, device)
    with torch.no_grad(), sampling_autocast(study, device):
        s0 = walkback.generate(model.network, model.operator, model.p_star, eval_temperatures(model, study),
                               n_chains, on, corrector=cooling_corrector(model, study))
    offset = data.n_visible * math.log(1.0 / data.rescaling.scale) if data.rescaling is not None else 0.0
    estimate = balance.entropy_production(model.network, model.operator, s0, n_steps, burn_in,
                                          n_batches=min(n_batches, n_steps), generator=on, entropy_offset=offset)
    return {"ep": estimate.ep, "ep_stderr": estimate.ep_stderr,
            "conditional_entropy": estimate.conditional_entropy,
            "relative_irreversibility": estimate.relative_irreversibility,
            "relative_irreversibility_stderr": estimate.relative_irreversibility_stderr}


def detailed_balance_figures(model: Model, study: Study, data: Dataset, device, step: int) -> dict[str, float]:
    """EP and relative irreversibility of the T = 1 chain (the convention of asymnet.measure) from a fixed
    evaluation seed per step, beside the symmetry figures; empty when evaluation.ep_chains is 0."""
    cfg = study.evaluation
    if cfg.ep_chains == 0:
        return {}
    gen = torch.Generator().manual_seed(study.seed + 7907 + step)
    figures = detailed_balance(model, study, data, device, cfg.ep_chains, cfg.ep_steps, cfg.ep_burn_in, gen, 10)
    return {name: figures[name] for name in ("ep", "ep_stderr", "relative_irreversibility")}


def log_symmetry(log: RunLog, model: Model, data: Dataset, dtype, step: int, feedback: bool = False,
                 pathway: bool = False) -> None:
    """cos(W, W^T) and the norms of W's symmetric and antisymmetric parts, with a W snapshot; for an
    MLP the same figures of its Jacobian dF_mu/ds at 64 held-out points, from 16 random probes each.
    ``feedback`` (learned hidden units under the local rule): also feedback_alignment, cos(B, W_vh^T) of the
    feedback synapses B (plasticity.feedback_alignment), the same symmetry question asked of that pathway;
    ``pathway`` (a convolutional pathway under the local rule): pathway_alignment, cos(B, K) over its kernels."""
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
    if feedback:
        log.append("feedback_alignment", step, plasticity.feedback_alignment(network))
    if pathway:
        log.append("pathway_alignment", step, network.pathway.feedback_alignment())


def toy_mmd_null(study: Study, data: Dataset, reference: torch.Tensor) -> torch.Tensor:
    """The end of training's exact draws of a toy: MMD^2 (quality.NULL_DRAWS,) of that many exact draws of
    len(reference) points against ``reference`` (the test points the samples are scored against), from the
    study's seed + 7877 stream. Their mean is ``mmd_baseline``; the samples' rank among them ``mmd_p_value``."""
    gen = torch.Generator().manual_seed(study.seed + 7877)
    return quality.toy_null(data.toy, reference, len(reference), quality.NULL_DRAWS, gen)["mmd"]


def toy_mmd_figures(study: Study, data: Dataset, reference: torch.Tensor, mmd: float | None) -> dict[str, float]:
    """The end of training's ``mmd_baseline`` of a toy, the mean of :func:`toy_mmd_null`, and, given the
    samples' ``mmd``, its ``mmd_p_value``: one draw of the samples scatters widely
    (studies/prop1/cooling_spread.py), so its rank among the exact draws says what the ratio cannot."""
    null = toy_mmd_null(study, data, reference)
    figures = {"mmd_baseline": null.mean().item()}
    if mmd is not None:
        figures["mmd_p_value"] = quality.null_p_value(mmd, null)
    return figures


IMAGE_FIGURES = ("confident_fraction", "label_entropy", "frechet_distance", "precision", "recall",
                 "nearest_train_distance", "nearest_train_distance_p05")
"""The figures :meth:`ImageScorer.figures` gives and a run logs under /eval for MNIST (docs/log.md)."""


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


def generate_visible(model: Model, study: Study, data: Dataset, device) -> torch.Tensor:
    """n_samples generated visible states (n, n_visible) by cooling from p*, from a fixed evaluation seed, in
    :func:`chunks` drawn one after the other, their network calls under :func:`sampling_autocast`."""
    gen = torch.Generator().manual_seed(study.seed + 7919)
    with sampling_autocast(study, device):
        states = [walkback.generate(model.network, model.operator, model.p_star, generation_temperatures(model, study),
                                    rows, sampling_generator(gen, device), final_mean=study.evaluation.final_mean,
                                    corrector=cooling_corrector(model, study))[:, : data.n_visible].cpu()
                  for rows in chunks(study.evaluation.n_samples, device)]
    return torch.cat(states)


@dataclass(frozen=True)
class ImageScorer:
    """The MNIST classifier, the features of the reference images (the test images after the first
    n_samples) with their k-nearest-neighbour radii, and the training images (N, 784) on the [0, 1] scale,
    computed once per run."""

    classifier: torch.nn.Module
    reference_features: torch.Tensor
    reference_radii: torch.Tensor
    training_images: torch.Tensor

    @classmethod
    def build(cls, classifier: torch.nn.Module, data: Dataset, n_samples: int) -> "ImageScorer":
        with torch.no_grad():
            features = classifier.features(data.test[n_samples:].float() / 255.0)
        return cls(classifier, features, quality.knn_radii(features), data.train.float() / 255.0)

    def figures(self, images: torch.Tensor, prefix: str = "") -> dict[str, float]:
        """IMAGE_FIGURES of images (n, 784) in [0, 1] (clamped): the classifier figures, precision and recall
        against the reference images, and the distance to the nearest training image (the images the run
        trained on: the study's data.n_train)."""
        images = images.clamp(0, 1).float()
        scores = quality.classifier_scores(self.classifier, images, self.reference_features,
                                           reference_radii=self.reference_radii)
        scores.update(quality.memorisation_figures(images, self.training_images))
        return {prefix + name: scores[name] for name in IMAGE_FIGURES}


def has_classifier(data: Dataset) -> bool:
    """Whether the classifier figures apply: the MNIST classifier scores MNIST-shaped images only."""
    return data.name == "mnist"


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

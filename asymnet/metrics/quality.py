"""Sample quality: kernel two-sample distance for toys, classifier figures for images."""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch


def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    """Total-variation distance 0.5 sum |p - q| between two histograms of fractions (each sums to 1)."""
    if p.shape != q.shape:
        raise ValueError(f"total_variation needs histograms over the same regions, got shapes {tuple(p.shape)} "
                         f"and {tuple(q.shape)}")
    return 0.5 * (p.to(torch.float64) - q.to(torch.float64)).abs().sum().item()


def drift_agreement(drift: torch.Tensor, exact: torch.Tensor) -> dict[str, float]:
    """How a learned drift (m, d) matches an exact one at the same m points: ``drift_slope``, the least-squares
    slope <drift, exact> / <exact, exact> (1: right strength; below 1 the chain's modes come out wider), and
    ``drift_relative_error`` ||drift - exact|| / ||exact|| (norms over all points and coordinates)."""
    drift, exact = drift.to(torch.float64), exact.to(torch.float64)
    norm2 = exact.pow(2).sum()
    return {"drift_slope": ((drift * exact).sum() / norm2).item(),
            "drift_relative_error": ((drift - exact).pow(2).sum() / norm2).sqrt().item()}


def mmd2_rbf(x: torch.Tensor, y: torch.Tensor, bandwidth: float | None = None) -> float:
    """Squared maximum mean discrepancy with an RBF kernel (Gretton et al. 2012), biased V-statistic.

    MMD^2 = mean k(x, x') + mean k(y, y') - 2 mean k(x, y), with k(a, b) = exp(-|a - b|^2 / (2 h^2)).
    The biased form keeps the diagonal, so two independent draws from one distribution give a small
    positive value (about (2/n)(1 - E k)), which is what ``mmd_baseline`` reports. ``bandwidth`` h
    defaults to the median heuristic: the median pairwise distance over the pooled samples.

    x: (n, d), y: (m, d). Returns a float.
    """
    x = x.to(torch.float64).flatten(1)
    y = y.to(torch.float64).flatten(1)
    pooled = torch.cat([x, y])
    sq = torch.cdist(pooled, pooled).pow(2)
    if bandwidth is None:
        n = pooled.shape[0]
        off_diagonal = sq[~torch.eye(n, dtype=torch.bool)]
        bandwidth = off_diagonal.median().sqrt().item()
    k = torch.exp(-sq / (2.0 * bandwidth**2))
    n = x.shape[0]
    return (k[:n, :n].mean() + k[n:, n:].mean() - 2.0 * k[:n, n:].mean()).item()


NULL_DRAWS = 20
"""How many exact draws from a toy's law set its MMD^2 baseline and p-value (about 1.3 s each at 2,000
points on one core)."""


def mmd2_null(draws, reference: torch.Tensor) -> torch.Tensor:
    """The law of ``mmd2_rbf(sample, reference)`` when the sampler is exact: the figure of each of
    ``draws``, independent draws from the data's law of as many points as the samples scored, against the
    same ``reference``. Its mean is the MMD^2 baseline: what an exact sampler scores on average, so that an
    exact sampler's ratio to it averages 1. A single data-vs-data draw is no baseline: on the spiral at
    2,000 points its spread is about 70 % of its mean (README, "A baseline from many draws"). Returns a
    float64 tensor (len(draws),)."""
    if len(draws) < 1:
        raise ValueError("mmd2_null needs at least one draw from the data's law, got none")
    return torch.tensor([mmd2_rbf(draw, reference) for draw in draws], dtype=torch.float64)


def toy_null(toy, reference: torch.Tensor, n_points: int, n_draws: int,
             generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The toy figures of n_draws exact draws of n_points each from ``toy``'s law, scored as a sampler's
    states are: MMD^2 against ``reference`` (``mmd2_null``) and the occupancy TV against the law's own
    occupancy. What an exact sampler scores; their means are the toys' baselines. Returns {"mmd": (n_draws,),
    "occupancy_tv": (n_draws,)}, float64."""
    draws = [toy.sample(n_points, generator).to(torch.float64) for _ in range(n_draws)]
    occupancy = [total_variation(toy.occupancy(d), toy.reference_occupancy()) for d in draws]
    return {"mmd": mmd2_null(draws, reference), "occupancy_tv": torch.tensor(occupancy, dtype=torch.float64)}


def null_p_value(value: float, null: torch.Tensor) -> float:
    """Monte-Carlo p-value of a figure under the law sampled by ``null`` (larger is worse):
    (1 + #{null >= value}) / (1 + len(null)), valid at every size (the Monte-Carlo test of Davison &
    Hinkley 1997, ch. 4); it cannot go below 1 / (1 + len(null))."""
    return (1.0 + (null >= value).sum().item()) / (1.0 + null.numel())


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """Fréchet (2-Wasserstein) distance between Gaussians N(mu1, cov1) and N(mu2, cov2), as in FID.

    d^2 = |mu1 - mu2|^2 + tr(cov1 + cov2 - 2 (cov1 cov2)^{1/2}) (Dowson & Landau 1982; Heusel et al.
    2017). The matrix square root comes from scipy.linalg.sqrtm; its tiny imaginary part from round-off
    is dropped, and a singular product is regularised by adding 1e-6 I to both covariances.

    mu: (d,), cov: (d, d), numpy arrays or CPU tensors. Returns the squared distance, a float.
    """
    mu1, mu2 = (np.atleast_1d(np.asarray(m, dtype=np.float64)) for m in (mu1, mu2))
    cov1, cov2 = (np.atleast_2d(np.asarray(c, dtype=np.float64)) for c in (cov1, cov2))
    if not (mu1.shape == mu2.shape and cov1.shape == cov2.shape == mu1.shape * 2):
        raise ValueError(
            f"frechet_distance needs mu (d,) and cov (d, d) for both Gaussians, got "
            f"{mu1.shape}, {cov1.shape}, {mu2.shape}, {cov2.shape}"
        )
    covmean = scipy.linalg.sqrtm(cov1 @ cov2)
    if not np.isfinite(covmean).all():
        offset = 1e-6 * np.eye(len(mu1))
        covmean = scipy.linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * np.trace(covmean.real))


def feature_statistics(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and unbiased covariance (d, d), float64, of features (n, d)."""
    f = features.detach().to(torch.float64).cpu().numpy()
    return f.mean(axis=0), np.cov(f, rowvar=False)


def label_entropy(histogram) -> float:
    """Entropy in nats of the distribution given by label counts (10,): ln 10 when every class is equally frequent."""
    p = np.asarray(histogram, dtype=np.float64)
    p = p[p > 0] / p.sum()
    return float(-(p * np.log(p)).sum())


@torch.no_grad()
def classifier_scores(
    classifier, images: torch.Tensor, reference_features: torch.Tensor | None = None, batch_size: int = 1000
) -> dict:
    """Classifier figures of generated MNIST digits.

    classifier: maps images (n, 784) in [0, 1] to logits (n, 10) and has ``features(images)`` (n, d),
    e.g. ``asymnet.classifier.load_classifier(data_dir)``. images: (N, 784) in [0, 1].
    reference_features: (M, d) features of real digits, e.g. ``classifier.features(test_images)``.

    Returns a dict:
      confident_fraction: fraction of images whose largest softmax probability exceeds 0.9;
      label_histogram: list of 10 counts of predicted labels;
      label_entropy: entropy of that histogram in nats (ln 10 ~ 2.303 = all classes equally covered);
      frechet_distance: Fréchet distance between Gaussians fitted to the features of ``images`` and to
        ``reference_features`` (FID computed with this classifier); present only when they are given.
    """
    if images.ndim != 2 or images.shape[1] != 784:
        raise ValueError(f"classifier_scores expects images of shape (N, 784), got {tuple(images.shape)}")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError(
            f"classifier_scores expects pixel values in [0, 1], found [{images.min().item():.3g}, "
            f"{images.max().item():.3g}]; clamp or rescale the samples first"
        )
    logits = torch.cat([classifier(x) for x in images.split(batch_size)])
    confidence, predicted = logits.softmax(dim=1).max(dim=1)
    histogram = torch.bincount(predicted, minlength=10)
    scores = {
        "confident_fraction": (confidence > 0.9).double().mean().item(),
        "label_histogram": histogram.tolist(),
        "label_entropy": label_entropy(histogram.numpy()),
    }
    if reference_features is not None:
        features = torch.cat([classifier.features(x) for x in images.split(batch_size)])
        scores["frechet_distance"] = frechet_distance(
            *feature_statistics(features), *feature_statistics(reference_features)
        )
    return scores

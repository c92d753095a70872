"""Sample quality: kernel two-sample distance for toys; for images the classifier figures, precision and recall
of k-nearest-neighbour manifolds, and the distance of samples to their nearest training image."""

from __future__ import annotations

import math

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
    2017). The trace of the matrix square root comes from two symmetric eigendecompositions
    (:func:`_trace_sqrt_product`), exact for singular covariances too.

    mu: (d,), cov: (d, d), numpy arrays or CPU tensors. Returns the squared distance, a float.
    """
    mu1, mu2 = (np.atleast_1d(np.asarray(m, dtype=np.float64)) for m in (mu1, mu2))
    cov1, cov2 = (np.atleast_2d(np.asarray(c, dtype=np.float64)) for c in (cov1, cov2))
    if not (mu1.shape == mu2.shape and cov1.shape == cov2.shape == mu1.shape * 2):
        raise ValueError(
            f"frechet_distance needs mu (d,) and cov (d, d) for both Gaussians, got "
            f"{mu1.shape}, {cov1.shape}, {mu2.shape}, {cov2.shape}"
        )
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * _trace_sqrt_product(cov1, cov2))


def _trace_sqrt_product(cov1: np.ndarray, cov2: np.ndarray) -> float:
    """tr((cov1 cov2)^{1/2}) of two covariance matrices, as the sum of the square roots of the eigenvalues
    of the symmetric A^{1/2} cov2 A^{1/2}, A = cov1 (similar to cov1 cov2, so the same eigenvalues): two
    symmetric eigendecompositions, exact for singular covariances too (a sample's features often span
    fewer dimensions than they have), where a general matrix square root warns and loses accuracy."""
    values, vectors = scipy.linalg.eigh(cov1)
    root = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    inner = scipy.linalg.eigvalsh(root @ cov2 @ root)
    return float(np.sqrt(np.clip(inner, 0.0, None)).sum())


def feature_statistics(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and unbiased covariance (d, d), float64, of features (n, d)."""
    f = features.detach().to(torch.float64).cpu().numpy()
    return f.mean(axis=0), np.cov(f, rowvar=False)


def label_entropy(histogram) -> float:
    """Entropy in nats of the distribution given by label counts (10,): ln 10 when every class is equally frequent."""
    p = np.asarray(histogram, dtype=np.float64)
    p = p[p > 0] / p.sum()
    return float(-(p * np.log(p)).sum())


NEIGHBOURHOOD_SIZE = 3
"""k of the k-nearest-neighbour manifolds behind precision and recall (Kynkäänniemi et al. 2019 use k = 3)."""

CHUNK_ENTRIES = 2**22
"""The most distances one torch.cdist call holds (4,194,304 float64 values, 32 MiB): 1,000 samples against
60,000 training images take 15 calls, never the 480 MB of the whole matrix."""


def _check_point_set(caller: str, what: str, points: torch.Tensor) -> None:
    if points.ndim != 2 or len(points) == 0:
        raise ValueError(f"{caller} needs {what} of shape (n, d) with n >= 1, got {tuple(points.shape)}")


def _check_k(caller: str, k: int, counts: dict[str, int]) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{caller} needs a positive integer k, got {k!r}")
    for what, n in counts.items():
        if k >= n:
            raise ValueError(f"{caller} needs more than k = {k} {what} (each point's k-th nearest neighbour among "
                             f"the others), got {n}; lower k or score more points")


def _row_chunk(n_columns: int) -> int:
    return max(1, CHUNK_ENTRIES // max(1, n_columns))


def knn_radii(points: torch.Tensor, k: int = NEIGHBOURHOOD_SIZE) -> torch.Tensor:
    """The radius of each point's k-nearest-neighbour ball: the Euclidean distance from each row of ``points``
    (n, d) to its k-th nearest other row (Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric for
    Assessing Generative Models", sec. 2: NN_k). The row itself is left out by its index, so an exact
    duplicate of a point is one of its neighbours, at distance 0; ties between neighbours need no rule (the
    k-th smallest distance is the same whichever tied neighbour holds rank k). Distances from torch.cdist in
    float64, row chunks of at most CHUNK_ENTRIES. Needs 1 <= k < n. Returns (n,) float64."""
    _check_point_set("knn_radii", "points", points)
    _check_k("knn_radii", k, {"points": len(points)})
    points = points.detach().to(torch.float64)
    step = _row_chunk(len(points))
    radii = []
    for start in range(0, len(points), step):
        distances = torch.cdist(points[start: start + step], points)
        rows = torch.arange(len(distances))
        distances[rows, start + rows] = math.inf
        radii.append(distances.topk(k, dim=1, largest=False).values[:, -1])
    return torch.cat(radii)


def manifold_coverage(probes: torch.Tensor, manifold: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """Whether each row of ``probes`` (n, d) lies in the union of the closed balls centred at the rows of
    ``manifold`` (m, d) with ``radii`` (m,): f(phi) = 1 when ||phi - phi'|| <= radius(phi') for at least one
    phi' (Kynkäänniemi et al. 2019, eq. 1; a probe on a ball's surface is inside). Distances from
    torch.cdist in float64, column chunks of at most CHUNK_ENTRIES. Returns a bool tensor (n,)."""
    probes = probes.detach().to(torch.float64)
    manifold, radii = manifold.detach().to(torch.float64), radii.to(torch.float64)
    inside = torch.zeros(len(probes), dtype=torch.bool)
    step = _row_chunk(len(probes))
    for start in range(0, len(manifold), step):
        distances = torch.cdist(probes, manifold[start: start + step])
        inside |= (distances <= radii[start: start + step]).any(dim=1)
    return inside


def precision_recall(real_features: torch.Tensor, fake_features: torch.Tensor, k: int = NEIGHBOURHOOD_SIZE,
                     real_radii: torch.Tensor | None = None) -> dict[str, float]:
    """Improved precision and recall of Kynkäänniemi et al. 2019 ("Improved Precision and Recall Metric for
    Assessing Generative Models", NeurIPS, eqs. 1-3): each set's manifold is the union of balls centred at its
    points, each of radius the distance to that point's k-th nearest neighbour in the same set
    (:func:`knn_radii`: the point itself excluded, duplicates counted, closed balls);

      precision: the fraction of generated features inside the real manifold (are the samples realistic?);
      recall: the fraction of real features inside the generated manifold (is the data's variety covered?).

    Both lie in [0, 1]; a set against itself scores 1 and 1. Both depend on the two sets' sizes (a bigger set
    has smaller balls): compare figures computed at the same sizes, e.g. a model's samples with as many test
    images, each against the same real features.

    real_features: (m, d); fake_features: (n, d); k: 1 <= k < min(m, n). ``real_radii`` (m,): the real
    manifold's radii knn_radii(real_features, k), when already computed (a scorer with fixed real features
    computes them once). Returns {"precision": float, "recall": float}.
    """
    for what, features in (("real features", real_features), ("generated features", fake_features)):
        _check_point_set("precision_recall", what, features)
    if real_features.shape[1] != fake_features.shape[1]:
        raise ValueError(f"precision_recall needs real and generated features of the same dimension, got "
                         f"{tuple(real_features.shape)} and {tuple(fake_features.shape)}")
    _check_k("precision_recall", k, {"real points": len(real_features), "generated points": len(fake_features)})
    if real_radii is None:
        real_radii = knn_radii(real_features, k)
    elif real_radii.shape != (len(real_features),):
        raise ValueError(f"precision_recall needs one radius per real feature, ({len(real_features)},), "
                         f"got real_radii of shape {tuple(real_radii.shape)}")
    precision = manifold_coverage(fake_features, real_features, real_radii)
    recall = manifold_coverage(real_features, fake_features, knn_radii(fake_features, k))
    return {"precision": precision.double().mean().item(), "recall": recall.double().mean().item()}


def nearest_distance(points: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """The Euclidean distance from each row of ``points`` (n, d) to its nearest row of ``reference`` (m, d),
    min_j ||x_i - r_j||. torch.cdist in float64 over chunks of reference rows (at most CHUNK_ENTRIES
    distances at once); a copy of a reference row scores 0 to round-off (below 1e-6 for MNIST images).
    Returns (n,) float64."""
    for what, tensor in (("points", points), ("reference points", reference)):
        _check_point_set("nearest_distance", what, tensor)
    if points.shape[1] != reference.shape[1]:
        raise ValueError(f"nearest_distance needs points and reference points of the same dimension, got "
                         f"{tuple(points.shape)} and {tuple(reference.shape)}")
    points = points.detach().to(torch.float64)
    nearest = torch.full((len(points),), math.inf, dtype=torch.float64)
    step = _row_chunk(len(points))
    for start in range(0, len(reference), step):
        chunk = reference[start: start + step].detach().to(torch.float64)
        nearest = torch.minimum(nearest, torch.cdist(points, chunk).min(dim=1).values)
    return nearest


def memorisation_figures(images: torch.Tensor, training_images: torch.Tensor) -> dict[str, float]:
    """The copying check: each image's pixel-space distance to its nearest training image
    (:func:`nearest_distance`; images (n, 784) and training images (N, 784) on the [0, 1] scale, so the
    distance lies in [0, 28]), summarised over the images as ``nearest_train_distance``, the median, and
    ``nearest_train_distance_p05``, the 5th percentile (torch.quantile: linear interpolation between order
    statistics). The reference is the same figure of held-out test images: samples nearer the training images
    than test images are (above all in the low tail) are copies rather than new digits."""
    distances = nearest_distance(images, training_images)
    p05, median = torch.quantile(distances, torch.tensor([0.05, 0.5], dtype=torch.float64)).tolist()
    return {"nearest_train_distance": median, "nearest_train_distance_p05": p05}


@torch.no_grad()
def classifier_scores(
    classifier, images: torch.Tensor, reference_features: torch.Tensor | None = None, batch_size: int = 1000,
    reference_radii: torch.Tensor | None = None,
) -> dict:
    """Classifier figures of generated MNIST digits.

    classifier: maps images (n, 784) in [0, 1] to logits (n, 10) and has ``features(images)`` (n, d),
    e.g. ``asymnet.classifier.load_classifier(data_dir)``. images: (N, 784) in [0, 1].
    reference_features: (M, d) features of real digits, e.g. ``classifier.features(test_images)``;
    reference_radii: their k-nearest-neighbour radii ``knn_radii(reference_features)``, when already computed.

    Returns a dict:
      confident_fraction: fraction of images whose largest softmax probability exceeds 0.9;
      label_histogram: list of 10 counts of predicted labels;
      label_entropy: entropy of that histogram in nats (ln 10 ~ 2.303 = all classes equally covered);
      frechet_distance: Fréchet distance between Gaussians fitted to the features of ``images`` and to
        ``reference_features`` (FID computed with this classifier); present only when they are given;
      precision, recall: :func:`precision_recall` of the features of ``images`` against
        ``reference_features`` (k = NEIGHBOURHOOD_SIZE; N and M above k); present only when they are given.
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
        scores.update(precision_recall(reference_features, features, real_radii=reference_radii))
    return scores

"""Precision and recall of k-nearest-neighbour manifolds (Kynkäänniemi et al. 2019) and the nearest-training-image
check, against hand-computed radii, constructed sets whose answer is exact, and brute-force distance matrices."""

import math

import h5py
import numpy as np
import pytest
import torch

from asymnet import plots
from asymnet.classifier import MnistClassifier
from asymnet.data import Dataset
from asymnet.evaluate import IMAGE_FIGURES, ImageScorer
from asymnet.metrics import quality
from asymnet.metrics.quality import (
    knn_radii,
    manifold_coverage,
    memorisation_figures,
    nearest_distance,
    precision_recall,
)

# Four real points and four generated ones in 2-D with integer coordinates, so that every squared distance,
# and with it every tie, is exact in float64.
REAL = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [3.0, 4.0]], dtype=torch.float64)
FAKE = torch.tensor([[3.0, 2.0], [3.0, 3.0], [10.0, 10.0], [10.0, 11.0]], dtype=torch.float64)


def lattice(corner: tuple[float, float], side: int = 5) -> torch.Tensor:
    """A side x side grid of unit spacing from ``corner``, (side^2, 2) float64."""
    steps = torch.arange(side, dtype=torch.float64)
    grid = torch.cartesian_prod(steps, steps)
    return grid + torch.tensor(corner, dtype=torch.float64)


def test_knn_radii_of_four_points_match_the_hand_computed_distances():
    # k = 1: (0,0) and (1,0) are each other's nearest (1); (3,0)'s nearest is (1,0) (2); (3,4)'s is (3,0) (4).
    assert knn_radii(REAL, k=1).tolist() == [1.0, 1.0, 2.0, 4.0]
    # k = 2, the second nearest: (0,0): 1, 3, 5 -> 3; (1,0): 1, 2, sqrt 20 -> 2; (3,0): 3, 2, 4 -> 3;
    # (3,4): 5, sqrt 20, 4 -> sqrt 20.
    assert knn_radii(REAL, k=2).tolist() == pytest.approx([3.0, 2.0, 3.0, math.sqrt(20)], rel=1e-15)


def test_a_duplicate_point_is_its_twins_neighbour_at_distance_zero():
    points = torch.tensor([[0.0, 0.0], [0.0, 0.0], [5.0, 0.0]], dtype=torch.float64)
    assert knn_radii(points, k=1).tolist() == [0.0, 0.0, 5.0]


def test_precision_and_recall_of_four_points_match_the_hand_computation_with_ties_inside():
    # k = 1, real radii (1, 1, 2, 4): (3,2) is 2 from (3,0), on that ball's surface, so inside; (3,3) is 1 from
    # (3,4) (radius 4); (10,10) and (10,11) are farther than 9 from every real point: precision 2/4.
    # Generated radii (1, 1, 1, 1): only (3,4) lies within 1 of a generated point, (3,3), on its surface:
    # recall 1/4.
    assert precision_recall(REAL, FAKE, k=1) == {"precision": 0.5, "recall": 0.25}
    # k = 2: the generated radii grow to sqrt 113, sqrt 98, sqrt 98, sqrt 113 (the other pair is the second
    # nearest), so (3,2)'s ball covers every real point: recall 1; precision stays 2/4.
    assert precision_recall(REAL, FAKE, k=2) == {"precision": 0.5, "recall": 1.0}


def test_a_probe_just_beyond_a_balls_surface_is_outside():
    manifold = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    probes = torch.tensor([[3.0, 4.0], [3.0, 4.0 + 1e-9]], dtype=torch.float64)
    assert manifold_coverage(probes, manifold, torch.tensor([5.0], dtype=torch.float64)).tolist() == [True, False]


def test_a_set_against_itself_has_precision_and_recall_one():
    points = torch.randn(300, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert precision_recall(points, points) == {"precision": 1.0, "recall": 1.0}


def test_two_well_separated_clusters_have_precision_and_recall_zero():
    gen = torch.Generator().manual_seed(1)
    real = torch.randn(200, 4, generator=gen, dtype=torch.float64)
    fake = torch.randn(150, 4, generator=gen, dtype=torch.float64) + 100.0
    assert precision_recall(real, fake) == {"precision": 0.0, "recall": 0.0}


def test_samples_covering_two_of_four_modes_have_precision_one_and_recall_one_half():
    # Each mode is a 5 x 5 unit lattice (k = 3 radii: 1 inside and on the edges, sqrt 2 at the corners); the
    # generated lattices sit half a cell off two of them, every generated point sqrt(0.5) from a real one
    # and every real point of those two modes sqrt(0.5) from a generated one, the other modes 100 away.
    modes = [(0.0, 0.0), (100.0, 0.0), (0.0, 100.0), (100.0, 100.0)]
    real = torch.cat([lattice(corner) for corner in modes])
    fake = torch.cat([lattice((x + 0.5, y + 0.5)) for x, y in modes[:2]])
    assert precision_recall(real, fake) == {"precision": 1.0, "recall": 0.5}


def brute_force_radii(points: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th smallest entry of each row of the whole distance matrix, its diagonal set to infinity."""
    distances = torch.cdist(points, points) + torch.diag(torch.full((len(points),), math.inf, dtype=points.dtype))
    return distances.sort(dim=1).values[:, k - 1]


def test_chunked_figures_equal_the_brute_force_distance_matrix(monkeypatch):
    gen = torch.Generator().manual_seed(2)
    real = torch.randn(37, 3, generator=gen, dtype=torch.float64)
    fake = torch.randn(23, 3, generator=gen, dtype=torch.float64) + 0.5
    expected_radii = brute_force_radii(real, 3)
    cross = torch.cdist(fake, real)
    expected = {"precision": (cross <= expected_radii).any(1).double().mean().item(),
                "recall": (cross.T <= brute_force_radii(fake, 3)).any(1).double().mean().item()}
    unchunked = precision_recall(real, fake)
    monkeypatch.setattr(quality, "CHUNK_ENTRIES", 50)  # rows of 1 or 2 points: every chunk boundary is crossed
    assert torch.allclose(knn_radii(real, 3), expected_radii, rtol=1e-12)
    assert precision_recall(real, fake) == expected == unchunked
    assert 0.0 < expected["precision"] < 1.0 and 0.0 < expected["recall"] < 1.0
    assert torch.allclose(nearest_distance(fake, real), cross.min(dim=1).values, rtol=1e-12)


def binary_images(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 2, (n, 784), generator=torch.Generator().manual_seed(seed)).float()


def test_copies_of_training_images_are_at_distance_zero():
    training = binary_images(500, 3)
    copies = training[[7, 123, 499]]
    assert nearest_distance(copies, training).tolist() == pytest.approx([0.0, 0.0, 0.0], abs=1e-5)


def test_nearest_training_distance_of_flipped_pixels_is_the_square_root_of_their_count():
    # Two random binary images differ in about 392 +- 14 pixels (distance >= 18.5), so an image with i^2 <= 81
    # pixels of a training image flipped (distance i) stays nearest to that one.
    training = binary_images(200, 4)
    samples = training[:10].clone()
    for i in range(10):
        samples[i, : i * i] = 1.0 - samples[i, : i * i]
    assert nearest_distance(samples, training).tolist() == pytest.approx(list(range(10)), abs=1e-5)
    figures = memorisation_figures(samples, training)
    # distances 0..9: the median between 4 and 5; the 5th percentile at rank 0.05 * 9 = 0.45
    assert figures["nearest_train_distance"] == pytest.approx(4.5, abs=1e-5)
    assert figures["nearest_train_distance_p05"] == pytest.approx(0.45, abs=1e-5)


@pytest.mark.parametrize("call, message", [
    (lambda: precision_recall(REAL, FAKE[:, :1]),
     r"precision_recall needs real and generated features of the same dimension, got \(4, 2\) and \(4, 1\)"),
    (lambda: precision_recall(REAL[0], FAKE),
     r"precision_recall needs real features of shape \(n, d\) with n >= 1, got \(2,\)"),
    (lambda: precision_recall(REAL, FAKE[:3]),
     r"precision_recall needs more than k = 3 generated points \(each point's k-th nearest neighbour among the "
     r"others\), got 3; lower k or score more points"),
    (lambda: precision_recall(REAL, FAKE, k=0), r"precision_recall needs a positive integer k, got 0"),
    (lambda: precision_recall(REAL, FAKE, k=1, real_radii=torch.ones(3)),
     r"precision_recall needs one radius per real feature, \(4,\), got real_radii of shape \(3,\)"),
    (lambda: knn_radii(REAL, k=4), r"knn_radii needs more than k = 4 points .* got 4;"),
    (lambda: nearest_distance(torch.zeros(2, 784), torch.zeros(5, 28)),
     r"nearest_distance needs points and reference points of the same dimension, got \(2, 784\) and \(5, 28\)"),
    (lambda: nearest_distance(torch.zeros(2, 784), torch.zeros(0, 784)),
     r"nearest_distance needs reference points of shape \(n, d\) with n >= 1, got \(0, 784\)"),
])
def test_bad_input_is_refused_with_a_message_naming_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.filterwarnings("ignore:Matrix is singular")  # the Fréchet distance of 80 features in 128 dimensions
def test_the_scorer_gives_the_reference_itself_precision_and_recall_one_and_copies_distance_zero():
    pixels = torch.randint(0, 256, (110, 784), generator=torch.Generator().manual_seed(5), dtype=torch.uint8)
    data = Dataset("mnist", train=pixels[:50], test=pixels[50:])
    scorer = ImageScorer.build(MnistClassifier(torch.Generator().manual_seed(0)), data, n_samples=20)
    reference = scorer.figures(data.test[20:].float() / 255.0, "test_")
    assert list(reference) == ["test_" + name for name in IMAGE_FIGURES]
    assert (reference["test_precision"], reference["test_recall"]) == (1.0, 1.0)
    copies = scorer.figures(data.train[:30].float() / 255.0)
    assert copies["nearest_train_distance"] == pytest.approx(0.0, abs=1e-5)
    assert copies["nearest_train_distance_p05"] == pytest.approx(0.0, abs=1e-5)
    unseen = scorer.figures(data.test[:20].float() / 255.0)
    pixels = lambda images: (images.float() / 255.0).double()  # noqa: E731  the scorer's float32 [0, 1] pixels
    middle = torch.cdist(pixels(data.test[:20]), pixels(data.train)).min(1).values.sort().values
    assert 0.0 < unseen["nearest_train_distance"] == pytest.approx((middle[9] + middle[10]).item() / 2, rel=1e-9)


def test_the_long_run_figure_draws_the_test_images_and_cooled_samples_figures_where_the_log_holds_them(tmp_path, monkeypatch):
    path = tmp_path / "log.h5"
    with h5py.File(path, "w", libver="latest") as log:
        log["samples/long_run/steps"] = np.array([10, 30])
        log["samples/long_run/precision"] = np.array([0.5, 0.6])
        log["samples/long_run/nearest_train_distance"] = np.array([5.0, 5.5])
        log["eval/test_precision"] = 0.88
        log["eval/test_nearest_train_distance"] = np.nan  # declared, never written (a resumed older log)
        log["eval/long_run_cooled_precision"] = 0.7
        log.swmr_mode = True
    drawn = {}
    monkeypatch.setattr(plots, "_save", lambda figure, where: drawn.setdefault("figure", figure))
    plots.plot_long_run(path, tmp_path / "long_run.png")
    axes = {ax.get_title(): ax for ax in drawn["figure"].axes}
    reference = [line for line in axes["precision"].get_lines() if line.get_label() == "test images"]
    assert [line.get_ydata()[0] for line in reference] == [0.88]
    cooled = [line for line in axes["precision"].get_lines() if line.get_label() == "cooled samples, as many"]
    assert [line.get_ydata()[0] for line in cooled] == [0.7]
    assert len(axes["nearest_train_distance"].get_lines()) == 1  # the curve alone: no line at NaN

"""MNIST classifier and the classifier-based quality figures, against closed forms and known logits."""

import math

import numpy as np
import pytest
import torch

from asymnet.classifier import (
    MnistClassifier,
    accuracy,
    load_classifier,
    main,
    save_classifier,
    to_unit_interval,
    train_classifier,
)
from asymnet.data.locate import DataError
from asymnet.data.mnist import load_mnist
from asymnet.metrics.quality import classifier_scores, frechet_distance, label_entropy
from tests.conftest import SHARED, needs_shared



def test_frechet_distance_of_identical_gaussians_is_zero():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    cov = a @ a.T + 0.1 * np.eye(6)
    mu = rng.normal(size=6)
    assert frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_of_1d_gaussians_matches_closed_form():
    mu1, s1, mu2, s2 = 0.3, 1.7, -1.2, 0.4
    expected = (mu1 - mu2) ** 2 + (s1 - s2) ** 2
    got = frechet_distance(np.array([mu1]), np.array([[s1**2]]), np.array([mu2]), np.array([[s2**2]]))
    assert got == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_of_commuting_diagonal_covariances_matches_closed_form():
    s1, s2 = np.array([1.0, 2.0, 0.5]), np.array([3.0, 0.2, 0.5])
    mu1, mu2 = np.zeros(3), np.array([1.0, -1.0, 2.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((s1 - s2) ** 2)
    got = frechet_distance(torch.from_numpy(mu1), torch.diag(torch.from_numpy(s1**2)), mu2, np.diag(s2**2))
    assert got == pytest.approx(expected, rel=1e-10)


def test_label_entropy_of_uniform_histogram_is_ln_10():
    assert label_entropy([7] * 10) == pytest.approx(math.log(10), rel=1e-15)
    assert label_entropy([0, 0, 5, 0, 0, 0, 0, 0, 0, 0]) == 0.0


class FakeClassifier:
    """Returns fixed logits and the images themselves as features."""

    def __init__(self, logits):
        self.logits = logits

    def __call__(self, x):
        return self.logits[: len(x)]

    def features(self, x):
        return x[:, :3]


def test_scores_of_known_logits():
    # Softmax of [ln 95, ln 5, -inf...] puts 0.95 on the top class; [ln 8, ln 2, ...] only 0.8.
    confident = torch.full((10,), -math.inf)
    confident[:2] = torch.tensor([math.log(95), math.log(5)])
    unsure = torch.full((10,), -math.inf)
    unsure[:2] = torch.tensor([math.log(8), math.log(2)])
    logits = torch.stack([confident.roll(k) for k in range(10)] + [unsure.roll(k) for k in range(10)])
    scores = classifier_scores(FakeClassifier(logits), torch.rand(20, 784, generator=torch.Generator().manual_seed(0)))
    assert scores["confident_fraction"] == 0.5
    assert scores["label_histogram"] == [2] * 10
    assert scores["label_entropy"] == pytest.approx(math.log(10))
    assert "frechet_distance" not in scores


def test_scores_frechet_distance_to_own_features_is_zero():
    images = torch.rand(50, 784, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    fake = FakeClassifier(torch.zeros(50, 10))
    scores = classifier_scores(fake, images, reference_features=images[:, :3])
    assert scores["frechet_distance"] == pytest.approx(0.0, abs=1e-9)


def test_scores_reject_pixels_outside_unit_interval():
    with pytest.raises(ValueError, match=r"pixel values in \[0, 1\], found \[-0.5"):
        classifier_scores(FakeClassifier(torch.zeros(2, 10)), torch.tensor([[-0.5] * 784, [1.0] * 784]))


def test_classifier_accepts_flat_and_image_shapes_with_128_features():
    model = MnistClassifier(torch.Generator().manual_seed(0))
    x = torch.rand(3, 784)
    assert model.features(x).shape == (3, 128)
    assert torch.equal(model(x), model(x.reshape(3, 1, 28, 28)))
    with pytest.raises(ValueError, match=r"got \(3, 28\)"):
        model(torch.rand(3, 28))


def test_missing_weights_error_gives_the_training_command(tmp_path):
    with pytest.raises(DataError) as err:
        load_classifier(tmp_path)
    assert f"{tmp_path / 'mnist_classifier.pt'}: no trained MNIST classifier" in str(err.value)
    assert f"python -m asymnet.classifier --data {tmp_path}" in str(err.value)


def test_saved_weights_load_back_identically(tmp_path):
    model = MnistClassifier(torch.Generator().manual_seed(3))
    save_classifier(model, tmp_path / "mnist_classifier.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["mnist_classifier.pt"]
    x = torch.rand(4, 784)
    assert torch.equal(load_classifier(tmp_path)(x), model(x))
    assert torch.equal(load_classifier(tmp_path / "mnist_classifier.pt")(x), model(x))


@needs_shared
def test_three_short_epochs_on_2000_images_beat_90_percent():
    # One epoch of 2,000 images (63 steps) lands near 90% (0.86-0.91 over seeds); three give ~0.94.
    images, labels = load_mnist(SHARED, "train")
    test_images, test_labels = load_mnist(SHARED, "test")
    model = train_classifier(
        to_unit_interval(images[:2000]), torch.from_numpy(labels[:2000]), epochs=3, seed=0, batch_size=32,
        progress=False,
    )
    assert accuracy(model, to_unit_interval(test_images[:2000]), torch.from_numpy(test_labels[:2000])) > 0.90


def test_training_under_no_grad_still_learns():
    # A sampling tool scores under torch.no_grad and trains the classifier on its first use.
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(200) % 10
    images = (torch.rand(200, 784, generator=generator) * 0.2 + (labels[:, None] == torch.arange(784) % 10) * 0.8)
    with torch.no_grad():
        model = train_classifier(images, labels, epochs=10, seed=0, batch_size=20, progress=False)
    assert torch.is_grad_enabled()
    assert accuracy(model, images, labels) == 1.0


@needs_shared
@pytest.mark.slow
def test_full_training_reaches_98_percent_and_scores_real_digits(tmp_path):
    main(["--data", str(SHARED), "--out", str(tmp_path / "mnist_classifier.pt"), "--quiet"])
    model = load_classifier(tmp_path)
    test_images, test_labels = load_mnist(SHARED, "test")
    x = to_unit_interval(test_images)
    assert accuracy(model, x, torch.from_numpy(test_labels)) >= 0.98
    # A random split: the test set's two halves come from different writer populations.
    x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))]
    with torch.no_grad():
        reference = model.features(x[5000:])
    real = classifier_scores(model, x[:5000], reference_features=reference)
    noise = classifier_scores(model, torch.rand(1000, 784, generator=torch.Generator().manual_seed(0)), reference)
    assert real["confident_fraction"] > 0.95
    assert real["label_entropy"] > 0.99 * math.log(10)
    assert real["frechet_distance"] < 10.0
    assert noise["frechet_distance"] > 100 * real["frechet_distance"]
    assert noise["label_entropy"] < 0.5 * math.log(10)

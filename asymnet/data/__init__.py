"""Datasets as tensors: the 2-D toys (exact densities) and 8-bit images (MNIST, CIFAR-10, SVHN, CelebA 64x64),
dequantized."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from asymnet.data.celeba import load_celeba64
from asymnet.data.cifar10 import load_cifar10
from asymnet.data.locate import DataError, find_data_dir
from asymnet.data.mnist import load_mnist
from asymnet.dequantization import DEQUANTIZED, Rescaling, dequantize
from asymnet.data.svhn import load_svhn
from asymnet.data.toy import TOYS, ToyDistribution

__all__ = ["DataError", "Dataset", "IMAGE_SHAPES", "find_data_dir", "load_dataset"]

IMAGE_SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32), "svhn": (3, 32, 32), "celeba64": (3, 64, 64)}
"""The image datasets and their image shape (C, H, W)."""


@dataclass(frozen=True)
class Dataset:
    """Training and held-out data in the form a minibatch is drawn from.

    Toys: ``train``/``test`` are float (N, 2) points and ``toy`` holds the exact density.
    Images: ``train``/``test`` are uint8 (N, C*H*W) pixels, each image flattened in (C, H, W) order with
    ``image_shape`` = (C, H, W); ``labels_*`` their classes (None for CelebA). ``batch`` returns them
    dequantized ((x + u) / 256) or binarized (x > 127), and ``rescaling`` maps 8-bit values to model
    values so that likelihoods can be given in bits/dim on the 8-bit scale.
    """

    name: str
    train: torch.Tensor
    test: torch.Tensor
    toy: ToyDistribution | None = None
    rescaling: Rescaling | None = None
    binarized: bool = False
    labels_train: torch.Tensor | None = None
    labels_test: torch.Tensor | None = None
    image_shape: tuple[int, int, int] | None = None

    @property
    def n_visible(self) -> int:
        return self.train.shape[1]

    def batch(self, points: torch.Tensor, generator: torch.Generator | None, dtype: torch.dtype) -> torch.Tensor:
        """Model-scale values of the rows ``points`` (as drawn from train or test), (batch, n_visible)."""
        if self.toy is not None:
            return points.to(dtype)
        if self.binarized:
            return (points > 127).to(dtype)
        return dequantize(points, generator, dtype)


def load_dataset(name: str, n_train: int, n_test: int, data_dir: str | None, generator: torch.Generator,
                 binarize: bool = False, download: bool = False) -> Dataset:
    """The dataset a study names. Toys are drawn from ``generator``; images ("mnist", "cifar10", "svhn",
    "celeba64") are read from the data folder (``--data``, then ``ASYMNET_DATA``, then ``./data``), their
    first n_train / n_test images kept. CelebA's train split is partition 0, its test split partition 2.
    ``download`` fetches missing MNIST, CIFAR-10 and SVHN files (md5-verified); CelebA is never downloaded.
    """
    if name in TOYS:
        toy = TOYS[name]
        return Dataset(name, toy.sample(n_train, generator), toy.sample(n_test, generator), toy=toy)
    if name not in IMAGE_SHAPES:
        raise ValueError(f"unknown dataset {name!r}: expected one of {', '.join([*TOYS, *IMAGE_SHAPES])}")
    root = Path(find_data_dir(data_dir))
    if name == "celeba64":
        train_images, train_labels = load_celeba64(root, "train", n_train), None
        test_images, test_labels = load_celeba64(root, "test", n_test), None
    else:
        loader = {"mnist": load_mnist, "cifar10": load_cifar10, "svhn": load_svhn}[name]
        train_images, train_labels = loader(root, "train", download=download)
        test_images, test_labels = loader(root, "test", download=download)
    flat = lambda images: torch.from_numpy(images.reshape(len(images), -1).copy())  # noqa: E731
    labels = lambda values, n: None if values is None else torch.from_numpy(values[:n].astype("int64"))  # noqa: E731
    return Dataset(
        name,
        flat(train_images[:n_train]),
        flat(test_images[:n_test]),
        rescaling=DEQUANTIZED,
        binarized=binarize,
        labels_train=labels(train_labels, n_train),
        labels_test=labels(test_labels, n_test),
        image_shape=IMAGE_SHAPES[name],
    )

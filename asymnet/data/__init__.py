"""Datasets as tensors: the 2-D toys (exact densities) and MNIST (8-bit images, dequantized)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from asymnet.data.locate import DataError, find_data_dir
from asymnet.data.mnist import DEQUANTIZED, Rescaling, dequantize, load_mnist
from asymnet.data.toy import TOYS, ToyDistribution

__all__ = ["DataError", "Dataset", "find_data_dir", "load_dataset"]


@dataclass(frozen=True)
class Dataset:
    """Training and held-out data in the form a minibatch is drawn from.

    Toys: ``train``/``test`` are float (N, 2) points and ``toy`` holds the exact density.
    Images: ``train``/``test`` are uint8 (N, 784) pixels, ``labels_*`` their classes; ``batch``
    returns them dequantized ((x + u) / 256) or binarized (x > 127), and ``rescaling`` maps
    8-bit values to model values so that likelihoods can be given in bits/dim on the 8-bit scale.
    """

    name: str
    train: torch.Tensor
    test: torch.Tensor
    toy: ToyDistribution | None = None
    rescaling: Rescaling | None = None
    binarized: bool = False
    labels_train: torch.Tensor | None = None
    labels_test: torch.Tensor | None = None

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
    """The dataset a study names. Toys are drawn from ``generator``; MNIST is read from the data folder
    (``--data``, then ``ASYMNET_DATA``, then ``./data``), its first n_train / n_test images kept."""
    if name in TOYS:
        toy = TOYS[name]
        return Dataset(name, toy.sample(n_train, generator), toy.sample(n_test, generator), toy=toy)
    root = Path(find_data_dir(data_dir))
    train_images, train_labels = load_mnist(root, "train", download=download)
    test_images, test_labels = load_mnist(root, "test", download=download)
    flat = lambda images: torch.from_numpy(images.reshape(len(images), -1).copy())  # noqa: E731
    return Dataset(
        name,
        flat(train_images[:n_train]),
        flat(test_images[:n_test]),
        rescaling=DEQUANTIZED,
        binarized=binarize,
        labels_train=torch.from_numpy(train_labels[:n_train].astype("int64")),
        labels_test=torch.from_numpy(test_labels[:n_test].astype("int64")),
    )

"""A small CNN MNIST classifier, the judge behind the sample-quality figures in ``metrics.quality``.

Train it once per data folder:

    python -m asymnet.classifier [--data DIR] [--epochs N] [--out PATH] [--seed S] [--quiet]

It trains on whatever training set ``load_mnist`` finds (the offline copy holds the first 24,345
images), prints the accuracy on the 10,000-image test set, and saves the weights to
``./data/mnist_classifier.pt`` (or ``--out``), where runs look first: never into the MNIST folder,
which may be a shared, read-only copy. Input convention: float images in [0, 1],
shape (N, 784), (N, 28, 28) or (N, 1, 28, 28).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from asymnet.cli import run_command
from asymnet.data.locate import DataError, find_data_dir
from asymnet.data.mnist import load_mnist

WEIGHTS_NAME = "mnist_classifier.pt"
PIXEL_MEAN, PIXEL_STD = 0.1307, 0.3081  # of the MNIST training images on the [0, 1] scale


class MnistClassifier(nn.Module):
    """conv5x5(16) - pool - conv5x5(32) - pool - fc(128) - fc(10), ReLU throughout.

    ``features(x)`` is the 128-dim penultimate layer (after ReLU); ``forward(x)`` gives logits (N, 10).
    """

    n_features = 128

    def __init__(self, generator: torch.Generator | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=5, padding=2)
        self.fc1 = nn.Linear(32 * 7 * 7, self.n_features)
        self.fc2 = nn.Linear(self.n_features, 10)
        for layer in (self.conv1, self.conv2, self.fc1, self.fc2):
            # PyTorch's default initialisation, drawn from ``generator`` rather than the global RNG.
            nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
            bound = 1 / math.sqrt(layer.weight[0].numel())
            nn.init.uniform_(layer.bias, -bound, bound, generator=generator)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (N, 128) of images x in [0, 1]."""
        x = (_as_image_batch(x) - PIXEL_MEAN) / PIXEL_STD
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.relu(self.fc1(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, 10) of images x in [0, 1]."""
        return self.fc2(self.features(x))


def _as_image_batch(x: torch.Tensor) -> torch.Tensor:
    if x.ndim == 2 and x.shape[1] == 784 or x.ndim == 3 and x.shape[1:] == (28, 28):
        return x.reshape(-1, 1, 28, 28)
    if x.ndim == 4 and x.shape[1:] == (1, 28, 28):
        return x
    raise ValueError(
        f"MNIST classifier expects float images in [0, 1] of shape (N, 784), (N, 28, 28) or (N, 1, 28, 28), "
        f"got {tuple(x.shape)}"
    )


def to_unit_interval(images_uint8: np.ndarray) -> torch.Tensor:
    """uint8 pixels (N, 28, 28) -> float32 (N, 784) in [0, 1] (pixel / 255)."""
    return torch.from_numpy(images_uint8).reshape(len(images_uint8), -1).float() / 255.0


@torch.enable_grad()
def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int = 4,
    seed: int = 0,
    batch_size: int = 64,
    lr: float = 2e-3,
    progress: bool = True,
) -> MnistClassifier:
    """Adam with cosine-decayed learning rate on cross-entropy; images (N, 784) in [0, 1], labels (N,). It
    trains with gradients on even when called under torch.no_grad (a sampling tool's first scoring)."""
    generator = torch.Generator().manual_seed(seed)
    model = MnistClassifier(generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = -(-len(images) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    labels = labels.long()
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        bar = tqdm(order.split(batch_size), desc=f"epoch {epoch + 1}/{epochs}", disable=not progress)
        for batch in bar:
            loss = F.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    model.eval()
    return model


@torch.no_grad()
def accuracy(model: MnistClassifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Fraction of images (N, 784) whose argmax logit equals the label."""
    correct = sum(
        (model(x).argmax(1) == y.long()).sum().item()
        for x, y in zip(images.split(batch_size), labels.split(batch_size))
    )
    return correct / len(labels)


def save_classifier(model: MnistClassifier, path: Path) -> None:
    """torch.save(state_dict) to a temporary file beside ``path``, then os.replace (atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".part")
    os.close(fd)
    try:
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_classifier(data_dir: str | os.PathLike) -> MnistClassifier:
    """The trained classifier in eval mode, from ``data_dir/mnist_classifier.pt`` (or a ``.pt`` path).

    Raises DataError with the command that trains it when the file is absent.
    """
    location = Path(data_dir)
    path = location if location.suffix == ".pt" else location / WEIGHTS_NAME
    if not path.is_file():
        data_arg = location.parent if location.suffix == ".pt" else location
        out_arg = f" --out {path}"
        raise DataError(
            f"{path}: no trained MNIST classifier. Train one with: "
            f"python -m asymnet.classifier --data {data_arg}{out_arg}"
        )
    model = MnistClassifier()
    try:
        with warnings.catch_warnings():  # torch warns about a foreign pickle protocol before it refuses it
            warnings.simplefilter("ignore")
            model.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
    except Exception as error:  # unreadable, not tensors only, or another network's weights
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise DataError(f"{path}: not the MNIST classifier's weights ({reason[:200]}); delete it and train one with: "
                        f"python -m asymnet.classifier --out {path}") from None
    model.eval()
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asymnet.classifier", description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="data folder (default: $ASYMNET_DATA, then ./data)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help=f"weights file (default: data/{WEIGHTS_NAME})")
    parser.add_argument("--download", action="store_true", help="fetch missing MNIST files (md5-verified)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    return run_command("asymnet.classifier", lambda: _train_and_save(args))


def _train_and_save(args) -> None:
    data_dir = find_data_dir(args.data)
    out = args.out or Path("data") / WEIGHTS_NAME
    train_images, train_labels = load_mnist(data_dir, "train", download=args.download)
    test_images, test_labels = load_mnist(data_dir, "test", download=args.download)
    start = time.perf_counter()
    model = train_classifier(
        to_unit_interval(train_images),
        torch.from_numpy(train_labels),
        epochs=args.epochs,
        seed=args.seed,
        progress=not args.quiet,
    )
    elapsed = time.perf_counter() - start
    test_accuracy = accuracy(model, to_unit_interval(test_images), torch.from_numpy(test_labels))
    save_classifier(model, out)
    print(
        f"trained on {len(train_images)} MNIST training images, {args.epochs} epochs, seed {args.seed}, "
        f"{elapsed:.0f} s; test accuracy {100 * test_accuracy:.2f}% on {len(test_images)} images; saved {out}"
    )


if __name__ == "__main__":
    raise SystemExit(main())

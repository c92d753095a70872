"""SVHN cropped digits from the official MATLAB files ``train_32x32.mat`` and ``test_32x32.mat``.

Format (Netzer et al. 2011, http://ufldl.stanford.edu/housenumbers/, "Format 2"): each file holds
``X``, uint8 of shape (32, 32, 3, N), indexed (row, column, channel, image), and ``y``, of shape
(N, 1), the digit's class 1..10 where 10 stands for the digit 0. Read with ``scipy.io.loadmat``
(the files are MATLAB v5, not HDF5). The extra set (``extra_32x32.mat``) is not used.

Files are looked for in ``root/svhn/`` then ``root/``. A local file is accepted when it parses;
the md5 is checked only for files this module downloads itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.io

from asymnet.data.download import download_verified, fetch_url
from asymnet.data.locate import DataError

BASE_URL = "http://ufldl.stanford.edu/housenumbers/"
FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
OFFICIAL_MD5 = {
    "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
    "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
}
IMAGE_SHAPE = (3, 32, 32)

_FORMAT = "SVHN's cropped-digit files hold X, uint8 (32, 32, 3, N), and y, (N, 1) with labels 1..10"


def read_svhn_mat(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) uint8 0..9 of one SVHN ``.mat`` file.

    X (32, 32, 3, N) is transposed to (N, 3, 32, 32); label 10 becomes 0 (it marks the digit 0).
    Raises DataError naming the file when it does not load, lacks ``X`` or ``y``, or has another
    axis layout, dtype or label range.
    """
    path = Path(path)
    try:
        contents = scipy.io.loadmat(path, variable_names=("X", "y"))
    except Exception as err:  # a malformed file surfaces as MatReadError, IndexError, ValueError, ...
        raise DataError(f"{path}: not a readable MATLAB v5 file: {err}") from err
    for key in ("X", "y"):
        if key not in contents:
            found = sorted(k for k in contents if not k.startswith("__"))
            raise DataError(f"{path}: no variable '{key}' in the .mat file "
                            f"(found: {', '.join(found) or 'none'}); {_FORMAT}")
    x, y = contents["X"], contents["y"]
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise DataError(f"{path}: X has shape {x.shape}, expected (32, 32, 3, N): row, column, channel, image")
    if x.dtype != np.uint8:
        raise DataError(f"{path}: X has dtype {x.dtype}, expected uint8 pixel values")
    n = x.shape[3]
    if y.shape not in ((n, 1), (n,)):
        raise DataError(f"{path}: y has shape {y.shape}, expected ({n}, 1): one label per image of X")
    labels = y.reshape(n)
    if n and (labels.min() < 1 or labels.max() > 10 or not np.array_equal(labels, np.round(labels))):
        raise DataError(f"{path}: labels outside 1..10 (found {labels.min()}..{labels.max()}); {_FORMAT}")
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), (labels % 10).astype(np.uint8)


def load_svhn(root: Path, split: Literal["train", "test"], download: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) uint8 0..9 of one SVHN split, in file order.

    Looks in ``root/svhn/`` then ``root/``; with ``download=True`` a missing file is fetched into
    ``root/svhn/`` and md5-verified. Raises DataError when the file is missing (naming the folders
    searched, the file needed and the fix) or does not parse.
    """
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    name = FILES[split]
    folders = (root / "svhn", root)
    path = next((folder / name for folder in folders if (folder / name).is_file()), None)
    if path is None:
        if not download:
            raise DataError(
                f"SVHN file not found: looked in {' and '.join(map(str, folders))} for {name}. SVHN needs "
                f"{' and '.join(FILES.values())} (cropped digits, from {BASE_URL}). Fix: put them in "
                f"{root / 'svhn'}, pass --data DIR or set ASYMNET_DATA to the folder holding them, "
                "or set data.download: true in the study."
            )
        path = download_verified(name, root / "svhn", [BASE_URL + name], OFFICIAL_MD5[name], fetch=fetch_url)
    return read_svhn_mat(path)

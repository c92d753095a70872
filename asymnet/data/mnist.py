"""MNIST from IDX files (downloaded md5-verified on request).

Files are looked for in ``root/mnist/`` and then ``root/`` under their canonical names, gzip or raw.
A local folder is accepted when its files parse (IDX headers, 28x28 images, as many labels as
images): offline copies may hold a re-encoded subset whose md5 differs from the official files.
The md5 is checked only for files this module downloads itself.

Its dequantized view and bits/dim are in :mod:`asymnet.dequantization`.
"""

from __future__ import annotations

import gzip
import io
import math
import os
from pathlib import Path
from typing import Literal

import numpy as np

from asymnet.data.download import download_verified
from asymnet.data.download import fetch_url as stream_url
from asymnet.data.locate import DataError

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

OFFICIAL_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}

# IDX type code -> big-endian numpy dtype (LeCun's format description).
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801
"""The magic numbers of MNIST's files: uint8 in 3 dimensions (images), uint8 in 1 dimension (labels)."""


def read_idx(path: str | os.PathLike, magic: int | None = None) -> np.ndarray:
    """Parse one IDX file, gzip-compressed or raw (told apart by their first bytes).

    Header: two zero bytes, a type code (0x08 uint8 ... 0x0E float64), the number of dimensions n,
    then n big-endian uint32 sizes; the payload must hold exactly prod(sizes) items. ``magic``: the
    4-byte magic number the file must start with (e.g. IMAGES_MAGIC), checked before the sizes are read.
    Returns an array of that shape in native byte order. Raises DataError naming the file and the
    problem (unreadable gzip, wrong magic number, truncated or overlong payload).
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, gzip.BadGzipFile) as err:
            raise DataError(f"{path}: corrupt gzip file: {err}") from err
    if len(raw) < 4:
        raise DataError(f"{path}: truncated IDX file: {len(raw)} bytes, shorter than the 4-byte magic number")
    zeros, type_code, ndim = raw[:2], raw[2], raw[3]
    found_magic = int.from_bytes(raw[:4], "big")
    if magic is not None and found_magic != magic:
        raise DataError(f"{path}: wrong magic number 0x{found_magic:08x}, expected 0x{magic:08x} (type code "
                        f"0x{(magic >> 8) & 0xFF:02x}, {magic & 0xFF} dimensions); the file is not the one its name "
                        "says: replace it with the original MNIST file")
    if zeros != b"\x00\x00" or type_code not in _IDX_DTYPES or ndim == 0:
        raise DataError(
            f"{path}: wrong magic number 0x{int.from_bytes(raw[:4], 'big'):08x}: an IDX file starts with "
            f"0x0000, a type code in {{{', '.join(f'0x{c:02x}' for c in _IDX_DTYPES)}}} and a dimension count >= 1"
        )
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataError(f"{path}: truncated IDX file: header declares {ndim} dimensions but ends after {len(raw)} bytes")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[type_code]
    expected = math.prod(dims) * dtype.itemsize
    found = len(raw) - header_len
    shape_text = "x".join(map(str, dims))
    if found < expected:
        raise DataError(
            f"{path}: truncated IDX file: header says {shape_text} = {expected} bytes, found {found}"
        )
    if found > expected:
        raise DataError(
            f"{path}: IDX file longer than its header: header says {shape_text} = {expected} bytes, found {found}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_len).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def load_mnist(
    root: Path, split: Literal["train", "test"], download: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) uint8 of one MNIST split.

    Looks in ``root/mnist/`` then ``root/`` for each canonical file name, gzip (``.gz``) or raw.
    With ``download=True`` missing files are fetched into ``root/mnist/`` and md5-verified.
    Raises DataError when files are missing (naming the folders searched and the files needed),
    unparseable, or inconsistent (image/label counts, image size, label range).
    """
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    folders = (root / "mnist", root)
    names = FILES[split]
    paths = {name: _find(folders, name) for name in names}
    missing = [name for name, path in paths.items() if path is None]
    if missing and not download:
        needed = ", ".join(f"{n}[.gz]" for pair in FILES.values() for n in pair)
        raise DataError(
            f"MNIST files not found: looked in {' and '.join(str(f) for f in folders)} for "
            f"{', '.join(missing)}. MNIST needs {needed}. Fix: pass --data DIR, set ASYMNET_DATA, "
            "or run with download enabled."
        )
    for name in missing:
        paths[name] = download_file(name + ".gz", root / "mnist")
    images_path, labels_path = (paths[name] for name in names)
    images, labels = read_idx(images_path, IMAGES_MAGIC), read_idx(labels_path, LABELS_MAGIC)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise DataError(
            f"{images_path}: expected uint8 images of shape (N, 28, 28), found {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(f"{labels_path}: expected uint8 labels of shape (N,), found {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise DataError(
            f"image/label count mismatch: {images_path} holds {len(images)} images, "
            f"{labels_path} holds {len(labels)} labels"
        )
    if len(labels) and labels.max() > 9:
        raise DataError(f"{labels_path}: label {int(labels.max())} outside 0..9")
    return images, labels


def _find(folders: tuple[Path, ...], name: str) -> Path | None:
    for folder in folders:
        for candidate in (folder / name, folder / (name + ".gz")):
            if candidate.is_file():
                return candidate
    return None


def fetch_url(url: str) -> bytes:
    """The bytes at ``url``, held in memory (MNIST's files are at most 10 MB). Tests replace it."""
    buffer = io.BytesIO()
    stream_url(url, buffer)
    return buffer.getvalue()


def download_file(filename: str, folder: Path) -> Path:
    """Fetch ``filename`` (one of the four official ``.gz`` files) into ``folder``, md5-verified.

    Tries each mirror in turn; see ``asymnet.data.download.download_verified``: a failed download
    leaves nothing under ``folder``.
    """
    return download_verified(filename, folder, [mirror + filename for mirror in MIRRORS], OFFICIAL_MD5[filename],
                             fetch=lambda url, out: out.write(fetch_url(url)))

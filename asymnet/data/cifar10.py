"""CIFAR-10 from the official binary version (never the pickled Python version: no pickle is loaded).

Layout (Krizhevsky, https://www.cs.toronto.edu/~kriz/cifar.html, "Binary version"): the archive
``cifar-10-binary.tar.gz`` holds ``cifar-10-batches-bin/`` with ``data_batch_1.bin`` ..
``data_batch_5.bin`` (train, 5 x 10000 images) and ``test_batch.bin`` (10000 images). Each file is
a run of 3073-byte records: one label byte 0..9, then 3072 pixel bytes, the 1024 red values, then
the 1024 green, then the 1024 blue, each plane a 32x32 image in row-major order. A record's pixels
are therefore already the (C, H, W) = (3, 32, 32) image flattened in C order.

Looked for, in this order: the folder ``root/cifar10/cifar-10-batches-bin``, then
``root/cifar-10-batches-bin``, then the archive in ``root/cifar10`` or ``root``, which is extracted
beside itself (or under ``./data/cifar10`` when that folder is read-only). A local copy is accepted
when its records parse; the md5 is checked only for an archive this module downloads itself.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import Literal

import numpy as np

from asymnet.data.download import can_write, download_verified, fetch_url
from asymnet.data.locate import DataError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
ARCHIVE = "cifar-10-binary.tar.gz"
ARCHIVE_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
FOLDER = "cifar-10-batches-bin"
FILES = {
    "train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    "test": ("test_batch.bin",),
}
IMAGE_SHAPE = (3, 32, 32)
RECORD_BYTES = 1 + 3 * 32 * 32
FALLBACK_FOLDER = Path("data") / "cifar10"
"""Where an archive found in a read-only folder is extracted (relative to the working directory)."""


def read_cifar10_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) uint8 of one binary batch file.

    Raises DataError naming the file when it is empty, when its size is not a whole number of
    3073-byte records (a truncated record), or when a label is outside 0..9.
    """
    path = Path(path)
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0:
        raise DataError(f"{path}: empty file: a CIFAR-10 batch holds {RECORD_BYTES}-byte records "
                        "(1 label byte + 3072 pixel bytes)")
    if raw.size % RECORD_BYTES:
        raise DataError(
            f"{path}: truncated record: the file has {raw.size} bytes, not a multiple of the {RECORD_BYTES}-byte "
            f"record (1 label byte + 3072 pixel bytes); {raw.size // RECORD_BYTES} whole records and "
            f"{raw.size % RECORD_BYTES} bytes left over"
        )
    records = raw.reshape(-1, RECORD_BYTES)
    labels = records[:, 0].copy()
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        raise DataError(f"{path}: label {int(labels[bad[0]])} of record {int(bad[0])} outside 0..9")
    return records[:, 1:].reshape(-1, *IMAGE_SHAPE).copy(), labels


def load_cifar10(
    root: Path, split: Literal["train", "test"], download: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) uint8 of one CIFAR-10 split, in file order.

    With ``download=True`` and nothing found, the archive is fetched into ``root/cifar10/`` from the
    official URL, md5-verified, and extracted. Raises DataError when nothing is found (naming the
    folders searched, the files needed and the fix), when the folder lacks a batch file, or when a
    file does not parse.
    """
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = _batches_folder(Path(root), download)
    missing = [name for name in FILES[split] if not (folder / name).is_file()]
    if missing:
        raise DataError(
            f"{folder}: missing {', '.join(missing)}. CIFAR-10's binary version needs "
            f"{', '.join(FILES['train'] + FILES['test'])}. Fix: extract {ARCHIVE} again (from {URL})."
        )
    parts = [read_cifar10_batch(folder / name) for name in FILES[split]]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _batches_folder(root: Path, download: bool) -> Path:
    folders = (root / "cifar10" / FOLDER, root / FOLDER)
    for folder in folders:
        if folder.is_dir():
            return folder
    archives = (root / "cifar10" / ARCHIVE, root / ARCHIVE)
    archive = next((a for a in archives if a.is_file()), None)
    if archive is None:
        if not download:
            raise DataError(
                f"CIFAR-10 files not found: looked in {' and '.join(map(str, folders))} for "
                f"{', '.join(FILES['train'] + FILES['test'])}, and in {root / 'cifar10'} and {root} for {ARCHIVE}. "
                f"Fix: put {ARCHIVE} (the binary version, from {URL}) or its extracted {FOLDER}/ in "
                f"{root / 'cifar10'}, pass --data DIR or set ASYMNET_DATA to the folder holding it, "
                "or set data.download: true in the study."
            )
        archive = download_verified(ARCHIVE, root / "cifar10", [URL], ARCHIVE_MD5, fetch=fetch_url)
    return _extract(archive)


def _extract(archive: Path) -> Path:
    """Extract the batch files of ``archive`` beside it (or under FALLBACK_FOLDER when its folder is
    read-only); returns the ``cifar-10-batches-bin`` folder. Only regular files under that folder
    are extracted, through tarfile's "data" filter (no absolute paths, no ``..``, no links or
    devices); they go to a temporary folder first, moved into place whole, so a folder found there
    is a complete extraction (and load_cifar10 checks its files)."""
    target = archive.parent if can_write(archive.parent) else FALLBACK_FOLDER
    extracted = target / FOLDER
    if extracted.is_dir():
        return extracted
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target, prefix=FOLDER + ".", suffix=".part"))
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith(FOLDER + "/")]
                tar.extractall(staging, members=members, filter="data")
        except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
            raise DataError(f"{archive}: cannot extract the CIFAR-10 archive: {err}. Fix: delete it and download "
                            f"it again (md5 {ARCHIVE_MD5}).") from err
        if not (staging / FOLDER).is_dir():
            raise DataError(f"{archive}: no {FOLDER}/ inside: this is not the binary version of CIFAR-10 ({URL})")
        os.replace(staging / FOLDER, extracted)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return extracted

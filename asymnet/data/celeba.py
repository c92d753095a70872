"""CelebA faces at 64x64 from the official aligned-and-cropped images and evaluation partition.

Source (Liu, Luo, Wang & Tang 2015, https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html):
``img_align_celeba/`` with 000001.jpg .. 202599.jpg, RGB JPEGs of 178x218 (width x height), or the
archive ``img_align_celeba.zip`` holding that folder; and ``list_eval_partition.txt`` (in the
release's ``Eval/``), lines ``000001.jpg 0`` with 0 = train, 1 = valid, 2 = test. Both are looked
for in ``root/celeba/`` then ``root/``, the partition file beside the images. CelebA is distributed
through Google Drive, which has no stable direct URL, so it is never downloaded automatically.

From 178x218 to 64x64: the 140x140 square around the image centre (box left 19, top 39, right
159, bottom 179 for the official size; in general left = (width - 140) // 2, top = (height - 140) // 2)
is cut out, then resized to 64x64 by PIL's BICUBIC filter. The Variational Walkback paper
(Goyal et al. 2017) trains on CelebA at 64x64 but its text gives no crop; the 140x140 centre crop is
the one of the score-based models' CelebA-64 (Song & Ermon 2019, NCSN), so samples compare with that
literature; it keeps the face from forehead to chin and drops most of the background. BICUBIC because
PIL's resize is antialiased when it shrinks (the cubic kernel is widened by the 140/64 = 2.19
reduction, so no aliasing), and it overshoots less at sharp edges than LANCZOS (fewer values
clipped to 0 or 255, which would pile up mass at the ends of the 8-bit scale).

Decoding 200k JPEGs takes minutes, so the 64x64 uint8 images of a split are cached as
``celeba64_<split>_crop140_bicubic.npy`` (plain ``np.save``, no pickle) beside the images, or under
``./data/celeba/`` when that folder is read-only. The cache holds the first m images of the split in
partition order; asking for more decodes only the missing ones and extends it.
"""

from __future__ import annotations

import os
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from asymnet.data.download import can_write
from asymnet.data.locate import DataError

OFFICIAL_PAGE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
IMAGES_FOLDER = "img_align_celeba"
IMAGES_ZIP = "img_align_celeba.zip"
PARTITION = "list_eval_partition.txt"
PARTITIONS = {"train": 0, "valid": 1, "test": 2}
CROP = 140
SIZE = 64
RESAMPLE = Image.BICUBIC
IMAGE_SHAPE = (3, SIZE, SIZE)
FALLBACK_FOLDER = Path("data") / "celeba"
"""Where the cache goes when the images' folder is read-only (relative to the working directory)."""


def crop_and_resize(image: Image.Image) -> np.ndarray:
    """The (3, 64, 64) uint8 (C, H, W) image: the 140x140 centre square, resized with BICUBIC.

    Raises ValueError when the image is smaller than 140x140.
    """
    width, height = image.size
    if width < CROP or height < CROP:
        raise ValueError(f"image of {width}x{height} is smaller than the {CROP}x{CROP} centre crop")
    left, top = (width - CROP) // 2, (height - CROP) // 2
    face = image.convert("RGB").crop((left, top, left + CROP, top + CROP)).resize((SIZE, SIZE), RESAMPLE)
    return np.asarray(face).transpose(2, 0, 1)


def read_partition(path: Path) -> dict[str, list[str]]:
    """Image names of each split ("train", "valid", "test"), in file order, from ``list_eval_partition.txt``.

    Raises DataError naming the file and line when a line is not ``<name>.jpg <0|1|2>``.
    """
    splits: dict[str, list[str]] = {split: [] for split in PARTITIONS}
    by_code = {str(code): split for split, code in PARTITIONS.items()}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in by_code or not fields[0].endswith(".jpg"):
            raise DataError(f"{path}, line {number}: {line.strip()!r} is not '<name>.jpg <0|1|2>' "
                            "(0 train, 1 valid, 2 test)")
        splits[by_code[fields[1]]].append(fields[0])
    return splits


def load_celeba64(root: Path, split: Literal["train", "valid", "test"], n: int | None = None) -> np.ndarray:
    """The first ``n`` (all if None) images of a CelebA split as (n, 3, 64, 64) uint8, in partition order.

    Reads the cache when it holds them, else decodes the missing JPEGs and extends the cache.
    Raises DataError when the images or the partition file are missing (naming the folders and
    files, and where to get them), or when an image listed in the partition is missing or unreadable.
    """
    if split not in PARTITIONS:
        raise ValueError(f"split must be 'train', 'valid' or 'test', got {split!r}")
    root = Path(root)
    source = _find_images(root)
    partition = source.parent / PARTITION
    if not partition.is_file():
        raise DataError(
            f"{source.parent}: no {PARTITION} beside {source.name}: CelebA's official split file (lines "
            f"'000001.jpg 0', 0 train / 1 valid / 2 test) says which images are train and test. Fix: get "
            f"Eval/{PARTITION} from {OFFICIAL_PAGE} and put it in {source.parent}."
        )
    names = read_partition(partition)[split]
    n = len(names) if n is None else min(n, len(names))
    cache_name = f"celeba64_{split}_crop{CROP}_bicubic.npy"
    cache_folders = list(dict.fromkeys((source.parent, FALLBACK_FOLDER)))
    cached = _read_cache([folder / cache_name for folder in cache_folders], len(names))
    if len(cached) >= n:
        return np.array(cached[:n])
    images = np.concatenate([cached, _decode(source, names[len(cached):n], partition)])
    _write_cache(images, cache_folders, cache_name)
    return images


def _find_images(root: Path) -> Path:
    folders = (root / "celeba", root)
    for folder in folders:
        if (folder / IMAGES_FOLDER).is_dir():
            return folder / IMAGES_FOLDER
        if (folder / IMAGES_ZIP).is_file():
            return folder / IMAGES_ZIP
    raise DataError(
        f"CelebA files not found: looked in {' and '.join(map(str, folders))} for {IMAGES_FOLDER}/ "
        f"(or {IMAGES_ZIP}) and {PARTITION}. CelebA is on Google Drive, so it is not downloaded "
        f"automatically (data.download does not apply). Fix: get 'Align&Cropped Images' ({IMAGES_ZIP}) and "
        f"Eval/{PARTITION} from the official page {OFFICIAL_PAGE} and put them in {root / 'celeba'}, "
        "or pass --data DIR or set ASYMNET_DATA to the folder holding them."
    )


def _decode(source: Path, names: list[str], partition: Path) -> np.ndarray:
    images = np.empty((len(names), *IMAGE_SHAPE), dtype=np.uint8)
    progress = tqdm(names, desc=f"CelebA -> {SIZE}x{SIZE}", unit="img", disable=None)
    if source.suffix == ".zip":
        try:
            archive = zipfile.ZipFile(source)
        except (zipfile.BadZipFile, OSError) as err:
            raise DataError(f"{source}: not a readable zip archive: {err}") from err
        with archive:
            present = set(archive.namelist())
            for i, name in enumerate(progress):
                member = f"{IMAGES_FOLDER}/{name}"
                if member not in present:
                    raise DataError(f"{source}: no {member}, listed in {partition}")
                with archive.open(member) as f:
                    images[i] = _decode_one(f, f"{source}:{member}")
    else:
        for i, name in enumerate(progress):
            path = source / name
            if not path.is_file():
                raise DataError(f"{source}: no {name}, listed in {partition}")
            images[i] = _decode_one(path, str(path))
    return images


def _decode_one(file, where: str) -> np.ndarray:
    try:
        with Image.open(file) as image:
            return crop_and_resize(image)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(f"{where}: cannot use this image: {err}") from err


def _read_cache(paths: list[Path], n_split: int) -> np.ndarray:
    """The longest valid cache among ``paths`` (memory-mapped), or an empty array. A cache that does
    not load or has the wrong dtype or shape is ignored: it is rebuilt from the JPEGs."""
    best = np.empty((0, *IMAGE_SHAPE), dtype=np.uint8)
    for path in paths:
        if not path.is_file():
            continue
        try:
            images = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):
            continue
        if images.dtype == np.uint8 and images.shape[1:] == IMAGE_SHAPE and len(best) < len(images) <= n_split:
            best = images
    return best


def _write_cache(images: np.ndarray, folders: list[Path], name: str) -> None:
    """Save ``images`` as ``name`` in the first writable folder (temporary file, then rename)."""
    folder = next((f for f in folders if can_write(f)), None)
    if folder is None:
        warnings.warn(f"CelebA cache {name} not written: none of {', '.join(map(str, folders))} is writable; "
                      "the JPEGs will be decoded again next time", stacklevel=3)
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd, part = tempfile.mkstemp(dir=folder, prefix=name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            np.save(out, images, allow_pickle=False)
        os.replace(part, folder / name)
    finally:
        Path(part).unlink(missing_ok=True)

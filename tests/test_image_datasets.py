"""CIFAR-10, SVHN and CelebA 64x64 loaders on small files in the exact official formats."""

import hashlib
import io
import math
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from asymnet.data import Dataset, load_dataset
from asymnet.data import celeba, cifar10, svhn
from asymnet.data.locate import DataError
from asymnet.dequantization import DEQUANTIZED, bits_per_dim
from asymnet.study import parse_study
from tests.test_mnist import write_split


def load(name: str, root: Path, n_train: int = 100, n_test: int = 100, download: bool = False) -> Dataset:
    return load_dataset(name, n_train, n_test, str(root), torch.Generator().manual_seed(0), download=download)


# ---- CIFAR-10: binary records, 1 label byte + R, G, B planes of 32x32 ----

def cifar_record(label: int, planes: np.ndarray) -> bytes:
    """One record written byte by byte: the label, then 1024 red, 1024 green, 1024 blue values (row-major)."""
    assert planes.shape == (3, 32, 32) and planes.dtype == np.uint8
    record = bytearray([label])
    for channel in range(3):
        for row in range(32):
            for column in range(32):
                record.append(int(planes[channel, row, column]))
    return bytes(record)


def red_image() -> np.ndarray:
    planes = np.zeros((3, 32, 32), np.uint8)
    planes[0] = 255
    return planes


def write_cifar_batches(folder: Path, n_per_file: int = 2) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """All six batch files; the first record of data_batch_1 is a pure red image with label 3."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    written = {}
    for name in cifar10.FILES["train"] + cifar10.FILES["test"]:
        images = rng.integers(0, 256, size=(n_per_file, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n_per_file, dtype=np.uint8)
        if name == "data_batch_1.bin":
            images[0], labels[0] = red_image(), 3
        (folder / name).write_bytes(b"".join(cifar_record(int(y), x) for x, y in zip(images, labels)))
        written[name] = images, labels
    return written


def cifar_archive(tmp_path: Path, extra: tuple[tarfile.TarInfo, bytes] | None = None) -> bytes:
    source = tmp_path / "source"
    write_cifar_batches(source / cifar10.FOLDER)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(source / cifar10.FOLDER, arcname=cifar10.FOLDER)
        if extra is not None:
            tar.addfile(extra[0], io.BytesIO(extra[1]))
    return buffer.getvalue()


@pytest.mark.parametrize("folder", ["cifar10/cifar-10-batches-bin", "cifar-10-batches-bin"])
def test_cifar_records_become_chw_rows_with_labels(tmp_path, folder):
    written = write_cifar_batches(tmp_path / folder)
    data = load("cifar10", tmp_path, n_train=7, n_test=5)
    assert data.train.shape == (7, 3072) and data.train.dtype == torch.uint8
    assert data.test.shape == (2, 3072) and data.image_shape == (3, 32, 32)
    red = data.train[0].reshape(3, 32, 32)
    assert (red[0] == 255).all() and (red[1:] == 0).all()
    expected = np.concatenate([written[name][0] for name in cifar10.FILES["train"]])[:7]
    np.testing.assert_array_equal(data.train.numpy(), expected.reshape(7, -1))
    expected_labels = np.concatenate([written[name][1] for name in cifar10.FILES["train"]])[:7]
    assert data.labels_train.tolist() == expected_labels.tolist() and data.labels_train[0] == 3
    assert data.labels_test.tolist() == written["test_batch.bin"][1].tolist()


def test_cifar_archive_is_extracted_beside_itself(tmp_path):
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / cifar10.ARCHIVE).write_bytes(cifar_archive(tmp_path))
    data = load("cifar10", tmp_path)
    assert data.train.shape == (10, 3072) and (data.train[0, :1024] == 255).all()
    assert sorted(p.name for p in (tmp_path / "cifar10" / cifar10.FOLDER).iterdir()) == sorted(
        cifar10.FILES["train"] + cifar10.FILES["test"])


def test_cifar_archive_in_read_only_folder_is_extracted_under_dot_data(tmp_path, monkeypatch):
    (tmp_path / cifar10.ARCHIVE).write_bytes(cifar_archive(tmp_path))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(cifar10, "can_write", lambda folder: folder != tmp_path)
    assert load("cifar10", tmp_path).train.shape == (10, 3072)
    assert (work / "data" / "cifar10" / cifar10.FOLDER / "test_batch.bin").is_file()
    assert not (tmp_path / cifar10.FOLDER).exists()


def test_cifar_archive_member_escaping_the_folder_is_refused(tmp_path):
    evil = tarfile.TarInfo(f"{cifar10.FOLDER}/../../evil.bin")
    evil.size = 4
    (tmp_path / cifar10.ARCHIVE).write_bytes(cifar_archive(tmp_path, extra=(evil, b"evil")))
    with pytest.raises(DataError, match=rf"{cifar10.ARCHIVE}: cannot extract the CIFAR-10 archive"):
        load("cifar10", tmp_path)
    assert not (tmp_path.parent / "evil.bin").exists() and not (tmp_path / "evil.bin").exists()
    assert not (tmp_path / cifar10.FOLDER).exists()


def test_cifar_truncated_record_names_file_size_and_record_size(tmp_path):
    folder = tmp_path / "cifar10" / cifar10.FOLDER
    write_cifar_batches(folder)
    path = folder / "data_batch_1.bin"
    path.write_bytes(path.read_bytes() + bytes(100))
    with pytest.raises(DataError) as err:
        load("cifar10", tmp_path)
    assert str(err.value).startswith(
        f"{path}: truncated record: the file has 6246 bytes, not a multiple of the 3073-byte record"
    )


def test_cifar_label_outside_0_to_9_is_rejected(tmp_path):
    folder = tmp_path / cifar10.FOLDER
    write_cifar_batches(folder)
    (folder / "test_batch.bin").write_bytes(cifar_record(0, red_image()) + cifar_record(10, red_image()))
    with pytest.raises(DataError, match=r"test_batch.bin: label 10 of record 1 outside 0..9"):
        load("cifar10", tmp_path)


def test_cifar_missing_folder_names_folders_files_and_fix(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        load("cifar10", root)
    message = str(err.value)
    assert f"looked in {root / 'cifar10' / cifar10.FOLDER} and {root / cifar10.FOLDER}" in message
    assert "data_batch_1.bin" in message and "test_batch.bin" in message and cifar10.ARCHIVE in message
    assert "set data.download: true in the study" in message


def test_cifar_download_verifies_md5_and_extracts(tmp_path, monkeypatch):
    payload = cifar_archive(tmp_path)
    urls = []
    monkeypatch.setattr(cifar10, "ARCHIVE_MD5", hashlib.md5(payload).hexdigest())
    monkeypatch.setattr(cifar10, "fetch_url", lambda url, out: (urls.append(url), out.write(payload)))
    data = load("cifar10", tmp_path / "root", download=True)
    assert urls == [cifar10.URL] and data.train.shape == (10, 3072)
    assert (tmp_path / "root" / "cifar10" / cifar10.ARCHIVE).read_bytes() == payload


def test_cifar_download_md5_mismatch_names_hashes_and_removes_partial_file(tmp_path, monkeypatch):
    corrupt = b"not the CIFAR-10 archive"
    monkeypatch.setattr(cifar10, "fetch_url", lambda url, out: out.write(corrupt))
    with pytest.raises(DataError) as err:
        load("cifar10", tmp_path, download=True)
    assert (f"md5 mismatch for {cifar10.ARCHIVE}: expected c32a1d4ab5d03f1284b67883e8d87530, "
            f"found {hashlib.md5(corrupt).hexdigest()}") in str(err.value)
    assert list((tmp_path / "cifar10").iterdir()) == []


def test_interrupted_download_removes_partial_file(tmp_path, monkeypatch):
    def fail_halfway(url, out):
        out.write(b"half of the file")
        raise ConnectionResetError("connection reset by peer")

    monkeypatch.setattr(svhn, "fetch_url", fail_halfway)
    with pytest.raises(DataError, match=r"svhn/train_32x32.mat: download failed from every mirror: .*connection reset"):
        load("svhn", tmp_path, download=True)
    assert list((tmp_path / "svhn").iterdir()) == []


# ---- SVHN: MATLAB files, X (32, 32, 3, N) uint8, y (N, 1) labels 1..10 ----

def write_svhn(path: Path, x: np.ndarray | None, y: np.ndarray | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {k: v for k, v in (("X", x), ("y", y)) if v is not None})


def svhn_arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
    y = rng.integers(1, 11, size=(n, 1)).astype(np.uint8)
    y[0, 0] = 10
    return x, y


def test_svhn_images_are_transposed_to_chw_and_label_10_is_digit_0(tmp_path):
    x_train, y_train = svhn_arrays(6, seed=1)
    x_train[:, :, :, 1] = 0
    x_train[:, :, 0, 1] = 255  # image 1: red plane only
    x_test, y_test = svhn_arrays(4, seed=2)
    write_svhn(tmp_path / "svhn" / "train_32x32.mat", x_train, y_train)
    write_svhn(tmp_path / "test_32x32.mat", x_test, y_test)
    data = load("svhn", tmp_path, n_train=5)
    assert data.train.shape == (5, 3072) and data.test.shape == (4, 3072) and data.image_shape == (3, 32, 32)
    images = data.train.reshape(5, 3, 32, 32).numpy()
    np.testing.assert_array_equal(images, x_train[..., :5].transpose(3, 2, 0, 1))
    assert (images[1, 0] == 255).all() and (images[1, 1:] == 0).all()
    assert data.labels_train[0] == 0
    assert data.labels_train.tolist() == (y_train[:5, 0] % 10).tolist()
    assert data.labels_test.tolist() == (y_test[:, 0] % 10).tolist()
    assert 0 <= data.labels_train.min() and data.labels_train.max() <= 9


@pytest.mark.parametrize("key", ["X", "y"])
def test_svhn_mat_without_x_or_y_names_file_and_variable(tmp_path, key):
    x, y = svhn_arrays(3, seed=0)
    path = tmp_path / "svhn" / "test_32x32.mat"
    write_svhn(path, None if key == "X" else x, None if key == "y" else y)
    with pytest.raises(DataError, match=rf"test_32x32.mat: no variable '{key}' in the .mat file"):
        svhn.load_svhn(tmp_path, "test")


def test_svhn_images_first_layout_is_rejected(tmp_path):
    x, y = svhn_arrays(3, seed=0)
    write_svhn(tmp_path / "test_32x32.mat", x.transpose(3, 0, 1, 2), y)
    with pytest.raises(DataError, match=r"test_32x32.mat: X has shape \(3, 32, 32, 3\), expected \(32, 32, 3, N\)"):
        svhn.load_svhn(tmp_path, "test")


def test_svhn_download_verifies_md5(tmp_path, monkeypatch):
    x, y = svhn_arrays(3, seed=0)
    write_svhn(tmp_path / "official" / "test_32x32.mat", x, y)
    payload = (tmp_path / "official" / "test_32x32.mat").read_bytes()
    monkeypatch.setitem(svhn.OFFICIAL_MD5, "test_32x32.mat", hashlib.md5(payload).hexdigest())
    monkeypatch.setattr(svhn, "fetch_url", lambda url, out: out.write(payload))
    images, labels = svhn.load_svhn(tmp_path / "root", "test", download=True)
    assert images.shape == (3, 3, 32, 32) and labels[0] == 0
    assert (tmp_path / "root" / "svhn" / "test_32x32.mat").read_bytes() == payload


def test_svhn_missing_file_names_folders_files_and_fix(tmp_path):
    with pytest.raises(DataError) as err:
        load("svhn", tmp_path)
    message = str(err.value)
    assert f"looked in {tmp_path / 'svhn'} and {tmp_path} for train_32x32.mat" in message
    assert "train_32x32.mat and test_32x32.mat" in message and "set data.download: true in the study" in message


# ---- CelebA: 178x218 aligned JPEGs, list_eval_partition.txt, 140x140 centre crop to 64x64 ----

PARTITION = {"000001.jpg": 0, "000002.jpg": 0, "000003.jpg": 0, "000004.jpg": 1, "000005.jpg": 2, "000006.jpg": 2}


def face(seed: int) -> Image.Image:
    """178x218 RGB: blue background, the 140x140 centre square (x 19..158, y 39..178) red with a seeded texture."""
    pixels = np.zeros((218, 178, 3), np.uint8)
    pixels[..., 2] = 255
    rng = np.random.default_rng(seed)
    pixels[39:179, 19:159] = (230, 0, 0) + rng.integers(0, 20, size=(140, 140, 1), dtype=np.uint8)
    return Image.fromarray(pixels)


def jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def write_celeba(folder: Path, as_zip: bool = False, partition: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if as_zip:
        with zipfile.ZipFile(folder / celeba.IMAGES_ZIP, "w") as archive:
            for i, name in enumerate(PARTITION):
                archive.writestr(f"{celeba.IMAGES_FOLDER}/{name}", jpeg_bytes(face(i)))
    else:
        (folder / celeba.IMAGES_FOLDER).mkdir()
        for i, name in enumerate(PARTITION):
            (folder / celeba.IMAGES_FOLDER / name).write_bytes(jpeg_bytes(face(i)))
    if partition:
        (folder / celeba.PARTITION).write_text("".join(f"{name} {code}\n" for name, code in PARTITION.items()))


def expected_64(jpeg: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(jpeg)) as image:
        cropped = image.convert("RGB").crop((19, 39, 159, 179)).resize((64, 64), Image.BICUBIC)
    return np.asarray(cropped).transpose(2, 0, 1)


def test_celeba_is_centre_cropped_to_140_and_resized_to_64(tmp_path):
    write_celeba(tmp_path / "celeba")
    data = load("celeba64", tmp_path, n_train=2, n_test=5)
    assert data.train.shape == (2, 3 * 64 * 64) and data.test.shape == (2, 3 * 64 * 64)
    assert data.image_shape == (3, 64, 64) and data.labels_train is None and data.labels_test is None
    train = data.train.reshape(2, 3, 64, 64).numpy()
    test = data.test.reshape(2, 3, 64, 64).numpy()
    np.testing.assert_array_equal(train[1], expected_64(jpeg_bytes(face(1))))
    np.testing.assert_array_equal(test[0], expected_64(jpeg_bytes(face(4))))  # 000005.jpg: first of partition 2
    inner = train[:, :, 2:-2, 2:-2].astype(int)  # the crop keeps the red square, none of the blue background
    assert inner[:, 0].min() > 200 and inner[:, 2].max() < 40


def test_celeba_zip_gives_the_same_images_as_the_folder(tmp_path):
    write_celeba(tmp_path / "a")
    write_celeba(tmp_path / "b", as_zip=True)
    np.testing.assert_array_equal(celeba.load_celeba64(tmp_path / "a", "train"),
                                  celeba.load_celeba64(tmp_path / "b", "train"))


def test_celeba_cache_is_read_back_and_extended(tmp_path, monkeypatch):
    write_celeba(tmp_path)
    first = celeba.load_celeba64(tmp_path, "train", 1)
    cache = tmp_path / "celeba64_train_crop140_bicubic.npy"
    assert np.load(cache, allow_pickle=False).shape == (1, 3, 64, 64)
    decoded = []
    original = celeba._decode_one
    monkeypatch.setattr(celeba, "_decode_one", lambda f, where: (decoded.append(where), original(f, where))[1])
    three = celeba.load_celeba64(tmp_path, "train", 3)
    assert [Path(w).name for w in decoded] == ["000002.jpg", "000003.jpg"]
    np.testing.assert_array_equal(three[:1], first)
    decoded.clear()
    again = celeba.load_celeba64(tmp_path, "train", 3)
    assert decoded == [] and again.dtype == np.uint8
    np.testing.assert_array_equal(again, three)
    np.testing.assert_array_equal(np.load(cache, allow_pickle=False), three)


def test_celeba_cache_goes_under_dot_data_when_the_folder_is_read_only(tmp_path, monkeypatch):
    write_celeba(tmp_path / "celeba")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(celeba, "can_write", lambda folder: folder != tmp_path / "celeba")
    images = celeba.load_celeba64(tmp_path, "test")
    assert not list((tmp_path / "celeba").glob("*.npy"))
    np.testing.assert_array_equal(np.load(work / "data" / "celeba" / "celeba64_test_crop140_bicubic.npy"), images)


def test_celeba_without_partition_file_names_folder_and_file(tmp_path):
    write_celeba(tmp_path / "celeba", partition=False)
    with pytest.raises(DataError, match=rf"{tmp_path / 'celeba'}: no list_eval_partition.txt beside img_align_celeba"):
        load("celeba64", tmp_path)


def test_celeba_missing_folder_names_folders_files_and_where_to_get_them(tmp_path):
    with pytest.raises(DataError) as err:
        load("celeba64", tmp_path, download=True)
    message = str(err.value)
    assert f"looked in {tmp_path / 'celeba'} and {tmp_path} for img_align_celeba/ (or img_align_celeba.zip)" in message
    assert "list_eval_partition.txt" in message and celeba.OFFICIAL_PAGE in message


# ---- common interface ----

def test_dequantized_batch_lies_in_each_pixel_bin_and_bits_per_dim_is_on_the_8_bit_scale(tmp_path):
    write_cifar_batches(tmp_path / cifar10.FOLDER)
    data = load("cifar10", tmp_path)
    assert data.rescaling == DEQUANTIZED
    y = data.batch(data.train, torch.Generator().manual_seed(0), torch.float64)
    assert y.shape == (10, 3072) and 0 <= y.min() and y.max() < 1
    assert torch.equal(torch.floor(y * 256).to(torch.uint8), data.train)
    # density p(y) = prod_d 2 y_d on [0, 1]^D: bits/dim on the 8-bit scale = 8 - mean_d log2(2 y_d)
    log_prob = torch.log(2 * y).sum(dim=1)
    expected = 8 - np.log2(2 * y.numpy()).mean(axis=1)
    np.testing.assert_allclose(bits_per_dim(log_prob, 3072, data.rescaling).numpy(), expected, rtol=1e-12)
    assert math.isclose(bits_per_dim(torch.zeros(1, dtype=torch.float64), 3072, DEQUANTIZED).item(), 8.0)


def test_mnist_gets_its_image_shape(tmp_path):
    write_split(tmp_path / "mnist", "train", n_images=3)
    write_split(tmp_path / "mnist", "test", n_images=2)
    data = load("mnist", tmp_path)
    assert data.image_shape == (1, 28, 28) and data.train.shape == (3, 784)
    assert load_dataset("spiral", 10, 10, None, torch.Generator().manual_seed(0)).image_shape is None


@pytest.mark.parametrize("name", ["cifar10", "svhn", "celeba64"])
def test_study_accepts_the_image_datasets(name):
    assert parse_study(f"data: {{name: {name}}}").data.name == name

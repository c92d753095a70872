"""MNIST loading, verified downloads and the 8-bit likelihood scale, against known answers."""

import gzip
import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from asymnet.data import mnist
from asymnet.data.locate import DataError, find_data_dir
from asymnet.dequantization import DEQUANTIZED, Rescaling, bits_per_dim, dequantize
from asymnet.data.mnist import (
    load_mnist,
    read_idx,
)
from tests.conftest import SHARED, needs_shared



def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_split(folder: Path, split: str, n_images: int, n_labels: int | None = None, compress: bool = True):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n_images, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n_images if n_labels is None else n_labels, dtype=np.uint8)
    for name, array in zip(mnist.FILES[split], (images, labels)):
        payload = idx_bytes(array)
        if compress:
            (folder / (name + ".gz")).write_bytes(gzip.compress(payload))
        else:
            (folder / name).write_bytes(payload)
    return images, labels


def test_data_dir_precedence_is_cli_then_env_then_dot_data(monkeypatch):
    monkeypatch.setenv("ASYMNET_DATA", "/from/env")
    assert find_data_dir("/from/cli") == Path("/from/cli")
    assert find_data_dir(None) == Path("/from/env")
    monkeypatch.delenv("ASYMNET_DATA")
    assert find_data_dir(None) == Path("data")


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trips_gzip_and_raw(tmp_path, compress):
    array = np.arange(2 * 3 * 4, dtype=np.int32).reshape(2, 3, 4) - 7
    payload = idx_bytes(array, type_code=0x0C)
    path = tmp_path / "a.idx"
    path.write_bytes(gzip.compress(payload) if compress else payload)
    result = read_idx(path)
    assert result.dtype == np.int32 and result.dtype.isnative
    np.testing.assert_array_equal(result, array)


def test_truncated_idx_names_file_and_sizes(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    payload = idx_bytes(np.zeros((5, 28, 28), np.uint8))
    path.write_bytes(gzip.compress(payload[:-100]))
    with pytest.raises(DataError) as err:
        read_idx(path)
    assert str(err.value) == (
        f"{path}: truncated IDX file: header says 5x28x28 = 3920 bytes, found 3820"
    )


def test_wrong_magic_number_is_rejected(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(b"\x12\x34\x08\x01" + (3).to_bytes(4, "big") + b"\x01\x02\x03")
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: wrong magic number 0x12340801"):
        read_idx(path)


def test_missing_folder_names_folders_files_and_fix(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        load_mnist(root, "test")
    message = str(err.value)
    assert f"looked in {root / 'mnist'} and {root}" in message
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert name in message
    assert "pass --data DIR, set ASYMNET_DATA, or run with download enabled" in message


@pytest.mark.parametrize("subfolder, compress", [("mnist", True), ("", False)])
def test_local_folder_is_accepted_when_files_parse(tmp_path, subfolder, compress):
    images, labels = write_split(tmp_path / subfolder, "train", n_images=7, compress=compress)
    got_images, got_labels = load_mnist(tmp_path, "train")
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_image_label_count_mismatch_is_rejected(tmp_path):
    write_split(tmp_path / "mnist", "test", n_images=5, n_labels=4)
    with pytest.raises(DataError, match=r"image/label count mismatch: .* holds 5 images, .* holds 4 labels"):
        load_mnist(tmp_path, "test")


def fake_fetch(files: dict[str, bytes], calls: list[str]):
    def fetch(url: str) -> bytes:
        calls.append(url)
        return files[url.rsplit("/", 1)[1]]

    return fetch


def test_download_verifies_md5_and_installs_files(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    files = {
        "t10k-images-idx3-ubyte.gz": gzip.compress(idx_bytes(rng.integers(0, 256, (3, 28, 28), dtype=np.uint8))),
        "t10k-labels-idx1-ubyte.gz": gzip.compress(idx_bytes(np.array([1, 2, 3], np.uint8))),
    }
    monkeypatch.setattr(
        mnist, "OFFICIAL_MD5", {name: hashlib.md5(data).hexdigest() for name, data in files.items()}
    )
    calls = []
    monkeypatch.setattr(mnist, "fetch_url", fake_fetch(files, calls))
    images, labels = load_mnist(tmp_path, "test", download=True)
    assert images.shape == (3, 28, 28) and labels.tolist() == [1, 2, 3]
    assert calls == [mnist.MIRRORS[0] + name for name in files]
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(files)


def test_download_md5_mismatch_names_hashes_and_leaves_nothing(tmp_path, monkeypatch):
    corrupt = b"not the MNIST file"
    calls = []
    monkeypatch.setattr(mnist, "fetch_url", fake_fetch({"t10k-images-idx3-ubyte.gz": corrupt}, calls))
    with pytest.raises(DataError) as err:
        load_mnist(tmp_path, "test", download=True)
    found = hashlib.md5(corrupt).hexdigest()
    assert (
        f"md5 mismatch for t10k-images-idx3-ubyte.gz: expected 9fb629c4189551a2d022fa330f9573f3, found {found}"
        in str(err.value)
    )
    assert len(calls) == len(mnist.MIRRORS)
    assert list((tmp_path / "mnist").iterdir()) == []


@needs_shared
def test_shared_test_set_matches_official_statistics():
    images, labels = load_mnist(SHARED, "test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert images.mean() == pytest.approx(33.79, abs=0.005)
    assert images.mean() / 255 == pytest.approx(0.1325, abs=5e-5)


@needs_shared
def test_shared_training_prefix_is_accepted_without_md5():
    images, labels = load_mnist(SHARED, "train")
    assert images.shape == (24345, 28, 28)
    assert np.bincount(labels).tolist() == [2406, 2770, 2381, 2524, 2386, 2181, 2401, 2524, 2328, 2444]


def test_dequantize_stays_within_each_pixel_bin():
    pixels = torch.tensor([[[0, 255], [17, 128]]], dtype=torch.uint8).expand(500, 2, 2)
    x = dequantize(pixels, torch.Generator().manual_seed(0))
    assert x.shape == (500, 4) and x.dtype == torch.float32
    lower = pixels.reshape(500, 4).float() / 256
    assert ((x >= lower) & (x < lower + 1 / 256)).all()
    assert (x * 256 - pixels.reshape(500, 4)).mean().item() == pytest.approx(0.5, abs=0.03)


def test_dequantize_rejects_float_input():
    with pytest.raises(ValueError, match="uint8"):
        dequantize(torch.zeros(2, 784), None)


def test_uniform_density_on_unit_cube_is_8_bits_per_dim():
    log_prob = torch.zeros(3, dtype=torch.float64)  # uniform on [0, 1]^D
    assert torch.equal(bits_per_dim(log_prob, 784, DEQUANTIZED), torch.full((3,), 8.0, dtype=torch.float64))


def test_bits_per_dim_of_standard_normal_on_rescaled_pixels():
    # model value y = 2 * pixel / 256 - 1 in [-1, 1); log N(0; 0, 1) per dim = -ln(2 pi) / 2.
    rescaling = Rescaling(scale=2 / 256, offset=-1.0)
    D = 10
    log_prob = torch.tensor([-D * 0.5 * math.log(2 * math.pi)], dtype=torch.float64)
    expected = (0.5 * math.log(2 * math.pi) - math.log(2 / 256)) / math.log(2)
    assert bits_per_dim(log_prob, D, rescaling).item() == pytest.approx(expected, rel=1e-12)
    assert rescaling.log_det_per_dim == pytest.approx(math.log(2 / 256))

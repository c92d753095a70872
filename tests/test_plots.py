from pathlib import Path

import h5py
import matplotlib.image
import numpy as np
import pytest

from asymnet.plots import as_images, plot_all, plot_image_grid, plot_toy_samples, plot_training

STEPS = np.arange(0, 50, 5, dtype=np.float64)


def _write_log(path: Path, metrics: dict[str, np.ndarray], samples: dict[str, np.ndarray]) -> Path:
    """A run log with the schema of asymnet/runlog.py, written by hand."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", libver="latest") as log:
        log.attrs["asymnet_version"] = "0.1.0"
        log.attrs["study_yaml"] = "name: test\n"
        for name, values in metrics.items():
            log.create_dataset(
                f"metrics/{name}", data=np.stack([STEPS, values], axis=1), maxshape=(None, 2)
            )
        log.create_dataset("weights/W", data=np.zeros((2, 3, 3), dtype=np.float32))
        log.create_dataset("weights/W_step", data=np.array([0, 45], dtype=np.int64))
        for tag, array in samples.items():
            log.create_dataset(f"samples/{tag}", data=array.astype(np.float32))
        log.create_dataset("eval/bound", data=np.float64(np.nan))
        log.swmr_mode = True
    return path


def _all_metrics() -> dict[str, np.ndarray]:
    return {
        "loss": 10.0 / (1.0 + STEPS),
        "bound": 5.0 - 0.01 * STEPS,
        "wall_time": 0.1 * STEPS,
        "symmetry_cosine": 0.1 + 0.01 * STEPS,
        "symmetric_norm": 1.0 + 0.02 * STEPS,
        "antisymmetric_norm": 1.0 - 0.01 * STEPS,
    }


def _toy_samples() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"final": rng.standard_normal((300, 2)), "data": rng.standard_normal((500, 2)) + 1.0}


def _assert_valid_png(path: Path) -> None:
    assert path.is_file() and path.suffix == ".png"
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    assert pixels.min() < pixels.max()


def test_training_curves_and_symmetry_are_drawn(tmp_path):
    log_path = _write_log(tmp_path / "run.h5", _all_metrics(), {})
    written = plot_training(log_path, tmp_path / "figures")
    assert [path.name for path in written] == ["curves.png", "symmetry.png"]
    for path in written:
        assert path.parent == tmp_path / "figures"
        _assert_valid_png(path)


def test_missing_metrics_are_skipped_not_fatal(tmp_path):
    metrics = {"loss": _all_metrics()["loss"], "bound": np.full(len(STEPS), np.nan)}
    log_path = _write_log(tmp_path / "run.h5", metrics, {})
    written = plot_training(log_path, tmp_path)
    assert [path.name for path in written] == ["curves.png"]
    _assert_valid_png(written[0])
    assert not (tmp_path / "symmetry.png").exists()


def test_empty_log_writes_no_figures(tmp_path):
    log_path = _write_log(tmp_path / "run.h5", {}, {})
    assert plot_all(log_path, tmp_path) == []


def test_figures_default_to_the_folder_of_the_log(tmp_path):
    log_path = _write_log(tmp_path / "run.h5", _all_metrics(), {})
    assert all(path.parent == tmp_path for path in plot_training(log_path))


def test_toy_samples_over_histogram_and_over_density(tmp_path):
    log_path = _write_log(tmp_path / "run.h5", {}, _toy_samples())
    _assert_valid_png(plot_toy_samples(log_path, tmp_path / "histogram"))

    def standard_normal(points: np.ndarray) -> np.ndarray:
        return np.exp(-0.5 * (points**2).sum(axis=1)) / (2 * np.pi)

    _assert_valid_png(plot_toy_samples(log_path, tmp_path / "density", density=standard_normal))


def test_toy_samples_without_generated_points_name_the_problem(tmp_path):
    samples = {"final": np.full((10, 2), np.nan), "data": _toy_samples()["data"]}
    log_path = _write_log(tmp_path / "run.h5", {}, samples)
    with pytest.raises(ValueError, match="/samples/final"):
        plot_toy_samples(log_path, tmp_path)


def test_image_grid_accepts_flat_and_square_images(tmp_path):
    rng = np.random.default_rng(1)
    flat = rng.uniform(-0.2, 1.2, size=(23, 784))
    _assert_valid_png(plot_image_grid(flat, tmp_path / "flat.png"))
    _assert_valid_png(plot_image_grid(flat.reshape(23, 28, 28), tmp_path / "square.png", n_cols=5))
    with pytest.raises(ValueError, match=r"images must be \(n, 784\), \(n, 1, 28, 28\) or \(n, 28, 28\)"):
        plot_image_grid(np.zeros((3, 100)), tmp_path / "bad.png")


def test_colour_images_are_read_in_channel_height_width_order(tmp_path):
    rows = np.zeros((2, 3 * 4 * 5))
    rows[0, :20] = 1.0  # image 0: red plane only
    rows[1, 40:] = 0.5  # image 1: blue plane at half
    images = as_images(rows, (3, 4, 5))
    assert images.shape == (2, 4, 5, 3)
    assert (images[0, ..., 0] == 1).all() and (images[0, ..., 1:] == 0).all()
    assert (images[1, ..., 2] == 0.5).all() and (images[1, ..., :2] == 0).all()
    _assert_valid_png(plot_image_grid(rows, tmp_path / "colour.png", image_shape=(3, 4, 5)))
    with pytest.raises(ValueError, match=r"images must be \(n, 60\), \(n, 3, 4, 5\) with n >= 1"):
        as_images(np.zeros((2, 59)), (3, 4, 5))


def test_plot_all_picks_scatter_for_toys_and_grid_for_images(tmp_path):
    toy_log = _write_log(tmp_path / "toy" / "run.h5", _all_metrics(), _toy_samples())
    names = [path.name for path in plot_all(toy_log)]
    assert names == ["curves.png", "symmetry.png", "samples.png"]

    images = {"final": np.random.default_rng(2).uniform(size=(12, 28, 28)), "data": np.zeros((4, 28, 28))}
    image_log = _write_log(tmp_path / "mnist" / "run.h5", {"loss": _all_metrics()["loss"]}, images)
    written = plot_all(image_log)
    assert [path.name for path in written] == ["curves.png", "samples.png"]
    _assert_valid_png(written[-1])


def test_a_log_held_open_by_a_live_writer_can_be_plotted(tmp_path):
    log_path = tmp_path / "live.h5"
    with h5py.File(log_path, "w", libver="latest") as writer:
        writer.attrs["asymnet_version"] = "0.1.0"
        loss = writer.create_dataset("metrics/loss", shape=(0, 2), maxshape=(None, 2), dtype=np.float64)
        writer.swmr_mode = True
        loss.resize((3, 2))
        loss[:] = [[0, 3.0], [1, 2.0], [2, 1.5]]
        loss.flush()
        written = plot_training(log_path, tmp_path)
    assert [path.name for path in written] == ["curves.png"]
    _assert_valid_png(written[0])

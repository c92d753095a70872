"""Matplotlib figures from a run log: training curves, weight symmetry, toy samples, image grids.

Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas, never through pyplot, so no
display is needed and the global backend of the caller is left alone. Logs are opened read-only with
SWMR, so a live log, or one left by a killed writer, can be plotted. A metric or sample the log does
not hold (absent, empty, or NaN-filled) is skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

Density = Callable[[np.ndarray], np.ndarray]

_GRID_POINTS = 200


@contextmanager
def _open_log(log_path: str | Path, replica: int | None = None):
    """The log (or replica ``replica``'s group /replicas/<r>, which holds what a single run's log does)."""
    log_path = Path(log_path)
    if not log_path.is_file():
        raise FileNotFoundError(f"no run log at {log_path}")
    with h5py.File(log_path, "r", swmr=True) as log:
        yield log if replica is None else log[f"replicas/{replica}"]


def _output_folder(log_path: str | Path, out_dir: str | Path | None) -> Path:
    folder = Path(log_path).parent if out_dir is None else Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=100)
    return path


def _read_metric(log: h5py.File, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, values) of /metrics/<name> with non-finite rows dropped; None if nothing is logged."""
    dataset = log.get(f"metrics/{name}")
    if dataset is None:
        return None
    rows = np.asarray(dataset[...], dtype=np.float64).reshape(-1, 2)
    rows = rows[np.isfinite(rows).all(axis=1)]
    if len(rows) == 0:
        return None
    return rows[:, 0], rows[:, 1]


def _read_samples(log: h5py.File, tag: str) -> np.ndarray | None:
    """/samples/<tag> as float64 without its never-written (all-NaN) rows; None if nothing is there."""
    dataset = log.get(f"samples/{tag}")
    if dataset is None or dataset.size == 0:
        return None
    samples = np.asarray(dataset[...], dtype=np.float64)
    samples = samples.reshape(len(samples), -1)
    samples = samples[~np.isnan(samples).all(axis=1)]
    return samples if len(samples) else None


def plot_training(log_path: str | Path, out_dir: str | Path | None = None, replica: int | None = None) -> list[Path]:
    """``curves.png`` (walkback loss, held-out bound vs step) and ``symmetry.png`` (cos(W, W^T) and the
    norms of the symmetric and antisymmetric parts vs step). A panel whose metric is missing is left
    out; a figure with no panels is not written. Returns the paths written. ``replica``: that replica's."""
    folder = _output_folder(log_path, out_dir)
    with _open_log(log_path, replica) as log:
        curves = [
            (_read_metric(log, "loss"), "walkback loss (nats)"),
            (_read_metric(log, "bound"), "held-out bound (nats / example)"),
        ]
        symmetry = [
            (_read_metric(log, "symmetry_cosine"), "cos(W, W^T)", None),
            (_read_metric(log, "symmetric_norm"), "||(W + W^T)/2||_F", "symmetric"),
            (_read_metric(log, "antisymmetric_norm"), "||(W - W^T)/2||_F", "antisymmetric"),
        ]
    written = []
    curves = [(series, label) for series, label in curves if series is not None]
    if curves:
        figure = _new_figure(5.0 * len(curves), 3.5)
        for axes, ((steps, values), label) in zip(figure.subplots(1, len(curves), squeeze=False)[0], curves):
            axes.plot(steps, values)
            axes.set_xlabel("step")
            axes.set_ylabel(label)
        written.append(_save(figure, folder / "curves.png"))
    cosine, norms = symmetry[0], [entry for entry in symmetry[1:] if entry[0] is not None]
    panels = int(cosine[0] is not None) + int(bool(norms))
    if panels:
        figure = _new_figure(5.0 * panels, 3.5)
        axes_row = list(figure.subplots(1, panels, squeeze=False)[0])
        if cosine[0] is not None:
            axes = axes_row.pop(0)
            axes.plot(*cosine[0])
            axes.axhline(0.0, color="grey", linewidth=0.5)
            axes.set_xlabel("step")
            axes.set_ylabel(cosine[1])
        if norms:
            axes = axes_row.pop(0)
            for (steps, values), label, short in norms:
                axes.plot(steps, values, label=f"{short}: {label}")
            axes.set_xlabel("step")
            axes.set_ylabel("Frobenius norm")
            axes.legend()
        written.append(_save(figure, folder / "symmetry.png"))
    return written


def _grid_extent(*clouds: np.ndarray) -> tuple[float, float, float, float]:
    points = np.concatenate(clouds)
    low, high = np.percentile(points, [0.5, 99.5], axis=0)
    margin = 0.1 * (high - low) + 1e-6
    return low[0] - margin[0], high[0] + margin[0], low[1] - margin[1], high[1] + margin[1]


def plot_toy_samples(
    log_path: str | Path, out_dir: str | Path | None = None, density: Density | None = None,
    replica: int | None = None,
) -> Path:
    """``samples.png``: generated 2-D samples (/samples/final) scattered over the data density, beside
    the data (/samples/data). The background is ``density`` evaluated on a grid, density: (m, 2) ->
    (m,), when given, else a 2-D histogram of the data. ``replica``: that replica's."""
    folder = _output_folder(log_path, out_dir)
    with _open_log(log_path, replica) as log:
        generated = _read_samples(log, "final")
        data = _read_samples(log, "data")
    if generated is None or generated.shape[1] != 2:
        shape = None if generated is None else generated.shape
        raise ValueError(f"{log_path}: /samples/final must hold 2-D points (n, 2); found {shape}")
    if data is not None and data.shape[1] != 2:
        raise ValueError(f"{log_path}: /samples/data must hold 2-D points (n, 2); found {data.shape}")
    clouds = [generated] if data is None else [generated, data]
    x_low, x_high, y_low, y_high = _grid_extent(*clouds)
    figure = _new_figure(10.0, 4.8)
    generated_axes, data_axes = figure.subplots(1, 2, sharex=True, sharey=True)
    if density is not None:
        xs = np.linspace(x_low, x_high, _GRID_POINTS)
        ys = np.linspace(y_low, y_high, _GRID_POINTS)
        grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
        values = np.asarray(density(grid), dtype=np.float64).reshape(_GRID_POINTS, _GRID_POINTS)
        generated_axes.imshow(
            values, origin="lower", extent=(x_low, x_high, y_low, y_high), aspect="auto", cmap="Blues"
        )
    elif data is not None:
        generated_axes.hist2d(
            data[:, 0], data[:, 1], bins=60, range=[[x_low, x_high], [y_low, y_high]], cmap="Blues"
        )
    generated_axes.scatter(generated[:, 0], generated[:, 1], s=2, color="tab:red", alpha=0.5)
    generated_axes.set_title(f"generated ({len(generated)}) over data density")
    if data is not None:
        data_axes.scatter(data[:, 0], data[:, 1], s=2, color="tab:blue", alpha=0.5)
        data_axes.set_title(f"data ({len(data)})")
    else:
        data_axes.set_title("data: not logged")
    generated_axes.set_xlim(x_low, x_high)
    generated_axes.set_ylim(y_low, y_high)
    return _save(figure, folder / "samples.png")


MNIST_SHAPE = (1, 28, 28)


def as_images(images: np.ndarray, image_shape: tuple[int, int, int] = MNIST_SHAPE) -> np.ndarray:
    """Images (n, H, W) grey or (n, H, W, 3) colour, clipped to [0, 1], from (n, C*H*W) rows in (C, H, W)
    order, (n, C, H, W) or (n, H, W) arrays; C is 1 or 3. ValueError names the shapes it takes."""
    images = np.asarray(images, dtype=np.float64)
    channels, height, width = image_shape
    flat_width = channels * height * width
    if images.ndim == 2 and images.shape[1] == flat_width:
        images = images.reshape(-1, channels, height, width)
    elif images.ndim == 3 and channels == 1 and images.shape[1:] == (height, width):
        images = images[:, None]
    if images.ndim != 4 or images.shape[1:] != tuple(image_shape) or len(images) == 0 or channels not in (1, 3):
        raise ValueError(f"images must be (n, {flat_width}), (n, {channels}, {height}, {width})"
                         f"{f' or (n, {height}, {width})' if channels == 1 else ''} with n >= 1 and 1 or 3 channels; "
                         f"got shape {images.shape}")
    images = np.clip(np.nan_to_num(images), 0.0, 1.0)
    return images[:, 0] if channels == 1 else images.transpose(0, 2, 3, 1)


def plot_image_grid(images: np.ndarray, path: str | Path, n_cols: int = 10,
                    image_shape: tuple[int, int, int] = MNIST_SHAPE) -> Path:
    """A grid of images with values in ~[0, 1] (clipped), in any layout :func:`as_images` takes."""
    images = as_images(images, image_shape)
    height, width = images.shape[1:3]
    n_cols = min(n_cols, len(images))
    n_rows = -(-len(images) // n_cols)
    canvas = np.ones((n_rows * (height + 1) + 1, n_cols * (width + 1) + 1, *images.shape[3:]))
    for index, image in enumerate(images):
        row, col = divmod(index, n_cols)
        top, left = 1 + (height + 1) * row, 1 + (width + 1) * col
        canvas[top: top + height, left: left + width] = image
    scale = 0.6 * max(height, width) / 28
    figure = _new_figure(scale * n_cols + 0.2, scale * n_rows + 0.2)
    axes = figure.add_subplot()
    axes.imshow(canvas, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    axes.set_axis_off()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _save(figure, path)


def log_image_shape(log: h5py.Group) -> tuple[int, int, int]:
    """The (C, H, W) a run log records (root attribute image_shape); MNIST's for logs older than it."""
    shape = log.file.attrs.get("image_shape")
    return MNIST_SHAPE if shape is None else tuple(int(size) for size in shape)


def plot_all(
    log_path: str | Path, out_dir: str | Path | None = None, density: Density | None = None,
    replica: int | None = None,
) -> list[Path]:
    """Every figure the log supports: training curves and symmetry, then ``samples.png`` as a 2-D
    scatter when /samples/final has 2 columns or as an image grid when it has the pixels of the log's
    image_shape (MNIST's when the log records none). ``replica``: the
    figures of that replica's group."""
    folder = _output_folder(log_path, out_dir)
    written = plot_training(log_path, folder, replica)
    with _open_log(log_path, replica) as log:
        generated = _read_samples(log, "final")
        image_shape = log_image_shape(log)
    if generated is not None and generated.shape[1] == 2:
        written.append(plot_toy_samples(log_path, folder, density, replica))
    elif generated is not None and generated.shape[1] == int(np.prod(image_shape)):
        written.append(plot_image_grid(generated[:100], folder / "samples.png", image_shape=image_shape))
    with _open_log(log_path, replica) as log:
        window = _read_samples(log, "learning_window")
        stdp = _read_metric(log, "stdp_temporal"), _read_metric(log, "stdp_equal_time")
    if window is not None:
        written.append(plot_learning_window(window, folder / "learning_window.png"))
    if stdp[0] is not None and stdp[1] is not None:
        written.append(plot_stdp_terms(*stdp, folder / "stdp_terms.png"))
    return written


def plot_learning_window(window: np.ndarray, path: str | Path) -> Path:
    """The classic STDP window: weight change against the pre-to-post lag, in cooling order (STDP) and in
    heating order (reverse STDP). window: (n_lags, 3) rows of (lag, dW cooling, dW heating)."""
    figure = _new_figure(6, 4)
    axes = figure.subplots()
    axes.axhline(0, color="0.6", lw=0.8)
    axes.axvline(0, color="0.6", lw=0.8)
    axes.plot(window[:, 0], window[:, 1], "o-", ms=3, label="cooling (generative) order: STDP")
    axes.plot(window[:, 0], window[:, 2], "s--", ms=3, label="heating order: reverse STDP")
    axes.set_xlabel("lag tau = t_post - t_pre (steps)")
    axes.set_ylabel("weight change (per unit pulse product)")
    axes.set_title("Learning window of the local VW rule")
    axes.legend()
    return _save(figure, Path(path))


def plot_stdp_terms(temporal, equal_time, path: str | Path) -> Path:
    """|temporal (STDP) term| and |equal-time term| of the local update over training."""
    figure = _new_figure(6, 4)
    axes = figure.subplots()
    axes.plot(*temporal, label="temporal term: pre x d(post)/dt (STDP / reverse STDP)")
    axes.plot(*equal_time, label="equal-time term: alpha pre x (post - F(post))")
    axes.set_xlabel("step")
    axes.set_ylabel("Frobenius norm of the term in dW")
    axes.set_yscale("log")
    axes.legend()
    return _save(figure, Path(path))


def plot_long_run(log_path: str | Path, path: str | Path) -> Path:
    """Quality against the number of T = 1 steps after generation (log x axis), one panel per figure,
    from /samples/long_run; the toy panels show the data's own figure (the mean MMD^2 and occupancy TV of
    exact data draws, with the draws' 5-95 % band, and the mean log p of held-out data) as a dashed line,
    and the MMD^2's Monte-Carlo p-value on a log axis; the MNIST panels the test images' own figure where the
    log holds it (/eval/test_<figure>: n_samples test images, written at the start of training; a long run
    of other --chains is at another size) and, dotted, the same figure of as many of the end of training's
    cooled samples (/eval/long_run_cooled_<figure>). Where the log holds the grid's stationary law
    (/samples/stationary, asymnet.metrics.stationary), a last panel shows it: log10 of each cell's mass, six
    decades, with the last stored step's chains over it."""
    with _open_log(log_path) as log:
        group = log["samples/long_run"]
        steps = group["steps"][()]
        curves = {name: group[name][()] for name in group if not name.startswith("step")}
        nulls = {name: values[()] for name, values in log.get("samples/long_run_null", {}).items()}
        baselines = {name: float(log[f"eval/long_run_{name}_baseline"][()]) for name in curves
                     if f"eval/long_run_{name}_baseline" in log}
        if "sample_log_density" in curves and "eval/data_log_density" in log:  # toys: the held-out data's mean log p
            baselines["sample_log_density"] = float(log["eval/data_log_density"][()])
        tests = {name: float(log[f"eval/test_{name}"][()]) for name in curves if f"eval/test_{name}" in log}
        tests = {name: value for name, value in tests.items() if np.isfinite(value)}  # NaN: never written
        baselines.update(tests)
        cooled = {name: float(log[f"eval/long_run_cooled_{name}"][()]) for name in curves
                  if f"eval/long_run_cooled_{name}" in log}
        law = None
        if "samples/stationary/law" in log:
            law = (log["samples/stationary/law"][()], log["samples/stationary/box_and_cell"][()],
                   float(log["eval/stationary_occupancy_tv"][()]), group[f"step_{int(steps[-1]):07d}"][()])
    figure = _new_figure(4 * (len(curves) + (law is not None)), 3.5)
    axes = np.atleast_1d(figure.subplots(1, len(curves) + (law is not None)))
    if law is not None:
        mass, (lo, hi, _), tv, chains = law
        shown = np.log10(np.maximum(mass.astype(np.float64), 1e-300))
        image = axes[-1].imshow(shown.T, origin="lower", extent=(lo, hi, lo, hi), cmap="viridis",
                                vmin=shown.max() - 6, vmax=shown.max())
        axes[-1].plot(chains[:, 0], chains[:, 1], ",", color="w", alpha=0.5)
        figure.colorbar(image, ax=axes[-1], label="log10 mass per cell")
        axes[-1].set_title(f"stationary law (grid), occupancy TV {tv:.3f}", fontsize=9)
    for ax, (name, values) in zip(axes, sorted(curves.items())):
        ax.plot(steps, values, "o-", ms=4)
        if name in baselines:
            label = ("test images" if name in tests else "held-out data" if name == "sample_log_density"
                     else "exact draws, mean")
            ax.axhline(baselines[name], ls="--", color="0.4", label=label)
            ax.margins(y=0.1)
            if name == "mmd":
                ax.axhline(3 * baselines[name], ls=":", color="0.4", label="3 x baseline")
            if name in nulls and len(nulls[name]) > 1:
                low, high = np.quantile(nulls[name], [0.05, 0.95])
                ax.axhspan(low, high, color="0.85", zorder=0, label="exact draws, 5-95 %")
            ax.legend(fontsize=8)
        if name in cooled:
            ax.axhline(cooled[name], ls=":", color="C1", label="cooled samples, as many")
            ax.legend(fontsize=8)
        if name == "mmd_p_value":
            ax.set_yscale("log")
            ax.axhline(0.05, ls=":", color="0.4")
        ax.set_xscale("log")
        ax.set_xlabel("T = 1 steps after generation")
        ax.set_title(name)
    return _save(figure, Path(path))


def plot_inpainting(originals: np.ndarray, masked: np.ndarray, completions: np.ndarray, path: str | Path,
                    n: int = 10, image_shape: tuple[int, int, int] = MNIST_SHAPE) -> Path:
    """Three rows of n images: originals, masked inputs (mask shown grey), completions."""
    figure = _new_figure(1.2 * n, 3.9)
    axes = figure.subplots(3, n, squeeze=False)
    for row, (title, images) in enumerate([("original", originals), ("masked", masked), ("completed", completions)]):
        images = as_images(images[:n], image_shape)
        for col in range(min(n, len(images))):
            ax = axes[row, col]
            ax.imshow(images[col], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(title)
    return _save(figure, Path(path))

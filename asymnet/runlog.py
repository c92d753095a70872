"""The HDF5 run log: one file per run, written live, readable while it grows (docs/log.md).

This module alone knows HDF5. Schema (all names plain, no "/"):

- root attributes: ``asymnet_version``, ``log_schema``, ``created``, ``seed``, ``device``,
  ``torch_version``, ``study_yaml``, ... (str / int / float only; never pickle)
- ``/status``: scalar fixed-length bytes (``S512``, UTF-8): ``running`` | ``finished`` |
  ``failed: <why>``. A dataset, not an attribute, because attributes cannot change under SWMR.
- ``/metrics/<name>``: float64, shape ``(n, 2)``, rows ``(step, value)``, resizable, chunks of
  1024 rows, uncompressed.
- ``/weights/<name>``: float32, shape ``(n, *shape)``, one snapshot per chunk, and
  ``/weights/<name>_step``: int64, shape ``(n,)``, the training step of each snapshot.
- ``/samples/<tag>``: float32, fixed shape, NaN until written.
- ``/eval/<name>``: scalar float64, NaN until written.
- ``/replicas/<r>`` (a run of R independent replicas, r = 0..R-1): one group per replica holding its own
  ``metrics``, ``weights``, ``samples`` and ``eval`` as above, with attributes ``seed`` and, for a sweep,
  ``swept_key`` and ``swept_value``; the root keeps what the replicas share (``wall_time``, ...). Writers
  reach a group through :meth:`RunLog.replica`, readers with ``replica=r``.

The writer runs in SWMR mode (single writer, many readers), so ``inspect`` and notebooks can
read a live log, and a writer killed at any moment leaves a log holding everything up to its
last :meth:`RunLog.flush`. SWMR forbids new objects and attribute changes once started: every
dataset is declared up front by a :class:`LogLayout`. A live log, and one left by a killed
writer, opens only with ``swmr=True``; :func:`open_log` opens those that way and closed logs
plainly.
"""

from __future__ import annotations

import datetime
import os
import shutil
from dataclasses import dataclass, field

import h5py
import numpy as np

from asymnet import __version__
from asymnet.errors import AsymnetError

LOG_SCHEMA = 1
LOG_NAME = "log.h5"
_STATUS_DTYPE = np.dtype("S512")
_METRIC_CHUNK_ROWS = 1024
_STEP_FILL = -1


class LogError(AsymnetError):
    """A run log that cannot be written or read; the message names the file, problem and fix."""


@dataclass(frozen=True)
class LogLayout:
    """Every dataset a run will write, declared before SWMR starts.

    metrics: names of ``(step, value)`` series; weights: name -> shape of one snapshot;
    samples: tag -> shape of the sample array; evals: names of final scalar figures;
    replica_attrs: one dict of attributes per replica group ``/replicas/<r>`` (none: no replicas), each
    group holding the datasets of ``replica``.
    """

    metrics: tuple[str, ...] = ()
    weights: dict[str, tuple[int, ...]] = field(default_factory=dict)
    samples: dict[str, tuple[int, ...]] = field(default_factory=dict)
    evals: tuple[str, ...] = ()
    replica_attrs: tuple[dict, ...] = ()
    replica: "LogLayout | None" = None


@dataclass(frozen=True)
class ReplicaSummary:
    """One replica group's attributes, each metric's last row and its written evals."""

    attrs: dict
    metrics: dict[str, tuple[int, float]]
    evals: dict[str, float]


@dataclass(frozen=True)
class RunSummary:
    """What ``inspect`` prints: root attributes, status, each metric's last row, written evals."""

    path: str
    attrs: dict
    status: str
    metrics: dict[str, tuple[int, float]]
    evals: dict[str, float]
    replicas: tuple[ReplicaSummary, ...] = ()


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _check_layout(path: str, layout: LogLayout) -> None:
    groups = {
        "metric": list(layout.metrics),
        "weight": list(layout.weights),
        "sample": list(layout.samples),
        "eval": list(layout.evals),
    }
    for kind, names in groups.items():
        for name in names:
            if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
                raise LogError(
                    f"{path}: {kind} name {name!r} is not a plain name; "
                    "use a non-empty name without '/'"
                )
        if len(set(names)) != len(names):
            raise LogError(f"{path}: {kind} names {names} contain duplicates; declare each once")
    for name in layout.weights:
        if name + "_step" in layout.weights:
            raise LogError(
                f"{path}: weight names {name!r} and {name + '_step'!r} collide "
                f"(/weights/{name}_step holds the steps of {name!r}); rename one"
            )
    for kind, shapes in (("weight", layout.weights), ("sample", layout.samples)):
        for name, shape in shapes.items():
            if not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape):
                raise LogError(
                    f"{path}: {kind} {name!r} has shape {tuple(shape)}; "
                    "give a tuple of positive ints"
                )
    if layout.replica_attrs and layout.replica is None:
        raise LogError(f"{path}: the layout names {len(layout.replica_attrs)} replica groups but no "
                       "replica layout; give LogLayout(replica=...) the datasets of each group")
    for attrs in layout.replica_attrs:
        _check_attrs(path, attrs)
    if layout.replica is not None:
        _check_layout(path, layout.replica)


def _check_attrs(path: str, attrs: dict) -> dict:
    """``attrs`` with str subclasses (``torch.__version__``) made plain str, once checked."""
    for key, value in attrs.items():
        if not isinstance(key, str) or not key or "/" in key:
            raise LogError(f"{path}: root attribute name {key!r} is not a plain non-empty str")
        integers = isinstance(value, (list, tuple)) and value and all(
            isinstance(item, (int, np.integer)) and not isinstance(item, bool) for item in value)
        if not (integers or isinstance(value, (str, int, float, np.integer, np.floating))):
            raise LogError(
                f"{path}: root attribute {key!r} is a {type(value).__name__}; "
                "store a str, int, float or a list of ints (e.g. the YAML text, not the parsed study)"
            )
    return {key: str(value) if isinstance(value, str) else np.asarray(value, dtype=np.int64)
            if isinstance(value, (list, tuple)) else value for key, value in attrs.items()}


def _declare(f: h5py.File, layout: LogLayout) -> None:
    """Create the status and every dataset and replica group of ``layout`` that ``f`` lacks (before SWMR starts)."""
    if "status" not in f:
        f.create_dataset("status", data=np.array(b"running", dtype=_STATUS_DTYPE))
    _declare_datasets(f, layout)
    for r, attrs in enumerate(layout.replica_attrs):
        group = f.require_group(f"replicas/{r}")
        group.attrs.update({key: str(value) if isinstance(value, str) else value for key, value in attrs.items()})
        _declare_datasets(group, layout.replica)


def _declare_datasets(f: h5py.Group, layout: LogLayout) -> None:
    """The metrics, weights, samples and evals of ``layout`` in the file or group ``f``."""
    metrics = f.require_group("metrics")
    weights = f.require_group("weights")
    samples = f.require_group("samples")
    evals = f.require_group("eval")
    for name in layout.metrics:
        if name not in metrics:
            metrics.create_dataset(
                name,
                shape=(0, 2),
                maxshape=(None, 2),
                chunks=(_METRIC_CHUNK_ROWS, 2),
                dtype="f8",
                fillvalue=np.nan,
            )
    for name, shape in layout.weights.items():
        shape = tuple(int(d) for d in shape)
        if name in weights:
            old = weights[name].shape[1:]
            if old != shape:
                raise LogError(
                    f"{f.file.filename}: weights {name!r} have snapshots of shape {old} but the layout "
                    f"declares {shape}; resume with the network the log was written with"
                )
            continue
        weights.create_dataset(
            name, shape=(0, *shape), maxshape=(None, *shape), chunks=(1, *shape), dtype="f4"
        )
        weights.create_dataset(
            name + "_step",
            shape=(0,),
            maxshape=(None,),
            chunks=(_METRIC_CHUNK_ROWS,),
            dtype="i8",
            fillvalue=_STEP_FILL,
        )
    for tag, shape in layout.samples.items():
        shape = tuple(int(d) for d in shape)
        if tag in samples:
            if samples[tag].shape != shape:
                raise LogError(
                    f"{f.file.filename}: samples {tag!r} have shape {samples[tag].shape} but the layout "
                    f"declares {shape}; resume with the study the log was written with"
                )
            continue
        samples.create_dataset(tag, shape=shape, chunks=True, dtype="f4", fillvalue=np.nan)
    for name in layout.evals:
        if name not in evals:
            evals.create_dataset(name, data=np.float64(np.nan))


def _publish(tmp: str, path: str) -> None:
    """Make ``tmp`` durable, then atomically give it the name ``path``."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _build_and_publish(path: str, fill) -> h5py.File:
    """Fill a new file at ``path + ".tmp"`` with ``fill(f)``, start SWMR, rename it to ``path``;
    return it open for writing. On any failure the ``.tmp`` is removed and ``path`` untouched."""
    tmp = path + ".tmp"
    try:
        f = h5py.File(tmp, "w", libver="latest")
    except OSError as error:
        raise LogError(
            f"cannot create run log {tmp}: {_one_line(error)}; "
            "check that its directory exists and is writable"
        ) from error
    try:
        fill(f)
        f.swmr_mode = True
        f.flush()
        _publish(tmp, path)
    except BaseException:
        f.close()
        os.unlink(tmp)
        raise
    return f


def _as_float32(array) -> np.ndarray:
    if hasattr(array, "detach"):
        array = array.detach().cpu().float().numpy()
    return np.asarray(array, dtype=np.float32)


class RunLog:
    """The writer: a log in SWMR mode whose datasets were all declared by a :class:`LogLayout`.

    Use :meth:`create` for a new run and :meth:`resume` after a checkpoint; call :meth:`flush`
    whenever what was written should survive a kill. As a context manager, an exception marks
    the run ``failed: <exception>`` before closing.
    """

    def __init__(self, f: h5py.File, path: str, group: str = ""):
        self._file = f
        self.path = path
        self._group = group  # "" for the root, "replicas/<r>/" for a replica's group

    @classmethod
    def create(cls, path, layout: LogLayout, attrs: dict) -> "RunLog":
        """Write a new log at ``path`` with ``attrs`` as root attributes and status ``running``.

        ``asymnet_version`` and ``created`` (ISO 8601, UTC) are filled in when ``attrs`` lacks
        them; ``log_schema`` is always set. The log is built at ``path + ".tmp"`` and renamed
        into place once complete, so ``path`` never names a half-made log.
        """
        path = os.fspath(path)
        if os.path.exists(path):
            raise LogError(
                f"a run log already exists at {path}; choose a new run directory, "
                "or continue that run with RunLog.resume"
            )
        _check_layout(path, layout)
        attrs = {
            "asymnet_version": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **attrs,
            "log_schema": LOG_SCHEMA,
        }
        attrs = _check_attrs(path, attrs)

        def fill(f: h5py.File) -> None:
            f.attrs.update(attrs)
            _declare(f, layout)

        f = _build_and_publish(path, fill)
        return cls(f, path)

    @classmethod
    def resume(cls, path, layout: LogLayout, step: int) -> "RunLog":
        """Reopen the log at ``path`` (closed cleanly or left by a killed writer) to go on from
        the checkpoint at ``step``.

        Metric rows and weight snapshots with a step > ``step`` are dropped (the run will redo
        them); samples, evals, root attributes and anything else in the log are kept; datasets
        that ``layout`` declares and the log lacks are added; status is set back to ``running``.
        The new log is written to ``path + ".tmp"`` and renamed over ``path``, so a kill during
        resume leaves the old log intact.
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise LogError(
                f"no run log at {path} to resume; start the run afresh with RunLog.create"
            )
        _check_layout(path, layout)

        with open_log(path) as old:

            def fill(f: h5py.File) -> None:
                f.attrs.update(dict(old.attrs))
                f.attrs["log_schema"] = LOG_SCHEMA
                _copy_truncated(old, f, step)
                _declare(f, layout)
                f["status"][()] = np.array(b"running", dtype=_STATUS_DTYPE)

            f = _build_and_publish(path, fill)
        return cls(f, path)

    def replica(self, r: int) -> "RunLog":
        """A writer of replica r's group ``/replicas/<r>``: the same file, the same methods (its
        status, flush and close are the log's)."""
        if f"replicas/{r}" not in self._file:
            raise LogError(f"{self.path}: no replica group {r}; declare the replicas in the LogLayout "
                           "(replica_attrs) given to RunLog.create")
        return RunLog(self._file, self.path, f"replicas/{r}/")

    def _dataset(self, group: str, name: str, what: str) -> h5py.Dataset:
        try:
            return self._file[self._group + group][name]
        except KeyError:
            raise LogError(
                f"{self.path}: {what} {name!r} is not in the log{' group ' + self._group if self._group else ''}; "
                "declare it in the LogLayout given to RunLog.create (no dataset can be added while the log is live)"
            ) from None

    def append(self, name: str, step: int, value: float) -> None:
        """Append the row ``(step, value)`` to ``/metrics/<name>``, float64 ``(n, 2)``."""
        if step < 0:
            raise LogError(f"{self.path}: metric {name!r} got step {step}; steps start at 0")
        series = self._dataset("metrics", name, "metric")
        n = series.shape[0]
        series.resize(n + 1, axis=0)
        series[n] = (step, float(value))

    def snapshot(self, name: str, step: int, array) -> None:
        """Append ``array`` (numpy or torch, the declared shape) to ``/weights/<name>`` as float32
        and ``step`` to ``/weights/<name>_step``."""
        if step < 0:
            raise LogError(f"{self.path}: weights {name!r} got step {step}; steps start at 0")
        snapshots = self._dataset("weights", name, "weights")
        steps = self._file[self._group + "weights"][name + "_step"]
        array = _as_float32(array)
        if array.shape != snapshots.shape[1:]:
            raise LogError(
                f"{self.path}: weights {name!r} expect shape {snapshots.shape[1:]}, "
                f"got {array.shape}; declare the shape the network really has"
            )
        n = min(snapshots.shape[0], steps.shape[0])
        snapshots.resize(n + 1, axis=0)
        snapshots[n] = array
        steps.resize(n + 1, axis=0)
        steps[n] = step

    def write_samples(self, tag: str, array) -> None:
        """Store ``array`` (numpy or torch, the declared shape) in ``/samples/<tag>`` as float32."""
        samples = self._dataset("samples", tag, "samples")
        array = _as_float32(array)
        if array.shape != samples.shape:
            raise LogError(
                f"{self.path}: samples {tag!r} expect shape {samples.shape}, got {array.shape}; "
                "declare the shape the sampler really returns"
            )
        samples[...] = array

    def write_eval(self, name: str, value: float) -> None:
        """Store the scalar ``value`` in ``/eval/<name>`` (float64)."""
        self._dataset("eval", name, "eval")[()] = float(value)

    def set_status(self, status: str) -> None:
        """Store ``running`` | ``finished`` | ``failed: <why>`` in ``/status`` (UTF-8, cut to
        512 bytes)."""
        if not (status in ("running", "finished") or status.startswith("failed: ")):
            raise LogError(
                f"{self.path}: status {status!r} is not one of 'running', 'finished', "
                "'failed: <why>'"
            )
        self._file["status"][()] = np.array(_fit_status(status), dtype=_STATUS_DTYPE)

    def flush(self) -> None:
        """Push everything written so far to the file: readers see it, a kill keeps it."""
        self._file.flush()

    def close(self) -> None:
        """Flush and close; a closed log opens with plain h5py too. Closing twice is harmless."""
        if self._file.id.valid:
            self._file.close()

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and self._file.id.valid:
            self.set_status(f"failed: {exc_type.__name__}: {_one_line(exc)}")
        self.close()


def _fit_status(status: str) -> bytes:
    encoded = status.encode("utf-8")
    if len(encoded) <= _STATUS_DTYPE.itemsize:
        return encoded
    cut = encoded[: _STATUS_DTYPE.itemsize - 3].decode("utf-8", "ignore")
    return cut.encode("utf-8") + b"..."


def _copy_truncated(old: h5py.Group, new: h5py.Group, step: int) -> None:
    """Copy ``old`` into ``new``, keeping metric rows and weight snapshots with step <= ``step``, in
    every replica group too."""
    for key in old:
        if key == "replicas":
            for r, group in old[key].items():
                target = new.require_group(f"replicas/{r}")
                target.attrs.update(dict(group.attrs))
                _copy_truncated(group, target, step)
        elif key not in ("metrics", "weights"):
            new.copy(old[key], key)
    metrics = new.create_group("metrics")
    for name, series in old.get("metrics", {}).items():
        rows = series[()]
        metrics.create_dataset(
            name,
            data=rows[rows[:, 0] <= step],
            maxshape=(None, 2),
            chunks=(_METRIC_CHUNK_ROWS, 2),
            fillvalue=np.nan,
        )
    weights = new.create_group("weights")
    old_weights = old.get("weights", {})
    for name, snapshots in old_weights.items():
        if name.endswith("_step") and name[: -len("_step")] in old_weights:
            continue
        steps = old_weights[name + "_step"][()]
        n = min(len(steps), snapshots.shape[0])
        keep = np.flatnonzero((steps[:n] >= 0) & (steps[:n] <= step))
        shape = snapshots.shape[1:]
        kept = weights.create_dataset(
            name, shape=(len(keep), *shape), maxshape=(None, *shape), chunks=(1, *shape),
            dtype="f4",
        )
        for row, index in enumerate(keep):
            kept[row] = snapshots[index]
        weights.create_dataset(
            name + "_step",
            data=steps[keep],
            maxshape=(None,),
            chunks=(_METRIC_CHUNK_ROWS,),
            fillvalue=_STEP_FILL,
        )


def add_results(path, evals: dict | None = None, samples: dict | None = None, attrs: dict | None = None,
                remove: tuple[str, ...] = ()) -> None:
    """Write the figures of a measurement made after training into the finished log at ``path``.

    ``evals``: name -> float, stored as scalar ``/eval/<name>``; ``samples``: tag -> array (a tag
    may hold ``/``, e.g. ``long_run/step_100``), stored float32 under ``/samples/<tag>`` except
    integer arrays (steps, labels), kept as int64; ``attrs``: name -> str, root attributes that
    record how the measurement was made. An existing entry of the same name is replaced. ``remove``: paths
    (e.g. ``samples/stationary``) deleted where present, so that a measurement that no longer makes a figure
    does not leave an earlier one's behind.

    The log is copied to ``path + ".tmp"``, changed there and renamed into place, so a kill at any
    moment leaves either the old log or the new one, never a half-written one.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, LOG_NAME)
    with open_log(path) as f:
        status = _plain(f["status"][()]) if "status" in f else "unknown"
    if status != "finished":
        raise LogError(f"{path} holds a run whose status is '{status}', not 'finished'; finish it first "
                       "(python -m asymnet.run --resume RUN_DIR) and measure it then")
    tmp = path + ".tmp"
    shutil.copyfile(path, tmp)
    try:
        with h5py.File(tmp, "r+") as f:
            for stale in remove:
                if stale in f:
                    del f[stale]
            for name, value in (evals or {}).items():
                group = f.require_group("eval")
                if name in group:
                    del group[name]
                group.create_dataset(name, data=np.float64(value))
            for tag, array in (samples or {}).items():
                group = f.require_group("samples")
                if tag in group:
                    del group[tag]
                if hasattr(array, "detach"):
                    array = array.detach().cpu().numpy()
                array = np.asarray(array)
                array = array.astype(np.int64) if np.issubdtype(array.dtype, np.integer) else _as_float32(array)
                group.create_dataset(tag, data=array)
            f.attrs.update({name: str(value) for name, value in (attrs or {}).items()})
        _publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _open_for_write(path: str) -> bool:
    """Whether the superblock (version >= 2, at offset 0) says a writer has the file open,
    or had it open when it was killed.

    Such a file opens only as a SWMR reader. Every other file opens plainly, because a SWMR
    reader retries unreadable metadata for up to an hour instead of failing.
    """
    with open(path, "rb") as raw:
        head = raw.read(12)
    if len(head) < 12:
        return False
    signature, version, consistency_flags = head[:8], head[8], head[11]
    return signature == b"\x89HDF\r\n\x1a\n" and version >= 2 and consistency_flags != 0


def open_log(path) -> h5py.File:
    """Open a run log read-only; live logs and logs of killed runs open as a SWMR reader.

    ``path`` is the log file or its run directory (then ``<dir>/log.h5``). Close the file, or
    use it as a context manager.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, LOG_NAME)
    if not os.path.isfile(path):
        raise LogError(
            f"no run log at {path}: the file does not exist; "
            f"give a run's {LOG_NAME} or the run directory holding it"
        )
    if not h5py.is_hdf5(path):
        raise LogError(f"{path} is not an HDF5 file; give the {LOG_NAME} an asymnet run wrote")
    try:
        f = h5py.File(path, "r", swmr=_open_for_write(path))
    except OSError as error:
        raise LogError(
            f"{path} is a damaged HDF5 file ({_one_line(error)}); "
            "nothing can be read from it"
        ) from error
    if "asymnet_version" not in f.attrs:
        f.close()
        raise LogError(
            f"{path} is an HDF5 file but not an asymnet run log (no root attribute "
            f"'asymnet_version'); give the {LOG_NAME} an asymnet run wrote"
        )
    schema = f.attrs.get("log_schema", LOG_SCHEMA)
    if schema > LOG_SCHEMA:
        f.close()
        raise LogError(
            f"{path} uses log schema {schema}, newer than this asymnet reads ({LOG_SCHEMA}); "
            "upgrade asymnet"
        )
    return f


def _plain(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _metric_rows(f: h5py.Group, name: str) -> np.ndarray:
    series = f["metrics"][name]
    if f.file.swmr_mode:
        series.refresh()
    rows = series[()]
    return rows[~np.isnan(rows[:, 0])]


def _last_figures(f: h5py.Group) -> tuple[dict[str, tuple[int, float]], dict[str, float]]:
    """Each metric's last ``(step, value)`` (series with rows only) and the written evals of a file or group."""
    metrics = {}
    for name in f.get("metrics", {}):
        rows = _metric_rows(f, name)
        if len(rows):
            metrics[name] = (int(rows[-1, 0]), float(rows[-1, 1]))
    evals = {}
    for name, dataset in f.get("eval", {}).items():
        value = float(dataset[()])
        if not np.isnan(value):
            evals[name] = value
    return metrics, evals


def read_summary(path) -> RunSummary:
    """Root attributes, status, each metric's last ``(step, value)`` (series with rows only)
    and the written (non-NaN) evals of the log at ``path`` (file or run directory); the same for
    each replica group, in ``replicas`` (in replica order)."""
    with open_log(path) as f:
        try:
            attrs = {key: _plain(value) for key, value in f.attrs.items()}
            status = _plain(f["status"][()]) if "status" in f else "unknown"
            metrics, evals = _last_figures(f)
            groups = f.get("replicas", {})
            replicas = tuple(
                ReplicaSummary({key: _plain(value) for key, value in groups[r].attrs.items()}, *_last_figures(groups[r]))
                for r in sorted(groups, key=int)
            )
        except (OSError, KeyError, ValueError, IndexError) as error:
            raise LogError(
                f"{f.filename} is a damaged run log ({_one_line(error)}); "
                "read what survives with asymnet.runlog.open_log"
            ) from error
        return RunSummary(f.filename, attrs, status, metrics, evals, replicas)


def _with_log(path_or_file, read):
    if isinstance(path_or_file, h5py.File):
        return read(path_or_file)
    with open_log(path_or_file) as f:
        return read(f)


def _missing(f: h5py.Group, group: str, name: str, what: str) -> LogError:
    names = sorted(n for n in f.get(group, {}) if not (group == "weights" and n.endswith("_step")))
    where = f" (replica group {f.name})" if f.name != "/" else ""
    return LogError(f"{f.file.filename}{where} has no {what} {name!r}; it has: {', '.join(names) or 'none'}")


def _replica_group(f: h5py.File, replica: int | None) -> h5py.Group:
    """The file itself, or replica ``replica``'s group, with an error naming the replicas the log has."""
    if replica is None:
        return f
    groups = f.get("replicas", {})
    if str(replica) not in groups:
        has = f"replicas 0..{len(groups) - 1}" if len(groups) else "no replicas (a single run)"
        raise LogError(f"{f.filename} has no replica {replica}; it has {has}")
    return groups[str(replica)]


def read_metric(path_or_file, name: str, replica: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``/metrics/<name>`` (``/replicas/<replica>/metrics/<name>`` with ``replica``) as ``(steps, values)``:
    int64 ``(n,)`` and float64 ``(n,)``.

    ``path_or_file`` is a path, a run directory or a file from :func:`open_log` (refreshed
    first, so a live log shows its latest flushed rows)."""

    def read(file):
        f = _replica_group(file, replica)
        if name not in f.get("metrics", {}):
            raise _missing(f, "metrics", name, "metric")
        rows = _metric_rows(f, name)
        return rows[:, 0].astype(np.int64), rows[:, 1].copy()

    return _with_log(path_or_file, read)


def read_weights(path_or_file, name: str, replica: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``/weights/<name>`` (of replica ``replica``) as ``(steps, snapshots)``: int64 ``(n,)`` and float32
    ``(n, *shape)``; ``path_or_file`` as in :func:`read_metric`."""

    def read(file):
        f = _replica_group(file, replica)
        weights = f.get("weights", {})
        if name not in weights or name + "_step" not in weights:
            raise _missing(f, "weights", name, "weights")
        snapshots, steps = weights[name], weights[name + "_step"]
        if file.swmr_mode:
            snapshots.refresh()
            steps.refresh()
        n = min(snapshots.shape[0], steps.shape[0])
        step_values = steps[:n]
        keep = step_values >= 0
        return step_values[keep], snapshots[:n][keep]

    return _with_log(path_or_file, read)

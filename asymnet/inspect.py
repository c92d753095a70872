"""``python -m asymnet.inspect RUN``: print the summary of a run log, live or finished.

RUN is a run's ``log.h5`` or its run directory. Prints the path, the status, the root
attributes (versions, seed, device, creation time), the study YAML, every metric's last step
and value, and the eval figures, among them those that ``asymnet.measure`` (likelihood in bits/dim, EP, relative
irreversibility), ``asymnet.sample`` (long-run quality) and ``asymnet.inpaint`` added; for a run of
independent replicas, a table of each replica's seed (and swept value), last metric values and evals,
one column per replica; ``--json`` prints the same as one JSON object. Exit status 0; 2 with one ``asymnet.inspect: error: ...``
line on stderr when RUN is missing, not HDF5, not an asymnet log, or damaged.
"""

from __future__ import annotations

import argparse
import json
import math

from asymnet.cli import run_command
from asymnet.runlog import RunSummary, read_summary

_HEADLINE_ATTRS = ("asymnet_version", "torch_version", "seed", "device", "created")


def format_summary(summary: RunSummary) -> str:
    """The text ``main`` prints for ``summary``."""
    attrs = dict(summary.attrs)
    study_yaml = attrs.pop("study_yaml", None)
    attrs.pop("study_resolved", None)  # every key with its default: the study YAML says what was asked
    lines = [f"run log: {summary.path}", f"status:  {summary.status}", ""]
    keys = [k for k in _HEADLINE_ATTRS if k in attrs] + sorted(
        k for k in attrs if k not in _HEADLINE_ATTRS
    )
    width = max((len(k) for k in keys), default=0)
    lines += [f"{key:<{width}}  {attrs[key]}" for key in keys]
    lines += ["", "study YAML:"]
    if study_yaml:
        lines += ["  " + line for line in str(study_yaml).rstrip("\n").splitlines()]
    else:
        lines.append("  (none recorded)")
    lines += ["", "metrics:"]
    if summary.metrics:
        width = max(len(name) for name in summary.metrics)
        lines.append(f"  {'name':<{width}}  {'last step':>10}  {'last value':>14}")
        for name, (step, value) in sorted(summary.metrics.items()):
            lines.append(f"  {name:<{width}}  {step:>10d}  {value:>14.6g}")
    else:
        lines.append("  (no rows yet)")
    lines += ["", "evals:"]
    if summary.evals:
        width = max(len(name) for name in summary.evals)
        evals = sorted(summary.evals.items())
        lines += [f"  {name:<{width}}  {value:.6g}" for name, value in evals]
    else:
        lines.append("  (none written yet)")
    if summary.replicas:
        lines += ["", f"replicas ({len(summary.replicas)}): attributes, last metric values, evals", *_replica_table(summary)]
    return "\n".join(lines)


def _replica_table(summary: RunSummary) -> list[str]:
    """One row per attribute, metric and eval, one column per replica (blank where a replica lacks it)."""
    rows = []
    for kind, label in (("attrs", "attributes"), ("metrics", "metrics, last value"), ("evals", "evals")):
        names = sorted({name for replica in summary.replicas for name in getattr(replica, kind)})
        if names:
            rows.append((f"[{label}]", [""] * len(summary.replicas)))
        for name in names:
            cells = []
            for replica in summary.replicas:
                value = getattr(replica, kind).get(name)
                value = value[1] if kind == "metrics" and value is not None else value
                cells.append("" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value))
            rows.append((name, cells))
    width = max([len(name) for name, _ in rows] + [7])
    column = max([len(cell) for _, cells in rows for cell in cells] + [10])
    header = f"  {'replica':<{width}}" + "".join(f"  {r:>{column}}" for r in range(len(summary.replicas)))
    return [header] + [f"  {name:<{width}}" + "".join(f"  {cell:>{column}}" for cell in cells) for name, cells in rows]


def summary_json(summary: RunSummary) -> str:
    """The summary as JSON: path, status, attrs, metrics {name: [last step, last value]}, evals {name: value}.
    Non-finite values become null, so any JSON reader accepts the output."""

    def finite(value):
        return value if not isinstance(value, float) or math.isfinite(value) else None

    return json.dumps({
        "path": str(summary.path),
        "status": summary.status,
        "attrs": {key: finite(value) for key, value in summary.attrs.items()},
        "metrics": {name: [step, finite(value)] for name, (step, value) in sorted(summary.metrics.items())},
        "evals": {name: finite(value) for name, value in sorted(summary.evals.items())},
        "replicas": [{
            "attrs": {key: finite(value) for key, value in replica.attrs.items()},
            "metrics": {name: [step, finite(value)] for name, (step, value) in sorted(replica.metrics.items())},
            "evals": {name: finite(value) for name, value in sorted(replica.evals.items())},
        } for replica in summary.replicas],
    }, indent=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="asymnet.inspect", description="Summarise an asymnet run log (live or finished)."
    )
    parser.add_argument("run", metavar="RUN", help="a run's log.h5, or the run directory")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object, for scripts")
    args = parser.parse_args(argv)

    def work() -> None:
        summary = read_summary(args.run)
        print(summary_json(summary) if args.json else format_summary(summary))

    return run_command("asymnet.inspect", work)


if __name__ == "__main__":
    raise SystemExit(main())

"""Scripts of studies/mnist_stdp_experiments.md, run on finished MNIST runs."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from asymnet.cli import error_line
from asymnet.errors import AsymnetError

EXPECTED = {int: "an integer", float: "a number"}


class UsageError(AsymnetError):
    """A script's command line that does not parse; the message ends with the script's usage line."""


def positive_int(text: str) -> int:
    """A count that must be at least 1 (steps, chains, rounds, images)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError("a positive integer")
    return value


def nonnegative_int(text: str) -> int:
    """A count that may be 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError("a non-negative integer")
    return value


def number_text(text: str) -> str:
    """A number, kept as typed (for the lines that print it so)."""
    try:
        float(text)
    except ValueError:
        raise ValueError("a number") from None
    return text


def positional(argv: Sequence[str], usage: str, *specs: tuple) -> list:
    """The values of the positional arguments ``argv``, one per spec: ``(NAME, parse)`` for a required argument,
    ``(NAME, parse, default)`` for an optional one. A last spec whose NAME ends in `` ...`` takes the rest of
    ``argv`` as a list (at least one when required). ``parse`` is int, float, str or a callable that raises
    ValueError with what it expects as its message ("a positive integer").

    Raises UsageError, its message one line ending in ``usage: <usage>``, for a missing required argument, an
    argument too many or a value that does not parse.
    """
    names = [spec[0].removesuffix(" ...") for spec in specs]
    rest = bool(specs) and specs[-1][0].endswith(" ...")
    if not rest and len(argv) > len(specs):
        after = f" after {names[-1]}" if names else ""
        raise UsageError(f"too many arguments: {' '.join(argv[len(specs):])!r}{after}; usage: {usage}")
    values = []
    for k, (name, (_, parse, *default)) in enumerate(zip(names, specs)):
        many = rest and k == len(specs) - 1
        texts = argv[k:] if many else argv[k:k + 1]
        if not texts:
            if not default:
                raise UsageError(f"missing {name}; usage: {usage}")
            values.append(default[0])
        else:
            parsed = [_parse(name, parse, text, usage) for text in texts]
            values.append(parsed if many else parsed[0])
    return values


def _parse(name: str, parse: Callable, text: str, usage: str):
    try:
        return parse(text)
    except ValueError as error:
        raise UsageError(f"{name} must be {EXPECTED.get(parse) or error}, got {text!r}; usage: {usage}") from None


def run_script(prog: str, main: Callable[[list[str]], int | None], argv: list[str] | None = None) -> int:
    """Call ``main(argv)`` (default: the command line's arguments) and return its exit status (0 for None), or,
    for an AsymnetError, print it as one line on stderr (as the package's commands do) and return its status."""
    try:
        return main(sys.argv[1:] if argv is None else argv) or 0
    except AsymnetError as error:
        print(error_line(prog, error), file=sys.stderr)
        return error.exit_status

"""What every command shares: the arguments of the measurement commands and the one error handler.

Each command (``asymnet.run``, ``sample``, ``measure``, ``inpaint``, ``inspect``) hands its work to
:func:`run_command`. An :class:`~asymnet.errors.AsymnetError` (anything the user typed or pointed at
that cannot be honoured) becomes one ``prog: error: ...`` line on stderr and the error's exit status
(2; 1 for a run that diverged); no traceback reaches the user for it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable

from asymnet.errors import AsymnetError


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """RUN_DIR, --data, --device, --seed and --quiet: the arguments every measurement command takes."""
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished run's directory")
    parser.add_argument("--data", help="data folder (default: $ASYMNET_DATA, then ./data)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=0, help="seed of the measurement (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def error_line(prog: str, error: AsymnetError) -> str:
    """The one line a command prints for ``error``: its message with the lines folded into one."""
    message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return f"{prog}: error: {message}"


def run_command(prog: str, work: Callable[[], dict[str, float] | None], print_figures: bool = True) -> int:
    """Call ``work()`` and return the command's exit status: 0, or the status of the AsymnetError it
    raised, after printing that error as one line on stderr. The figures it returns (if any) are printed
    one per line when ``print_figures``. A reader of stdout that goes away (``... | head``) ends the
    command quietly with status 141, as a shell tool killed by SIGPIPE ends."""
    try:
        figures = work()
        if print_figures:
            for name, value in (figures or {}).items():
                print(f"{name}  {value:.6g}")
        sys.stdout.flush()
    except AsymnetError as error:
        print(error_line(prog, error), file=sys.stderr)
        return error.exit_status
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's own flush finds a reader
        return 128 + signal.SIGPIPE
    return 0

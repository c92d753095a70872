"""The one base class of every error that a user's input can cause.

A study key, a data folder, a run directory, a log or checkpoint file, a command-line value: whatever
the user typed or pointed asymnet at, a problem with it raises a subclass of :class:`AsymnetError` whose
message names the problem and the fix. Every command catches the base class in one place
(:func:`asymnet.cli.run_command`) and prints the message as one line; ``exit_status`` is the status the
command then exits with (2 for bad input, 1 for a training run that diverged).
"""


class AsymnetError(Exception):
    """A problem with something the user gave; the message says what and how to fix it."""

    exit_status = 2


class RunError(AsymnetError):
    """A run directory or command-line request that cannot be honoured."""


class TrainingDiverged(AsymnetError):
    """The loss or the weights stopped being finite during training."""

    exit_status = 1

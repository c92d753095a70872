"""Where the data folder is: ``--data DIR``, then ``$ASYMNET_DATA``, then ``./data``."""

from __future__ import annotations

import os
from pathlib import Path

from asymnet.errors import AsymnetError

ENV_VAR = "ASYMNET_DATA"


class DataError(AsymnetError):
    """A data file or folder is missing, corrupt or does not match what was expected.

    The message names the file or folder, the problem, and where possible the fix.
    """


def find_data_dir(cli_dir: str | None) -> Path:
    """The data folder: ``cli_dir`` if given, else ``$ASYMNET_DATA`` if set and non-empty, else ``./data``.

    Only resolves the precedence; whether the folder holds usable files is the loader's check,
    so its error can name the files it needs.
    """
    if cli_dir:
        return Path(cli_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path("data")

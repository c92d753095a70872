"""Verified downloads and the choice of a folder this process may write to.

A download streams from each mirror in turn into a temporary file beside its destination, checks
the file's md5 against the official one, and only then renames it into place (``os.replace``,
atomic on one file system): an interrupted or corrupt download never leaves a file under the
official name, and a failed attempt leaves no partial file behind.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from asymnet.data.locate import DataError

_FETCH_TIMEOUT_S = 60
_CHUNK_BYTES = 1 << 20

Fetch = Callable[[str, BinaryIO], object]
"""``fetch(url, out)`` writes the bytes at ``url`` into the open binary file ``out``."""


def fetch_url(url: str, out: BinaryIO) -> None:
    """Stream the bytes at ``url`` into ``out``. The one place that touches the network (tests replace it)."""
    with urllib.request.urlopen(url, timeout=_FETCH_TIMEOUT_S) as response:
        shutil.copyfileobj(response, out, _CHUNK_BYTES)


def file_md5(path: Path) -> str:
    """Hex md5 of the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_verified(filename: str, folder: Path, urls: Sequence[str], md5: str, fetch: Fetch) -> Path:
    """Fetch ``filename`` into ``folder`` from the first of ``urls`` whose bytes have md5 ``md5``.

    Each attempt writes to ``folder/filename.<random>.part``; the part file is renamed to
    ``folder/filename`` when its md5 matches and deleted otherwise (mismatch, network error,
    interruption). Raises DataError naming the destination and, for each url, why it failed.
    """
    folder.mkdir(parents=True, exist_ok=True)
    destination = folder / filename
    problems = []
    for url in urls:
        fd, part = tempfile.mkstemp(dir=folder, prefix=filename + ".", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                fetch(url, out)
            found = file_md5(Path(part))
            if found == md5:
                os.replace(part, destination)
                return destination
            problems.append(f"{url}: md5 mismatch for {filename}: expected {md5}, found {found}")
        except (OSError, http.client.HTTPException) as err:
            problems.append(f"{url}: {err}")
        finally:
            Path(part).unlink(missing_ok=True)
    raise DataError(f"{destination}: download failed from every mirror: " + "; ".join(problems))


def can_write(folder: Path) -> bool:
    """Whether this process can create files in ``folder`` (created if missing), tested by doing it:
    permission bits do not tell (root ignores them; read-only mounts and quotas override them)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError:
        return False
    return True

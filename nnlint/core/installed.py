"""What is installed, read from the `.dist-info` folders on `sys.path`, without `importlib.metadata`.

Importing `importlib.metadata` (it pulls in `email`, `zipfile`, `csv` and more)
costs about as much as everything else a one-file `--static-only` run imports
besides libcst. Two questions are answered without it: whether any installed
distribution declares an entry point of a group (nnlint's plugin rules; almost
always none), and a distribution's version (a key of the cache). The folder
names (`libcst-1.9.0.dist-info`, PEP 427) and `entry_points.txt` are the
files `importlib.metadata` reads for distributions installed on the file system.
"""

from __future__ import annotations

import os
import re
import sys
from functools import cache
from pathlib import Path

_FOLDER = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+?)\.(dist-info|egg-info)$")


@cache
def _distributions() -> tuple[tuple[str, str, Path], ...]:
    """(normalized name, version, metadata folder) of every distribution on `sys.path`."""
    found = []
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            match = _FOLDER.match(name)
            if match is not None:
                normal = re.sub(r"[-_.]+", "_", match["name"]).lower()
                found.append((normal, match["version"], Path(entry or ".") / name))
    return tuple(found)


def declares_entry_points(group: str) -> bool:
    """Whether some installed distribution may declare entry points of `group`."""
    header = f"[{group}]"
    for _, _, folder in _distributions():
        try:
            text = (folder / "entry_points.txt").read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if header in text:
            return True
    return False


def version(distribution: str) -> str:
    """The installed version of `distribution`, or "?"."""
    normal = re.sub(r"[-_.]+", "_", distribution).lower()
    for name, found, _ in _distributions():
        if name == normal:
            return found
    return "?"

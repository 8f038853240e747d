"""Which files to lint (explicit paths, walked directories, exclusions) and how to read them."""

from __future__ import annotations

import fnmatch
import io
import os
import stat
import tokenize
from collections.abc import Iterable
from pathlib import Path

from nnlint.core.config import DEFAULT_EXCLUDE
from nnlint.core.errors import UsageError


def display_path(path: Path, root: Path | None = None) -> str:
    """The path as a user reads it: relative to the working directory when inside it."""
    root = root or Path.cwd()
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except (ValueError, OSError, RuntimeError):  # outside root, or a symlink loop
        return path.as_posix()


def is_excluded(path: Path, patterns: Iterable[str], root: Path) -> bool:
    """True when a pattern matches the entry's name or its path relative to `root`."""
    rel = display_path(path, root)
    for pattern in patterns:
        pattern = pattern.rstrip("/")
        if fnmatch.fnmatch(path.name, pattern) or fnmatch.fnmatch(rel, pattern):
            return True
    return False


def collect_files(paths: Iterable[str], exclude: Iterable[str], root: Path) -> list[Path]:
    """Files to lint, in a stable order. A missing path is a UsageError.

    Files named explicitly are linted even if excluded by the defaults, as with
    ruff; directories are walked for `*.py`, `*.pyi` and `*.ipynb`, skipping
    the default and configured exclusions (`exclude = ["*.ipynb"]` leaves
    notebooks out).
    """
    user_exclude = list(exclude)
    walk_exclude = [*DEFAULT_EXCLUDE, *user_exclude]
    found: dict[Path, None] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_symlink() and not path.exists():
            raise UsageError(f"{raw}: a symbolic link to nothing, or a loop of links")
        if not path.exists():
            raise UsageError(f"{raw}: no such file or directory")
        if not path.is_dir():
            if not is_excluded(path, user_exclude, root):
                found[path] = None
            continue
        for folder, dirnames, filenames in os.walk(path):
            here = Path(folder)
            dirnames[:] = sorted(
                d
                for d in dirnames
                if not is_excluded(here / d, walk_exclude, root) and not is_venv(here / d)
            )
            for name in sorted(filenames):
                file = here / name
                if (
                    name.endswith((".py", ".pyi", ".ipynb"))
                    and not is_excluded(file, walk_exclude, root)
                    and _is_regular(file)
                ):
                    found[file] = None
    return list(found)


def is_venv(folder: Path) -> bool:
    """Any virtual environment, whatever its name (an unreadable folder is none)."""
    try:
        return (folder / "pyvenv.cfg").exists()
    except OSError:
        return False


def _is_regular(file: Path) -> bool:
    """A walk lints regular files only: not FIFOs, sockets, devices or broken links."""
    try:
        return stat.S_ISREG(file.stat().st_mode)
    except OSError:
        return False


def read_source(path: Path) -> str:
    """Decode a file honouring PEP 263; raises ValueError/OSError with a readable reason."""
    mode = path.stat().st_mode
    if not stat.S_ISREG(mode):
        raise ValueError("not a regular file" + (" (a FIFO)" if stat.S_ISFIFO(mode) else ""))
    data = path.read_bytes()
    if b"\x00" in data:
        raise ValueError("binary file (contains NUL bytes)")
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError:
        raise ValueError("not valid utf-8 and no PEP 263 coding declaration") from None
    try:
        return data.decode(encoding)
    except (UnicodeDecodeError, LookupError) as exc:
        raise ValueError(
            f"not valid {encoding}: {exc.reason if hasattr(exc, 'reason') else exc}"
        ) from None

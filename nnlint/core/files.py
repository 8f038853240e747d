"""Which files to lint (explicit paths, walked directories, exclusions) and how to read them."""

from __future__ import annotations

import fnmatch
import io
import os
import stat
import tokenize
from collections.abc import Callable, Container, Iterable
from pathlib import Path

from nnlint.core.config import DEFAULT_EXCLUDE
from nnlint.core.errors import UsageError
from nnlint.core.gitignore import GitIgnore


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


def collect_files(
    paths: Iterable[str],
    exclude: Iterable[str],
    root: Path,
    in_memory: Container[Path] = (),
    *,
    gitignore: GitIgnore | None = None,
    force_exclude: bool = False,
    include: Iterable[str] = (),
    unsearchable: list[tuple[Path, str, str]] | None = None,
) -> list[Path]:
    """Files to lint, in a stable order. A missing path is a UsageError, unless its
    text is `in_memory` (keyed by resolved path).

    Files named explicitly are linted even if excluded by the defaults, as with
    ruff, unless `force_exclude` (which pre-commit hooks pass, since they name
    every changed file): then a path is skipped when it, or a folder above it
    under `root`, is excluded or git-ignored. Directories are walked for `*.py`,
    `*.pyi` and `*.ipynb`, skipping the default and configured exclusions
    (`exclude = ["*.ipynb"]` leaves notebooks out) and what `gitignore` ignores;
    `include` globs (ruff's `extend-include`, matched as exclusions are) add
    files the walk takes beside those.

    Where the operating system refuses access (no permission), the path goes to
    `unsearchable` as (path, "file" or "folder" or "path", reason) and the rest
    goes on: a folder the walk cannot list, or whose files it cannot look at,
    and a named path inside a folder that cannot be searched. Without
    `unsearchable`, such a named path is a UsageError.
    """
    extra = list(include)
    user_exclude = list(exclude)
    walk_exclude = [*DEFAULT_EXCLUDE, *user_exclude]

    def skipped(entry: Path) -> bool:
        if is_excluded(entry, walk_exclude, root) or is_venv(entry):
            return True
        return gitignore is not None and gitignore.ignored(entry)

    found: dict[Path, None] = {}
    for raw in paths:
        path = Path(raw)
        try:
            if path.is_symlink() and not path.exists():  # before resolve(), which fails on a loop
                raise UsageError(f"{raw}: a symbolic link to nothing, or a loop of links")
            if force_exclude and _forced_out(path, root, skipped):
                continue
            if path.resolve() in in_memory:
                found[path] = None
                continue
            if not path.exists():
                raise UsageError(f"{raw}: no such file or directory")
            if not path.is_dir():
                if not is_excluded(path, user_exclude, root):
                    found[path] = None
                continue
        except RuntimeError:  # Python 3.11's resolve() on a loop of links above the file
            raise UsageError(f"{raw}: a loop of symbolic links") from None
        except OSError as exc:  # a folder above it that cannot be searched
            reason = _reason(exc)
            if unsearchable is None or not isinstance(exc, PermissionError):
                raise UsageError(f"{raw}: {reason}") from None
            kind = "file" if path.suffix in (".py", ".pyi", ".ipynb") else "path"
            unsearchable.append((path, kind, reason))
            continue
        noted = _noted(unsearchable, path)
        for folder, dirnames, filenames in os.walk(path, onerror=noted):
            here = Path(folder)
            dirnames[:] = sorted(d for d in dirnames if not skipped(here / d))
            for name in sorted(filenames):
                file = here / name
                if not (name.endswith((".py", ".pyi", ".ipynb")) or is_excluded(file, extra, root)):
                    continue
                try:
                    regular = stat.S_ISREG(file.stat().st_mode)  # not FIFOs, sockets, devices
                except PermissionError as exc:  # listed, but its folder cannot be searched
                    noted(PermissionError(exc.errno, exc.strerror, folder))
                    continue
                except OSError:  # a broken link
                    continue
                if regular and not skipped(file):
                    found[file] = None
    return list(found)


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


def _noted(
    unsearchable: list[tuple[Path, str, str]] | None, top: Path
) -> Callable[[OSError], None]:
    """`os.walk`'s `onerror`: a folder it cannot list or search goes to `unsearchable`,
    with why, once, and not below a folder already there."""

    def unlisted(exc: OSError) -> None:
        if unsearchable is None:
            return
        folder = Path(exc.filename or top)
        if any(p == folder or p in folder.parents for p, _, _ in unsearchable):
            return
        unsearchable.append((folder, "folder", _reason(exc)))

    return unlisted


def _forced_out(path: Path, root: Path, skipped: Callable[[Path], bool]) -> bool:
    """Whether `path` or a folder between it and `root` is skipped (`--force-exclude`)."""
    try:
        inside = path.resolve().relative_to(root.resolve())
    except ValueError:
        return skipped(path)
    entry = root
    for part in inside.parts:
        entry = entry / part
        if skipped(entry):
            return True
    return False


def is_venv(folder: Path) -> bool:
    """Any virtual environment, whatever its name (an unreadable folder is none)."""
    try:
        return (folder / "pyvenv.cfg").exists()
    except OSError:
        return False


def not_a_file(path: str | Path) -> str | None:
    """Why `path` cannot be read as a file, in words for a usage error; None where it can."""
    try:
        if Path(path).is_file():
            return None
        return "a folder, not a file" if Path(path).is_dir() else "no such file"
    except RuntimeError:
        return "a loop of symbolic links"
    except OSError as exc:  # a folder above it that cannot be searched
        return _reason(exc)


def is_file(path: str | Path) -> bool:
    """`Path.is_file()`, False where Python 3.11 raises instead (a folder above that
    cannot be searched, a loop of links)."""
    try:
        return Path(path).is_file()
    except (OSError, RuntimeError):
        return False


def read_source(path: Path) -> str:
    """Decode a file honouring PEP 263; raises ValueError/OSError with a readable reason."""
    mode = path.stat().st_mode
    if not stat.S_ISREG(mode):
        raise ValueError("not a regular file" + (" (a FIFO)" if stat.S_ISFIFO(mode) else ""))
    return decode_source(path.read_bytes())


def decode_source(data: bytes) -> str:
    """Source bytes as text, honouring PEP 263; ValueError with a readable reason."""
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

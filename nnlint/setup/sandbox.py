"""Keep the user's code from changing the user's files while nnlint runs it.

`guarded(sandbox)` refuses, for its duration, every write, rename, deletion
and process start outside `sandbox` (a temporary directory) and `/dev/`.
Given `shared=`, it also lets writes through under those folders (the system
temp folder and the caches of torch and Hugging Face, which libraries fill on
import) except inside `protect=`, the user's project. A
PEP 578 audit hook sees `open` and the `os`/`shutil`/`subprocess` events;
`torch.save` given a file name writes from C++ and is not seen, so it is
wrapped while the guard is active. Refusals raise `Refused`, a
`PermissionError`, in the user's code.

Audit hooks cannot be removed, so one hook is installed per process and does
nothing while no guard is active.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_PROCESS = ("os.system", "subprocess", "os.exec", "os.posix_spawn", "os.spawn", "os.fork")
_PATH_EVENTS = {
    "os.remove",
    "os.rename",
    "os.rmdir",
    "os.mkdir",
    "shutil.rmtree",
    "shutil.move",
    "shutil.copyfile",
    "os.truncate",
    "os.chmod",
    "os.chown",
    "os.link",
    "os.symlink",
    "os.utime",
}

_allowed: list[str] = []  # the sandboxes of the active guards, innermost last
_shared: list[tuple[tuple[str, ...], tuple[str, ...]]] = []  # (shared, protected) per guard
_installed = False


class Refused(PermissionError):
    """nnlint refused an operation of the user's code that would change the user's files."""


def _outside(path: Any) -> bool:
    if isinstance(path, int):
        return False
    try:
        real = os.path.realpath(os.fsdecode(path))
    except (TypeError, ValueError):
        return False
    if real.startswith((*_allowed, "/dev/")):
        return False
    inside = real + os.sep  # the protected folder itself is protected too
    return not any(
        inside.startswith(shared) and not inside.startswith(protect) for shared, protect in _shared
    )


def cache_dirs() -> list[str]:
    """Where torch, Triton and Hugging Face keep caches they write on import or first use."""
    home = os.path.expanduser("~")
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")
    named = ("TORCH_HOME", "HF_HOME", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")
    found = [os.environ[name] for name in named if os.environ.get(name)]
    return [*found, *(os.path.join(cache, d) for d in ("torch", "huggingface", "triton"))]


def _prefixes(paths: Iterable[str | os.PathLike]) -> tuple[str, ...]:
    return tuple(os.path.realpath(p).rstrip(os.sep) + os.sep for p in paths)


def _audit(event: str, args: tuple) -> None:
    if not _allowed:
        return
    if event == "open":
        path, mode, flags = args
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and bool(flags & _WRITE_FLAGS)
        )
        if writes and path is not None and _outside(path):
            raise Refused(f"nnlint refused a write to {os.fsdecode(path)}")
    elif event.startswith(_PROCESS) and event != "os.fork":
        raise Refused(f"nnlint refused to start a process ({event})")
    elif event in _PATH_EVENTS:
        paths = [a for a in args[:2] if isinstance(a, str | bytes | os.PathLike)]
        if any(_outside(p) for p in paths):
            raise Refused(f"nnlint refused {event} on {os.fsdecode(paths[0])}")


def _wrap_save(original: Any) -> Any:
    @functools.wraps(original)
    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> Any:
        if _allowed and isinstance(f, str | bytes | os.PathLike) and _outside(f):
            raise Refused(f"nnlint refused torch.save to {os.fsdecode(f)}")
        return original(obj, f, *args, **kwargs)

    save.__nnlint_original__ = original
    return save


@contextlib.contextmanager
def guarded(
    sandbox: str,
    *also: str,
    shared: Iterable[str | os.PathLike] = (),
    protect: Iterable[str | os.PathLike] = (),
) -> Iterator[None]:
    """Refuse changes outside `sandbox` and `also` (and stop bytecode writes) while the block runs.

    Changes under `shared` go through unless they fall under `protect`.
    """
    global _installed
    if not _installed:
        sys.addaudithook(_audit)
        _installed = True
    allowed = _prefixes((sandbox, *also))
    _allowed.extend(allowed)
    _shared.append((_prefixes(shared), _prefixes(protect)))
    bytecode = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    torch = sys.modules.get("torch")
    saved = None
    if torch is not None and not hasattr(torch.save, "__nnlint_original__"):
        saved = torch.save
        torch.save = torch.serialization.save = _wrap_save(saved)
    try:
        yield
    finally:
        if saved is not None:
            torch.save = torch.serialization.save = saved
        sys.dont_write_bytecode = bytecode
        del _allowed[len(_allowed) - len(allowed) :]
        _shared.pop()


def forget() -> None:
    """In a forked child: drop the parent's guards; the child sets up its own."""
    _allowed.clear()
    _shared.clear()

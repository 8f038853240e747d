"""Where the user built each submodule: the line a structural finding points at.

While `recording()` is active, `nn.Module.__init__` is wrapped so that every
module built remembers the innermost stack frame in the user's code (not
torch, not site-packages, not nnlint), skipping the module's own `__init__`
frames. For `self.conv = nn.Conv2d(...)` that is the assignment line; for a
module built entirely inside a library (`torchvision.models.vgg11_bn()`,
`GPT2LMHeadModel(config)`) it is the user's line that called the library, and
the library's own line becomes the note. The wrapper is removed on exit.

API, shared by the graph and dynamic phases:

* `with recording(): model = build()` records the sites of everything built.
* `site_for(model, qualified_name) -> Site | None` answers for a submodule
  (`""` is the model itself) with `Site(path, line, note)`. Modules built
  before recording (an instance passed to `nnlint.check`) fall back to the
  `self.<attr> = ...` line of the parent's class source, then to the class
  definition of the nearest user-defined ancestor.
* `user_frame(frame)` and `is_user_file(path)` tell user code from library code;
  `raised_in(exc)` finds the model code's line in an exception's traceback.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import inspect
import linecache
import os
import re
import sys
import sysconfig
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any


def _nnlint_dirs() -> tuple[str, ...]:
    """nnlint's own folders: the package, and its rules where an editable install
    keeps them beside it (`nnlint.rules` maps to the repository's `rules/`)."""
    package = str(Path(__file__).resolve().parents[1])
    spec = importlib.util.find_spec("nnlint.rules")
    rules = str(Path(spec.origin).resolve().parent) if spec and spec.origin else package
    return tuple({package, rules})


_NNLINT_DIRS = _nnlint_dirs()
_LIBRARY_DIRS = tuple(
    {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"], *_NNLINT_DIRS}
)
_user_files: dict[str, bool] = {}


class _ByIdentity:
    """Values keyed by the object itself, held weakly, never hashing it: a module's own
    `__hash__` may read state its `__init__` has not set yet (torchmetrics' metrics,
    which Lightning builds inside `training_step`) or that changes as it runs."""

    def __init__(self) -> None:
        self._items: dict[int, tuple[weakref.ref, Any]] = {}

    def __contains__(self, obj: Any) -> bool:
        item = self._items.get(id(obj))
        return item is not None and item[0]() is obj

    def get(self, obj: Any) -> Any:
        item = self._items.get(id(obj))
        return item[1] if item is not None and item[0]() is obj else None

    def __setitem__(self, obj: Any, value: Any) -> None:
        key = id(obj)
        self._items[key] = (weakref.ref(obj, lambda _ref: self._items.pop(key, None)), value)


_sites = _ByIdentity()


@dataclass(frozen=True)
class Site:
    """A place in the user's source; `note` names the library line when the module was built there."""

    path: str
    line: int
    note: str | None = None


def _torch_dir() -> str | None:
    spec = sys.modules.get("torch")
    return str(Path(spec.__file__).resolve().parent) if spec and spec.__file__ else None


def is_user_file(path: str) -> bool:
    """True for the user's own source files; False for torch, installed packages, stdlib, nnlint."""
    known = _user_files.get(path)
    if known is not None:
        return known
    user = not (
        path.startswith("<")
        or f"{os.sep}site-packages{os.sep}" in path
        or f"{os.sep}dist-packages{os.sep}" in path
        or path.startswith(_LIBRARY_DIRS)
        or (_torch_dir() is not None and path.startswith(_torch_dir()))
    )
    _user_files[path] = user
    return user


# What runs in a frame: the user's code, torch or the standard library (which a
# walk looks through), another installed package, or nnlint itself.
USER, TORCH, PACKAGE, NNLINT = 0, 1, 2, 3
# Frame walks run once per recorded op, so each file is classified once. Keyed by
# the file name: a str caches its hash, a code object computes it on every lookup.
_file_kinds: dict[str, int] = {}


def frame_kind(frame: FrameType) -> int:
    path = frame.f_code.co_filename
    kind = _file_kinds.get(path)
    if kind is None:
        torch_dir = _torch_dir()
        if path.startswith(_NNLINT_DIRS):
            kind = NNLINT
        elif is_user_file(path):
            kind = USER
        elif torch_dir and path.startswith(torch_dir):
            kind = TORCH
        elif f"{os.sep}site-packages{os.sep}" in path or f"{os.sep}dist-packages{os.sep}" in path:
            kind = PACKAGE  # before the stdlib: a venv's platstdlib holds its site-packages
        elif path.startswith(_LIBRARY_DIRS):
            kind = TORCH
        else:
            kind = PACKAGE
        _file_kinds[path] = kind
    return kind


def is_nnlint_frame(frame: FrameType) -> bool:
    return frame_kind(frame) == NNLINT


def user_frame(frame: FrameType | None) -> FrameType | None:
    """The innermost frame at or above `frame` that runs user code.

    The walk stops at nnlint's own frames: above them is whoever called nnlint,
    not the model.
    """
    while frame is not None:
        kind = _file_kinds.get(frame.f_code.co_filename)
        if kind is None:
            kind = frame_kind(frame)
        if kind == USER:
            return frame
        if kind == NNLINT:
            return None
        frame = frame.f_back
    return None


def user_caller(frame: FrameType | None) -> FrameType | None:
    """The first frame at or above `frame` outside torch and the standard library, if it
    is user code: `x = self.conv(x)` calls Conv2d, but an HF model's line calling its
    own submodule has no user caller."""
    while frame is not None:
        kind = _file_kinds.get(frame.f_code.co_filename)
        if kind is None:
            kind = frame_kind(frame)
        if kind != TORCH:
            return frame if kind == USER else None
        frame = frame.f_back
    return None


def raised_in(exc: BaseException) -> Site | None:
    """Where the model's code raised `exc`: the innermost frame of the user's code in
    its traceback, else of another installed package (a library's model); None when
    it never left nnlint, torch and the standard library (then it is nnlint's bug)."""
    user = package = None
    tb = exc.__traceback__
    while tb is not None:
        kind = frame_kind(tb.tb_frame)
        if kind == USER:
            user = Site(tb.tb_frame.f_code.co_filename, tb.tb_lineno)
        elif kind == PACKAGE:
            package = Site(tb.tb_frame.f_code.co_filename, tb.tb_lineno)
        tb = tb.tb_next
    return user or package


def short_path(path: str) -> str:
    """A library's path from its package folder on (`transformers/models/...`)."""
    for marker in (f"{os.sep}site-packages{os.sep}", f"{os.sep}dist-packages{os.sep}"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def _site_of_init(module: Any, frame: FrameType | None) -> Site | None:
    library: FrameType | None = None
    while frame is not None and not is_nnlint_frame(frame):
        if frame.f_locals.get("self") is module:
            frame = frame.f_back  # the module's own __init__ chain, at any depth
            continue
        if is_user_file(frame.f_code.co_filename):
            note = None
            if library is not None:
                note = f"built in {short_path(library.f_code.co_filename)}:{library.f_lineno}"
            return Site(frame.f_code.co_filename, frame.f_lineno, note)
        library = library or frame
        frame = frame.f_back
    return None


@contextlib.contextmanager
def recording() -> Iterator[None]:
    """Record the construction site of every nn.Module built inside the block."""
    import torch

    original = torch.nn.Module.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        if self not in _sites:
            site = _site_of_init(self, sys._getframe(1))
            if site is not None:
                _sites[self] = site
        original(self, *args, **kwargs)

    torch.nn.Module.__init__ = init
    try:
        yield
    finally:
        torch.nn.Module.__init__ = original


def recorded(module: Any) -> Site | None:
    """The site recorded for `module` itself, if it was built while recording."""
    return _sites.get(module)


def _attribute_line(parent: Any, attr: str) -> Site | None:
    """The `self.<attr> = ...` line in the user-defined classes of `parent`."""
    pattern = re.compile(rf"\bself\.{re.escape(attr)}\s*(?::[^=]*)?=")
    for cls in type(parent).__mro__:
        try:
            path = inspect.getsourcefile(cls)
            lines, start = inspect.getsourcelines(cls)
        except (OSError, TypeError):
            continue
        if path is None or not is_user_file(path):
            continue
        for offset, text in enumerate(lines):
            if pattern.search(text):
                return Site(path, start + offset)
    return None


def _class_line(module: Any) -> Site | None:
    found = definition(type(module))
    return Site(*found) if found is not None and is_user_file(found[0]) else None


@functools.lru_cache(maxsize=512)
def definition(obj: Any) -> tuple[str, int] | None:
    """The file and first line (its first decorator's, if any) of a class or function.

    For a class, `inspect.getsourcelines` parses the whole file to find it (tens
    of milliseconds on a large file); a class whose name starts one `class`
    line only is found by reading the lines instead.
    """
    try:
        path = inspect.getsourcefile(obj)
    except TypeError:
        return None
    if path is None:
        return None
    if inspect.isclass(obj):
        linecache.checkcache(path)
        lines = linecache.getlines(path)
        pattern = re.compile(rf"\s*class\s+{re.escape(obj.__name__)}\b")
        hits = [i for i, text in enumerate(lines) if pattern.match(text)]
        if len(hits) == 1:
            start = hits[0]
            while start > 0 and lines[start - 1].lstrip().startswith("@"):
                start -= 1
            return path, start + 1
    try:
        return path, inspect.getsourcelines(obj)[1]
    except (OSError, TypeError):
        return None


def is_library_file(path: str) -> bool:
    """True for a real file of torch, an installed package or the standard library;
    False for the user's files and nnlint's placeholders (`<model>`)."""
    return (
        os.path.isabs(path)
        and not os.path.basename(path).startswith("<")
        and not is_user_file(path)
    )


def calling_site(frame: FrameType | None) -> Site | None:
    """The innermost user frame at or above `frame` (the line that called nnlint), if any."""
    found = user_frame(frame)
    return Site(found.f_code.co_filename, found.f_lineno) if found is not None else None


def user_site(site: Site | None, default: Site) -> Site:
    """`site` when it lies in the user's code, else `default`: findings never point into a library."""
    return site if site is not None and is_user_file(site.path) else default


def site_for(model: Any, qualified_name: str) -> Site | None:
    """Where the user built `model`'s submodule or parameter `qualified_name` (`""`: the model)."""
    parts = qualified_name.split(".") if qualified_name else []
    chain = [model]
    for part in parts:
        child = getattr(chain[-1], "_modules", {}).get(part)
        if child is None:
            break
        chain.append(child)
    site = recorded(chain[-1]) if len(chain) == len(parts) + 1 else None
    if site is not None:
        return site
    # A submodule or parameter assigned in a user-defined __init__: `self.<attr> = ...`.
    if parts and len(chain) >= len(parts):
        site = _attribute_line(chain[len(parts) - 1], parts[-1])
        if site is not None:
            return site
    for module in reversed(chain):
        site = recorded(module) or _class_line(module)
        if site is not None:
            return site
    return None

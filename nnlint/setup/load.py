"""Load the model named by `--model` (torch is imported only from here on).

A target spec (`package.module:Name`, `path/to/file.py:Name` or
`notebook.ipynb:Name`, for `--model`,
`--data` and `--loss`) is parsed once, by `TargetSpec.parse`; the capture child
reads the same parsed spec to patch the target before the script imports it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from nnlint.core.errors import UsageError
from nnlint.core.files import display_path
from nnlint.core.notebook import compile_notebook, is_notebook
from nnlint.setup.bounds import OutOfTime, is_out_of_memory
from nnlint.setup.sandbox import Refused
from nnlint.setup.sites import Site, definition, is_user_file

MISSING_TORCH = "--model needs PyTorch, which is not installed; pip install 'nnlint[torch]'"


@dataclass(frozen=True)
class TargetSpec:
    """`package.module:Name` or `path/to/file.py:Name`: where an object lives."""

    text: str
    module: str  # a dotted module name, or a file path
    attr: str  # a dotted attribute path inside the module
    flag: str = "--model"

    @classmethod
    def parse(cls, text: str, flag: str = "--model") -> TargetSpec:
        module, sep, attr = text.rpartition(":")
        if not sep or not module or not attr:
            raise UsageError(
                f"{flag} {text!r}: expected 'package.module:Name' or 'path/to/file.py:Name'"
            )
        return cls(text, module, attr, flag)

    @property
    def is_file(self) -> bool:
        return self.module.endswith((".py", ".ipynb")) or "/" in self.module or "\\" in self.module

    @property
    def module_name(self) -> str:
        """The name the module has in `sys.modules` once imported."""
        return Path(self.module).stem if self.is_file else self.module


def require_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise UsageError(MISSING_TORCH) from None
    return torch


def search_dirs(settings: Any) -> list[Path]:
    """The working directory and the training script's directory, as `python -m` would."""
    dirs = [settings.root]
    if settings.script:
        dirs.append(Path(settings.script).resolve().parent)
    return dirs


def put_on_path(folders: list[Path]) -> None:
    for folder in reversed(folders):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))


def module_from_file(path: Path, name: str) -> ModuleType:
    """An empty module for the file, registered in `sys.modules` as `import` does
    before running it; the caller runs it with `module.__spec__.loader.exec_module`."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    return module


class _FirstStep(BaseException):
    """Stops a training script imported for its model class at its first optimizer step."""


@contextlib.contextmanager
def _stop_at_first_step() -> Iterator[None]:
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    def stop(*_args: Any) -> None:
        raise _FirstStep()

    handle = register_optimizer_step_pre_hook(stop)
    try:
        yield
    finally:
        handle.remove()


def _import_file(spec: TargetSpec) -> ModuleType:
    """Import the spec's file. When it defined the wanted name before nnlint stopped it
    (a training script reaching its first optimizer step, or a write refused), the
    partly run module is kept: the class was all that was needed."""
    path = Path(spec.module)
    if not path.is_file():
        raise UsageError(f"{spec.flag}: {path}: no such file")
    put_on_path([path.resolve().parent])
    name, wanted = spec.module_name, spec.attr.split(".")[0]
    cached = sys.modules.get(name)
    if cached is not None and getattr(cached, "__file__", None) == str(path.resolve()):
        return cached
    if is_notebook(path):
        module = ModuleType(name)
        module.__file__ = str(path.resolve())
        sys.modules[name] = module
    else:
        module = module_from_file(path.resolve(), name)
    try:
        with _stop_at_first_step():
            if is_notebook(path):
                # its code cells in order, as running the notebook top to bottom does
                exec(compile_notebook(path), module.__dict__)
            else:
                module.__spec__.loader.exec_module(module)
    except (_FirstStep, Refused):
        if not hasattr(module, wanted):
            sys.modules.pop(name, None)
            raise
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _import_module(spec: TargetSpec) -> ModuleType:
    """The spec's module, every failure as one UsageError that says what happened."""
    where = f"{spec.flag} {spec.text!r}: importing {spec.module!r}"
    try:
        return _import_file(spec) if spec.is_file else importlib.import_module(spec.module)
    except UsageError:
        raise
    except ModuleNotFoundError as exc:
        raise UsageError(
            f"{spec.flag} {spec.text!r}: cannot import {spec.module!r}: {exc}"
        ) from None
    except SystemExit as exc:
        raise UsageError(f"{where} called sys.exit({exc.code})") from None
    except _FirstStep:
        raise UsageError(f"{where} started training before defining it") from None
    except ImportError as exc:
        hint = _dotted_hint(spec, exc) or _raised_at(exc)
        raise UsageError(f"{where} raised ImportError: {exc}{hint}") from None
    except BaseException as exc:
        if _bounded(exc):
            raise
        raise UsageError(f"{where} raised {type(exc).__name__}: {exc}{_raised_at(exc)}") from None


def _bounded(exc: BaseException) -> bool:
    """Out of time or memory: the stage's bounds report it, not as a usage error."""
    return isinstance(exc, OutOfTime | KeyboardInterrupt) or is_out_of_memory(exc)


_NNLINT = str(Path(__file__).resolve().parents[1]) + "/"


def _users(path: str) -> bool:
    return is_user_file(path) and not path.startswith(_NNLINT) and Path(path).is_file()


def _raised_at(exc: BaseException) -> str:
    """` (at model.py:12)`: the innermost line of the user's own code that raised `exc`."""
    if isinstance(exc, SyntaxError) and exc.filename and exc.lineno:
        return f" (at {display_path(Path(exc.filename))}:{exc.lineno})"
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if f.lineno and _users(f.filename)]
    if not user:
        return ""
    return f" (at {display_path(Path(user[-1].filename))}:{user[-1].lineno})"


def _dotted_hint(spec: TargetSpec, exc: ImportError) -> str:
    """For a file that uses relative imports: the dotted spec that imports it as a package."""
    if not (spec.is_file and "relative import" in str(exc)):
        return ""
    path = Path(spec.module).resolve()
    parts = [path.stem]
    folder = path.parent
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    dotted = ".".join(parts) if len(parts) > 1 else f"{path.parent.name}.{path.stem}"
    return f"; name it as a module instead: {spec.flag} {dotted}:{spec.attr}"


def import_target(spec: TargetSpec, search: list[Path]) -> Any:
    """The object the spec names, importing with `search` on sys.path."""
    put_on_path(search)
    target: Any = _import_module(spec)
    for part in spec.attr.split("."):
        if not hasattr(target, part):
            raise UsageError(
                f"{spec.flag} {spec.text!r}: {spec.module!r} has no attribute {part!r}"
            )
        target = getattr(target, part)
    return target


def build_model(spec: TargetSpec, target: Any, kwargs: dict[str, Any]) -> Any:
    """An nn.Module from a class, a factory or an instance."""
    torch = require_torch()
    name = f"--model {spec.text!r}"
    if isinstance(target, torch.nn.Module):
        if kwargs:
            raise UsageError(f"{name} is an instance; --model-kwargs cannot apply")
        return target
    if not callable(target):
        kind = type(target).__name__
        raise UsageError(f"{name} is a {kind}, not an nn.Module class, factory or instance")
    if inspect.isclass(target) and not issubclass(target, torch.nn.Module):
        raise UsageError(f"{name} is a class but not an nn.Module subclass")
    try:
        inspect.signature(target).bind(**kwargs)
    except TypeError as exc:
        hint = "" if kwargs else "; pass them with --model-kwargs '{\"name\": value}'"
        given = kwargs or "no arguments"
        raise UsageError(f"{name} cannot be built with {given}: {exc}{hint}") from None
    except ValueError:
        pass  # no signature (builtins): let the call decide
    try:
        # Seeded, so that two runs check the same weights; the global RNG is restored.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = target(**kwargs)
    except BaseException as exc:
        if _bounded(exc):
            raise
        error = f"{type(exc).__name__}: {exc}{_raised_at(exc)}"
        raise UsageError(f"{name}: building it raised {error}") from None
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"{name} returned a {type(model).__name__}, not an nn.Module")
    return model


def definition_site(target: Any, model: Any) -> Site | None:
    """The class or factory line that defines what built `model`."""
    subject = target if inspect.isclass(target) or inspect.isfunction(target) else type(model)
    found = definition(subject)
    return Site(*found) if found else None

"""Load the model named by `--model` (torch is imported only from here on)."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import io
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnlint.errors import UsageError
from nnlint.files import display_path
from nnlint.sandbox import guarded

MISSING_TORCH = "--model needs PyTorch, which is not installed; pip install 'nnlint[torch]'"


@dataclass
class LoadedModel:
    """The model instance and where the user defined what built it."""

    model: Any
    spec: str
    target: Any
    source_file: str | None
    source_line: int


def require_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise UsageError(MISSING_TORCH) from None
    return torch


def _split_spec(spec: str) -> tuple[str, str]:
    module, sep, attr = spec.rpartition(":")
    if not sep or not module or not attr:
        raise UsageError(
            f"--model {spec!r}: expected 'package.module:Name' or 'path/to/file.py:Name'"
        )
    return module, attr


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


def _import_file(path: Path, wanted: str | None = None) -> Any:
    """Import a file as a module. When it defined `wanted` before nnlint stopped it
    (a training script reaching its first optimizer step, or a write refused), the
    partly run module is kept: the class was all that was needed."""
    from nnlint.sandbox import Refused

    if not path.is_file():
        raise UsageError(f"--model: {path}: no such file")
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = path.stem
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path.resolve()):
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path.resolve())
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        with _stop_at_first_step():
            spec.loader.exec_module(module)
    except (_FirstStep, Refused):
        if wanted is None or not hasattr(module, wanted):
            sys.modules.pop(name, None)
            raise
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def import_target(spec: str, search_dirs: list[Path]) -> Any:
    """The object `module:attr` names, importing with `search_dirs` on sys.path."""
    module_part, attr = _split_spec(spec)
    for folder in reversed(search_dirs):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    try:
        if module_part.endswith(".py") or "/" in module_part or "\\" in module_part:
            module = _import_file(Path(module_part), attr.split(".")[0])
        else:
            module = importlib.import_module(module_part)
    except UsageError:
        raise
    except ModuleNotFoundError as exc:
        raise UsageError(f"--model {spec!r}: cannot import {module_part!r}: {exc}") from None
    except SystemExit as exc:
        raise UsageError(
            f"--model {spec!r}: importing {module_part!r} called sys.exit({exc.code})"
        ) from None
    except _FirstStep:
        raise UsageError(
            f"--model {spec!r}: importing {module_part!r} started training before defining it"
        ) from None
    except BaseException as exc:
        raise UsageError(
            f"--model {spec!r}: importing {module_part!r} raised {type(exc).__name__}: {exc}"
        ) from None
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise UsageError(f"--model {spec!r}: {module_part!r} has no attribute {part!r}")
        target = getattr(target, part)
    return target


def build_model(spec: str, target: Any, kwargs: dict[str, Any]) -> Any:
    """An nn.Module from a class, a factory or an instance."""
    torch = require_torch()
    if isinstance(target, torch.nn.Module):
        if kwargs:
            raise UsageError(f"--model {spec!r} is an instance; --model-kwargs cannot apply")
        return target
    if not callable(target):
        raise UsageError(
            f"--model {spec!r} is a {type(target).__name__}, not an nn.Module class, factory or instance"
        )
    if inspect.isclass(target) and not issubclass(target, torch.nn.Module):
        raise UsageError(f"--model {spec!r} is a class but not an nn.Module subclass")
    try:
        inspect.signature(target).bind(**kwargs)
    except TypeError as exc:
        hint = "" if kwargs else "; pass them with --model-kwargs '{\"name\": value}'"
        raise UsageError(
            f"--model {spec!r} cannot be built with {kwargs or 'no arguments'}: {exc}{hint}"
        ) from None
    except ValueError:
        pass  # no signature (builtins): let the call decide
    try:
        # Seeded, so that two runs check the same weights; the global RNG is restored.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = target(**kwargs)
    except BaseException as exc:
        raise UsageError(
            f"--model {spec!r}: building it raised {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"--model {spec!r} returned a {type(model).__name__}, not an nn.Module")
    return model


def _definition_site(target: Any, model: Any) -> tuple[str | None, int]:
    from nnlint.sites import definition

    subject = target if inspect.isclass(target) or inspect.isfunction(target) else type(model)
    return definition(subject) or (None, 1)


def load_model(spec: str, kwargs: dict[str, Any], search_dirs: list[Path]) -> LoadedModel:
    require_torch()
    target = import_target(spec, search_dirs)
    model = build_model(spec, target, kwargs)
    source_file, line = _definition_site(target, model)
    return LoadedModel(model, spec, target, source_file, line)


@contextlib.contextmanager
def user_output(verbose: bool) -> Iterator[None]:
    """Keep what the user's code prints out of nnlint's report on stdout.

    What the model's code prints while it is imported and run goes to stderr
    under `--verbose` and is dropped otherwise, so a JSON or SARIF report on
    stdout stays one whole document.
    """
    with contextlib.redirect_stdout(sys.stderr if verbose else io.StringIO()):
        yield


def check_device(device: str) -> None:
    """A UsageError unless `device` names a device torch can use here."""
    torch = require_torch()
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise UsageError(f"--device {device!r}: {str(exc).splitlines()[0]}") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: no CUDA device is available on this machine")
    if parsed.type == "cuda" and parsed.index is not None:
        if parsed.index >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise UsageError(f"--device {device}: this machine has {count} CUDA device(s)")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {device}: MPS is not available on this machine")


def check_overrides(settings: Any) -> None:
    """UsageErrors for model-phase flags that cannot work, before anything runs."""
    require_torch()
    if settings.capture_timeout is not None and float(settings.capture_timeout) <= 0:
        raise UsageError(f"--capture-timeout {settings.capture_timeout:g}: must be positive")
    if settings.device != "cpu":
        check_device(settings.device)
    from nnlint.inputs import _dtype
    from nnlint.training import KNOWN_LOSSES, optimizer_from_spec

    _dtype(settings.input_dtype)
    if settings.optimizer:
        try:
            optimizer_from_spec(settings.optimizer)
        except ValueError as exc:
            raise UsageError(f"--optimizer {settings.optimizer!r}: {exc}") from None
    if settings.loss:
        module, sep, attr = settings.loss.rpartition(":")
        if not sep and settings.loss not in KNOWN_LOSSES:
            known = ", ".join(KNOWN_LOSSES)
            raise UsageError(f"--loss {settings.loss!r}: unknown loss (known: {known})")
        if sep:
            for folder in reversed(search_dirs(settings)):
                if str(folder) not in sys.path:
                    sys.path.insert(0, str(folder))
            try:
                found = importlib.util.find_spec(module) if module and attr else None
            except (ImportError, ValueError):
                found = None
            if found is None:
                raise UsageError(f"--loss {settings.loss!r}: cannot find module {module!r}")


def search_dirs(settings: Any) -> list[Path]:
    """The working directory and the training script's directory, as `python -m` would."""
    dirs = [settings.root]
    if settings.script:
        dirs.append(Path(settings.script).resolve().parent)
    return dirs


def run_model_phases(
    settings: Any,
    rules: list,
    timings: dict[str, float],
    *,
    model: Any = None,
    batch: Any = None,
    loss_fn: Any = None,
    optimizer: Any = None,
    captured: Any = None,
) -> list:
    """Load the model (unless given), find an input, then run the graph and dynamic phases.

    `nnlint.api.check` passes the user's own `model`, `batch`, `loss_fn` and
    `optimizer`; the CLI passes none and the model comes from `--model`.
    `captured` is a batch taken from the training script, used when there is no `--data`.
    The user's code runs with writes outside a temporary directory refused.
    """
    from nnlint.preserve import global_rngs

    with tempfile.TemporaryDirectory(prefix="nnlint-") as sandbox, guarded(sandbox), global_rngs():
        return _run_model_phases(
            settings, rules, timings, model, batch, loss_fn, optimizer, captured
        )


def _run_model_phases(
    settings: Any,
    rules: list,
    timings: dict[str, float],
    model: Any,
    batch: Any,
    loss_fn: Any,
    optimizer: Any,
    captured: Any,
) -> list:
    from nnlint.diagnostics import NoInputs
    from nnlint.finding import Phase
    from nnlint.graph import run_graph_phase
    from nnlint.inputs import as_batch, provide_batch
    from nnlint.losses import loss_kind, loss_kind_in_script
    from nnlint.sites import Site, recording

    start = time.perf_counter()
    given = model
    if model is None:
        require_torch()
        with recording():
            loaded = load_model(settings.model, settings.model_kwargs, search_dirs(settings))
        model = loaded.model
        if getattr(settings, "device", "cpu") != "cpu":
            model.to(settings.device)
        fallback = Site(loaded.source_file, loaded.source_line) if loaded.source_file else None
    else:
        source_file, line = _definition_site(model, model)
        fallback = Site(source_file, line) if source_file else None
    timings["load"] = time.perf_counter() - start
    findings: list = []
    if not any(r.kind in (Phase.GRAPH, Phase.DYNAMIC) for r in rules):
        return findings

    # Training script run (nnlint.trainrun): forks, intercepts the model, runs the
    # dynamic checks in the child; its first batch also feeds the graph phase.
    script_run = None
    if given is None and batch is None:
        from nnlint.trainrun import learn_from_script

        script_run = learn_from_script(settings, rules, fallback, timings)
        if script_run is not None:
            findings.extend(script_run.notes)
            captured = script_run.batch if script_run.batch is not None else captured

    start = time.perf_counter()
    if batch is not None:
        batch, reason = as_batch(batch, model, "the batch given to nnlint.check"), None
    else:
        batch, reason = provide_batch(model, settings, captured)
    if batch is None:
        where = fallback or Site(str(settings.root / "<model>"), 1)
        findings.append(
            NoInputs.make(display_path(Path(where.path), settings.root), where.line, reason=reason)
        )
    loss = loss_kind(loss_fn) if loss_fn is not None else loss_kind_in_script(settings.script)
    findings.extend(run_graph_phase(model, batch, loss, rules, settings, fallback))
    timings["graph"] = time.perf_counter() - start

    # Dynamic phase (nnlint.replay): in this process unless the training script's run
    # (nnlint.trainrun, above) already ran the checks on the objects it intercepted.
    if script_run is not None and script_run.findings is not None:
        findings.extend(script_run.findings)
        timings.update(script_run.timings)
    else:
        from nnlint.replay import run_dynamic

        findings.extend(
            run_dynamic(model, batch, loss_fn, optimizer, rules, settings, fallback, timings)
        )
    return findings

"""Model-phase flags checked before anything runs: a flag that cannot work is a usage error."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

from nnlint.core.errors import UsageError
from nnlint.setup.inputs import dtype_named
from nnlint.setup.lazydynamo import defer_dynamo_import
from nnlint.setup.load import TargetSpec, put_on_path, require_torch, search_dirs
from nnlint.setup.specs import KNOWN_LOSSES, optimizer_from_spec


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
    if parsed.type not in ("cpu", "cuda", "mps", "xpu"):
        raise UsageError(f"--device {device}: nnlint runs the model, so it needs cpu, cuda or mps")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {device}: MPS is not available on this machine")


def _check_optimizer(text: str) -> None:
    """The optimizer built once on a throwaway parameter, so bad options fail here."""
    torch = require_torch()
    defer_dynamo_import()  # nnlint's own process (the CLI's): building one costs no second
    try:
        cls, options = optimizer_from_spec(text)
        cls([torch.zeros(1, requires_grad=True)], **options)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise UsageError(f"--optimizer {text!r}: {str(exc).splitlines()[0]}") from None


def _check_loss(settings: Any) -> None:
    if ":" not in settings.loss:
        if settings.loss not in KNOWN_LOSSES:
            known = ", ".join(KNOWN_LOSSES)
            raise UsageError(f"--loss {settings.loss!r}: unknown loss (known: {known})")
        return
    spec = TargetSpec.parse(settings.loss, "--loss")
    if spec.is_file:  # `--loss losses.py:focal`, as `--model` takes a path
        if not Path(spec.module).is_file():
            raise UsageError(f"--loss {settings.loss!r}: {spec.module}: no such file")
        return
    put_on_path(search_dirs(settings))
    if not module_exists(spec.module):
        raise UsageError(f"--loss {settings.loss!r}: cannot find module {spec.module!r}")


def module_exists(name: str) -> bool:
    """Whether `name` can be imported, found without running any of it: not even the
    `__init__.py` of the packages above it, which `importlib.util.find_spec` imports
    (user code runs only in the contained child)."""
    from importlib.machinery import PathFinder

    parts = name.split(".")
    try:
        found = importlib.util.find_spec(parts[0])  # a top-level name: nothing is imported
        for depth in range(2, len(parts) + 1):
            if found is None or found.submodule_search_locations is None:
                return False
            found = PathFinder.find_spec(".".join(parts[:depth]), found.submodule_search_locations)
    except (ImportError, ValueError):
        return False
    return found is not None


def check_overrides(settings: Any) -> None:
    """UsageErrors for model-phase flags that cannot work, before anything runs."""
    require_torch()
    timeout = settings.capture_timeout
    if timeout is not None and not (math.isfinite(float(timeout)) and float(timeout) > 0):
        raise UsageError(f"--capture-timeout {timeout:g}: must be a positive number of seconds")
    if settings.device != "cpu":
        check_device(settings.device)
    dtype_named(settings.input_dtype)
    if settings.optimizer:
        _check_optimizer(settings.optimizer)
    if settings.loss:
        _check_loss(settings)

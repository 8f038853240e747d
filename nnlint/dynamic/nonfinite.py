"""Where NaN or Inf first appears in a forward: the op that made it, at the user's line.

A forward hook on each module says which module's output first holds a
non-finite value, but the op that made it may run in the parent's forward (a
`0 / 0` in `Net.forward` after `conv1`), and blaming the module before it
points at a stock layer. `first_nonfinite_op` replays the forward under a
`TorchFunctionMode` and records the first op whose output holds NaN or Inf
although all its inputs were finite (a deliberate `-inf` mask is not finite
input made non-finite), with the innermost frame of the user's code that ran
it: the forward line.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from nnlint.setup.sites import user_frame
from nnlint.setup.tensors import tensors


@dataclass(frozen=True)
class NonFiniteOp:
    """The op that first made NaN or Inf from finite inputs, and the user's line that ran it."""

    op: str
    path: str
    line: int


def _finite(value: Any, depth: int = 0) -> bool:
    if isinstance(value, torch.Tensor):
        return not value.is_floating_point() or bool(torch.isfinite(value).all())
    if isinstance(value, float):
        return math.isfinite(value)
    if depth < 3 and isinstance(value, tuple | list):
        return all(_finite(v, depth + 1) for v in value)
    if depth < 3 and isinstance(value, dict):
        return all(_finite(v, depth + 1) for v in value.values())
    return True


def _name(func: Any) -> str:
    name = getattr(func, "__name__", None) or repr(func)
    module = getattr(func, "__module__", None) or ""
    if module.startswith("torch.nn.functional"):
        return f"F.{name}"
    return f"torch.{name}" if module.startswith("torch") else f"Tensor.{name}"


class _Watch(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.found: NonFiniteOp | None = None

    def __torch_function__(
        self, func: Any, types: Any, args: tuple = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.found is None and not _finite(tensors(out)) and _finite((args, kwargs)):
            frame = user_frame(sys._getframe(1))
            if frame is not None:
                self.found = NonFiniteOp(_name(func), frame.f_code.co_filename, frame.f_lineno)
        return out


def first_nonfinite_op(forward: Callable[[], Any]) -> NonFiniteOp | None:
    """The first op of `forward()` that made NaN or Inf from finite inputs in the user's code."""
    watch = _Watch()
    with torch.no_grad(), watch:
        forward()
    return watch.found

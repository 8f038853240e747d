"""Copies of the user's model for the dynamic checks, reused where that is safe.

Each check trains or probes its own copy, never the user's model. Deep-copying
a module costs milliseconds of Python per call, more than the small checks
themselves, so the copies a finished check hands back are kept (two for a
small model, since some checks compare two copies; one otherwise) and, for the
next check, have their parameters and buffers copied back from the user's
model. A copy whose structure the check changed (a hook left registered, a
module swapped, `.double()`) is dropped and the next one is a fresh deep copy.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

_HOOKS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
)


# The most parameter and buffer bytes of a model of which two spare copies are kept.
TWO_SPARES_MAX_BYTES = 64 * 2**20


class Copies:
    """Hands out copies of `model`; `take_back()` when the check using them is done."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self._lent: list[Any] = []  # handed out to the running check
        self._spares: list[tuple[Any, list]] = []  # (copy, its tensors) finished checks gave back
        self._layout = _layout(model)
        size = sum(t.numel() * t.element_size() for t in tensors_of(model))
        self._keep = 2 if size <= TWO_SPARES_MAX_BYTES else 1

    def get(self) -> Any:
        """A copy with the user's weights, buffers and `requires_grad` flags."""
        if not self._spares:
            model = copy.deepcopy(self.model)
        else:
            model, mine = self._spares.pop()
            with torch.no_grad():
                for tensor, theirs in zip(mine, tensors_of(self.model), strict=True):
                    tensor.copy_(theirs)
                    tensor.requires_grad_(theirs.requires_grad)
        self._lent.append(model)
        return model

    def take_back(self, keep: Any = None) -> None:
        """The running check is done: keep its copies that are not still in use (`keep`),
        as many as there is room for."""
        lent, self._lent = self._lent, []
        for model in reversed(lent):
            if len(self._spares) >= self._keep:
                return
            if model is not keep and _layout(model) == self._layout:
                self._spares.append((model, tensors_of(model)))


def tensors_of(model: Any) -> list:
    """`[*model.parameters(), *model.buffers()]`, in that order, from one walk of the modules."""
    modules = list(model.modules())
    return _unique(modules, "_parameters") + _unique(modules, "_buffers")


def _unique(modules: list, kind: str) -> list:
    seen: set[int] = set()
    found = []
    for module in modules:
        for tensor in getattr(module, kind).values():
            if tensor is not None and id(tensor) not in seen:
                seen.add(id(tensor))
                found.append(tensor)
    return found


def _layout(model: Any) -> tuple:
    """What a copy must share with the model to take its weights by `copy_`: the module
    types, parameter and buffer names, hook counts and each tensor's shape, dtype and device."""
    modules = list(model.modules())
    kinds = tuple(
        (
            type(m),
            tuple(m._parameters),
            tuple(m._buffers),
            tuple(len(getattr(m, h, ())) for h in _HOOKS),
        )
        for m in modules
    )
    tensors = _unique(modules, "_parameters") + _unique(modules, "_buffers")
    if any(t.is_sparse for t in tensors):
        return (object(),)  # equal to nothing: never reused
    return kinds, tuple((t.shape, t.dtype, t.device) for t in tensors)

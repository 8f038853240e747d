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
        self._spares: list[Any] = []  # ones finished checks are done with
        tensors = [*model.parameters(), *model.buffers()]
        size = sum(t.numel() * t.element_size() for t in tensors)
        self._keep = 2 if size <= TWO_SPARES_MAX_BYTES else 1

    def get(self) -> Any:
        """A copy with the user's weights, buffers and `requires_grad` flags."""
        model = self._spares.pop() if self._spares else None
        if model is None:
            model = copy.deepcopy(self.model)
        else:
            with torch.no_grad():
                pairs = (
                    *zip(model.parameters(), self.model.parameters(), strict=True),
                    *zip(model.buffers(), self.model.buffers(), strict=True),
                )
                for mine, theirs in pairs:
                    mine.copy_(theirs)
                    mine.requires_grad_(theirs.requires_grad)
        self._lent.append(model)
        return model

    def take_back(self, keep: Any = None) -> None:
        """The running check is done: keep its copies that are not still in use (`keep`),
        as many as there is room for."""
        lent, self._lent = self._lent, []
        for model in reversed(lent):
            if len(self._spares) >= self._keep:
                return
            if model is not keep and same_structure(model, self.model):
                self._spares.append(model)


def same_structure(copy_: Any, original: Any) -> bool:
    """Whether a used copy still mirrors `original`: same modules, hooks and tensor layouts."""
    mods = list(copy_.modules())
    originals = list(original.modules())
    if len(mods) != len(originals):
        return False
    for mine, theirs in zip(mods, originals, strict=True):
        if type(mine) is not type(theirs) or mine._parameters.keys() != theirs._parameters.keys():
            return False
        if mine._buffers.keys() != theirs._buffers.keys():
            return False
        if any(len(getattr(mine, h, ())) != len(getattr(theirs, h, ())) for h in _HOOKS):
            return False
    mine = [*copy_.parameters(), *copy_.buffers()]
    theirs = [*original.parameters(), *original.buffers()]
    return len(mine) == len(theirs) and all(
        a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and not a.is_sparse
        for a, b in zip(mine, theirs, strict=True)
    )

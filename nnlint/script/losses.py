"""Which loss the model is trained with, as far as graph rules care.

A loss is one of `cross_entropy` (expects logits), `nll` (expects
log-probabilities), `bce_with_logits` (expects logits) or None (unknown). It
comes from the loss object given to `nnlint.check(loss_fn=...)`, or from
reading the training script with libcst, resolving aliases such as
`from torch import nn as tnn`. Nothing here imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider, QualifiedNameProvider

from nnlint.core.notebook import is_notebook, read_notebook

_BY_NAME = {
    "CrossEntropyLoss": "cross_entropy",
    "cross_entropy": "cross_entropy",
    "NLLLoss": "nll",
    "nll_loss": "nll",
    "BCEWithLogitsLoss": "bce_with_logits",
    "binary_cross_entropy_with_logits": "bce_with_logits",
}


def loss_kind(loss_fn: Any) -> str | None:
    """The kind of a loss module, class or function (`nn.CrossEntropyLoss()`, `F.nll_loss`)."""
    if loss_fn is None:
        return None
    module = getattr(loss_fn, "__module__", "") or type(loss_fn).__module__
    name = getattr(loss_fn, "__name__", None) or type(loss_fn).__name__
    if not module.startswith("torch"):
        name = type(loss_fn).__name__
        if not type(loss_fn).__module__.startswith("torch"):
            return None
    return _BY_NAME.get(name)


def loss_kind_named(name: str | None) -> str | None:
    """The kind of a loss by its class or functional name (`cross_entropy`)."""
    return _BY_NAME.get(name or "")


class _LossCalls(cst.CSTVisitor):
    """Torch losses built or called, each with the function it is in, and the
    functions that call `.backward()`."""

    METADATA_DEPENDENCIES = (QualifiedNameProvider, PositionProvider)

    def __init__(self) -> None:
        self.found: list[tuple[int, str, int]] = []  # (line, kind, function id)
        self.backward: set[int] = set()
        self.functions: list[int] = [0]

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.functions.append(id(node))

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self.functions.pop()

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        if isinstance(func, cst.Attribute) and func.attr.value == "backward":
            self.backward.add(self.functions[-1])
        for qualified in self.get_metadata(QualifiedNameProvider, func, set()):
            parts = qualified.name.split(".")
            if parts[0] == "torch" and parts[-1] in _BY_NAME:
                line = self.get_metadata(PositionProvider, node).start.line
                self.found.append((line, _BY_NAME[parts[-1]], self.functions[-1]))


def loss_kind_in_script(path: str | Path | None) -> str | None:
    """The torch loss a training script trains with, or None.

    The first loss in a function that calls `.backward()` wins (the training
    loop, not a metric in `evaluate()`); otherwise the first loss in the file.
    """
    if not path:
        return None
    try:
        if is_notebook(path):
            source = read_notebook(Path(path)).source
        else:
            source = Path(path).read_text(encoding="utf-8")
        module = cst.parse_module(source)
    except (OSError, ValueError, cst.ParserSyntaxError):
        return None
    visitor = _LossCalls()
    MetadataWrapper(module, unsafe_skip_copy=True).visit(visitor)
    if not visitor.found:
        return None
    ranked = sorted(visitor.found, key=lambda f: (f[2] not in visitor.backward, f[0]))
    return ranked[0][1]

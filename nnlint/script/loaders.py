"""The `DataLoader`s a file builds and what each one is for (training or evaluation).

Read from the names around the construction, as a reader would: the variable it is
assigned to (`train_loader`, `self.val_dl`), the dict key or the function that
returns it (`def get_test_loader`), else the dataset handed to it (`train_set`).
A loader whose role the names do not say has none, and rules leave it alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import libcst as cst

from nnlint.script.context import ScriptContext
from nnlint.script.values import values

_LOADERS = ("torch.utils.data.DataLoader", "torch.utils.data.dataloader.DataLoader")
# DataLoader(dataset, batch_size, shuffle, sampler, batch_sampler, ...)
_POSITIONS = {"dataset": 0, "shuffle": 2, "sampler": 3, "batch_sampler": 4}
_TRAIN, _EVAL = ("train",), ("val", "valid", "validation", "test", "eval", "evaluation")
# Datasets that cannot be shuffled by the loader (streams, shards read in order on purpose).
ITERABLE = ("IterableDataset", "webdataset", "streaming=True", "split_dataset_by_node")


@dataclass(frozen=True)
class Loader:
    call: cst.Call
    role: str | None  # "train", "eval" or None when the names do not say
    arguments: dict[str, cst.BaseExpression]
    unpacked: bool  # `**kwargs` or `*args`: the arguments are not all visible

    def given(self, name: str) -> bool:
        return self.unpacked or name in self.arguments


def loaders(ctx: ScriptContext) -> list[Loader]:
    """Every `torch.utils.data.DataLoader(...)` of the file, computed once per file."""
    return ctx.shared("loaders", _find)


def _find(ctx: ScriptContext) -> list[Loader]:
    tracker = values(ctx)
    found = []
    for call in tracker.calls:
        if not ctx.qualified_name_strings(call.func) & set(_LOADERS):
            continue
        arguments: dict[str, cst.BaseExpression] = {}
        positional = [a for a in call.args if a.keyword is None and not a.star]
        for name, index in _POSITIONS.items():
            if index < len(positional):
                arguments[name] = positional[index].value
        arguments.update({a.keyword.value: a.value for a in call.args if a.keyword is not None})
        unpacked = any(a.star for a in call.args)
        role = _role(_holder_name(tracker, call))
        if role is None and "dataset" in arguments:
            role = _role(tracker.code(arguments["dataset"]))
        found.append(Loader(call, role, arguments, unpacked))
    return found


def _holder_name(tracker, call: cst.Call) -> str:
    """The name the loader is kept under: its variable, dict key or returning function."""
    parent = tracker.ctx.parent(call)
    if isinstance(parent, cst.Assign):
        return " ".join(tracker.code(t.target) for t in parent.targets)
    if isinstance(parent, cst.AnnAssign):
        return tracker.code(parent.target)
    if isinstance(parent, cst.DictElement):
        return tracker.code(parent.key)
    if isinstance(parent, cst.Return):
        fn = tracker.enclosing(parent, cst.FunctionDef)
        return fn.name.value if fn is not None else ""
    return ""


def _role(text: str) -> str | None:
    words = [w for w in re.split(r"[^a-z0-9]+", text.lower()) if w]
    train = any(w.startswith(_TRAIN) or w.endswith(_TRAIN) for w in words)
    evaluate = any(w.startswith(_EVAL) or w.endswith(_EVAL) or w == "dev" for w in words)
    if train and not evaluate:
        return "train"
    if evaluate and not train:
        return "eval"
    return None

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import libcst as cst

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import ScriptRule
from nnlint.script import edits, project
from nnlint.script.values import values

# torch 2.6 made `weights_only=True` the default of `torch.load`.
_SAFE_DEFAULT = (2, 6)
_TORCH_SPEC = re.compile(r"^\s*torch\s*(?:\[[^\]]*\])?\s*(?P<spec>[^;#]*)", re.IGNORECASE)
_LOWER = re.compile(r"(>=|==|~=|>)\s*(\d+)\.(\d+)")


class TorchLoadUnsafe(ScriptRule):
    """`torch.load` may unpickle arbitrary objects, which can run arbitrary code.

    ## What it does
    Flags `torch.load(..., weights_only=False)` always, and a `torch.load`
    without `weights_only` when the project may run on torch older than 2.6
    (whose default was `weights_only=False`): no torch floor of 2.6 or more
    is declared in the `pyproject.toml` or `requirements*.txt` of the file's
    own project (the nearest folder, from the file's up to the run root,
    that declares one).

    ## Why is this bad?
    A checkpoint is a pickle. Loading one with `weights_only=False` runs any
    code its author put in it, so a downloaded or shared checkpoint can take
    over the machine.

    ## Example
    ```python
    state = torch.load("checkpoint.pt", weights_only=False)
    ```

    ## Use instead
    ```python
    state = torch.load("checkpoint.pt", weights_only=True)
    ```

    ## Fix
    Passes `weights_only=True`. Safe where what is loaded goes straight into
    `load_state_dict(...)`; unsafe elsewhere, since a checkpoint that holds
    more than tensors would no longer load.

    ## Known problems
    When the code evidently reads more than tensors from the checkpoint (it
    calls the loaded module, or reads `ckpt["args"]`, `ckpt["model"].state_dict()`),
    `weights_only=True` would fail to load it, and the call is left alone.
    Checkpoints holding custom classes need them allow-listed with
    `torch.serialization.add_safe_globals`; keep `weights_only=False` only
    for files you created yourself, and suppress the finding there.
    """

    needs = ("load(",)
    needs_all = ("torch",)
    code = "NN209"
    name = "torch-load-unsafe"
    message = "`torch.load` {why}; pass `weights_only=True` unless the file is fully trusted"
    severity = Severity.WARNING

    invalid = (
        """
import torch
state = torch.load("ckpt.pt", map_location="cpu", weights_only=False)
""",
        """
from torch import load
state = load("ckpt.pt")
""",
    )
    fixes = (
        (
            """
import torch
model.load_state_dict(torch.load("ckpt.pt", map_location="cpu"))
""",
            """
import torch
model.load_state_dict(torch.load("ckpt.pt", map_location="cpu", weights_only=True))
""",
        ),
        (
            """
import torch
state = torch.load("ckpt.pt", weights_only=False)
""",
            """
import torch
state = torch.load("ckpt.pt", weights_only=True)
""",
        ),
    )
    valid = (
        """
import torch
state = torch.load("ckpt.pt", map_location="cpu", weights_only=True)
model.load_state_dict(state)
"""
        """
import torch
ckpt = torch.load(args.resume, map_location="cpu")
model = ckpt["model"].float()
hparams = ckpt["args"]
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        tracker = values(ctx)
        for call in tracker.calls:
            names = tracker.torch_names(call.func)
            if not names & {"torch.load", "torch.serialization.load"}:
                continue
            flag = next(
                (a.value for a in call.args if a.keyword and a.keyword.value == "weights_only"),
                None,
            )
            unsafe = isinstance(flag, cst.Name) and flag.value == "False"
            if not unsafe and (flag is not None or any(a.star for a in call.args)):
                continue
            if _holds_objects(tracker, call):
                continue  # `weights_only=True` could not load it: the advice would break the script
            if unsafe and _saved_here(tracker, call):
                continue  # an explicit opt-out to read back the script's own cache
            autofix = _weights_only(tracker, call, flag)
            if unsafe:
                why = "with `weights_only=False` unpickles arbitrary code"
                yield ctx.report(self, call, why=why, autofix=autofix)
                continue
            floor = torch_floor(ctx.path, ctx.project_root)
            if floor is None or floor < _SAFE_DEFAULT:
                declared = (
                    "no torch floor is declared"
                    if floor is None
                    else f"the declared torch floor is {floor[0]}.{floor[1]}"
                )
                why = f"defaults to `weights_only=False` before torch 2.6 ({declared})"
                yield ctx.report(self, call, why=why, autofix=autofix)


def _weights_only(tracker, call: cst.Call, flag: cst.CSTNode | None):
    """`weights_only=True` passed: safe where the result only goes into
    `load_state_dict(...)` (a state dict loads either way), unsafe elsewhere, since a
    checkpoint holding other objects would no longer load."""
    ctx = tracker.ctx
    if flag is not None:
        edit = edits.replace(ctx, flag, "True")
    elif call.args:
        edit = edits.insert_after(ctx, call.args[-1].value, ", weights_only=True")
    else:
        return None
    uses = _uses(tracker, call)
    safe = bool(uses) and all(_restored(tracker, _unmoved(tracker, u)) for u in uses)
    return edits.fix("Pass `weights_only=True`", edit, safe=safe)


def _unmoved(tracker, use: cst.CSTNode) -> cst.CSTNode:
    """`use` read through `.to(device)`-like moves, which keep a state dict one."""
    parent = tracker.ctx.parent(use)
    while isinstance(parent, cst.Attribute) and parent.value is use and parent.attr.value in _MOVES:
        call = tracker.ctx.parent(parent)
        if not isinstance(call, cst.Call):
            break
        use, parent = call, tracker.ctx.parent(call)
    return use


# What a checkpoint holding pickled objects is read for: a module's own methods,
# or entries that are argparse namespaces, datasets and configs rather than tensors.
_MODULE_ATTRS = frozenset(
    "state_dict eval train parameters named_parameters modules named_modules children "
    "forward fuse yaml".split()
)
_OBJECT_KEYS = frozenset(
    "args opt config cfg hparams hyper_parameters dataset features examples tokenizer".split()
)
_MOVES = frozenset("to cuda cpu float half double".split())
# Entries that hold either a state dict or the whole object (`checkpoint['model']`).
_WHOLE_KEYS = frozenset("model optimizer net scheduler".split())


def _holds_objects(tracker, call: cst.Call) -> bool:
    """Whether the code evidently reads more than tensors from what `call` loads."""
    if _kept_as(tracker, call) & _OBJECT_KEYS:
        return True  # `features = torch.load(cached_features_file)`
    return any(_object_use(tracker, use, depth=1) for use in _uses(tracker, call))


def _kept_as(tracker, value: cst.CSTNode) -> set[str]:
    """The plain names `value` is assigned to (`a, b = value` gives both)."""
    holder = tracker.ctx.parent(value)
    if not isinstance(holder, cst.Assign):
        return set()
    return {
        n.value for t in holder.targets for n in tracker.walk(t.target) if isinstance(n, cst.Name)
    }


def _saved_here(tracker, call: cst.Call) -> bool:
    """Whether the loaded path is one the same file writes with `torch.save(..., path)`."""
    path = next((a.value for a in call.args if a.keyword is None), None)
    if not isinstance(path, cst.Name):
        return False
    for other in tracker.calls:
        positional = [a.value for a in other.args if a.keyword is None]
        if (
            len(positional) > 1
            and tracker.torch_names(other.func) & {"torch.save", "torch.serialization.save"}
            and isinstance(positional[1], cst.Name)
            and positional[1].value == path.value
        ):
            return True
    return False


def _kept_whole(tracker, entry: cst.Subscript) -> bool:
    """`model = checkpoint['model']`, then used without ever being loaded into a module."""
    if not isinstance(tracker.ctx.parent(entry), cst.Assign):
        return False
    uses = _uses(tracker, entry)
    return bool(uses) and not any(_restored(tracker, u) for u in uses)


def _restored(tracker, expr: cst.CSTNode) -> bool:
    """Whether `expr` goes straight into a `load_state_dict(...)`: then it is a state dict."""
    arg = tracker.ctx.parent(expr)
    call = tracker.ctx.parent(arg) if isinstance(arg, cst.Arg) else None
    return (
        isinstance(call, cst.Call)
        and isinstance(call.func, cst.Attribute)
        and call.func.attr.value == "load_state_dict"
    )


def _uses(tracker, value: cst.CSTNode) -> list[cst.CSTNode]:
    """The expressions that read `value`: itself, or the names it is assigned to, afterwards."""
    holder = tracker.ctx.parent(value)
    if not isinstance(holder, cst.Assign):
        return [value]
    targets = [
        n
        for t in holder.targets
        for n in tracker.walk(t.target)
        if isinstance(n, cst.Name) and tracker.ctx.parent(n) is not None
    ]
    names = {n.value for n in targets}
    scope = tracker.enclosing(holder, cst.FunctionDef)
    body = scope.body if scope is not None else tracker.ctx.module
    after = tracker.tree.order(holder)
    return [
        n
        for n in tracker.walk(body, skip=(cst.FunctionDef, cst.ClassDef))
        if isinstance(n, cst.Name)
        and n.value in names
        and n not in targets
        and tracker.tree.order(n) > after
    ]


def _object_use(tracker, use: cst.CSTNode, depth: int) -> bool:
    parent = tracker.ctx.parent(use)
    if isinstance(parent, cst.Call) and parent.func is use:
        return True  # the loaded object is called: a whole module
    if isinstance(parent, cst.Subscript) and parent.value is use:
        key = parent.slice[0].slice if len(parent.slice) == 1 else None
        value = getattr(key, "value", None)
        key = value.evaluated_value if isinstance(value, cst.SimpleString) else None
        if key in _OBJECT_KEYS and not _restored(tracker, parent):
            return True
        if key in _WHOLE_KEYS and _kept_whole(tracker, parent):
            return True
        use, parent = parent, tracker.ctx.parent(parent)
    while isinstance(parent, cst.Attribute) and parent.value is use:
        if parent.attr.value in _MODULE_ATTRS:
            return True
        if parent.attr.value not in _MOVES:
            return False
        call = tracker.ctx.parent(parent)
        if not isinstance(call, cst.Call):
            return False
        use, parent = call, tracker.ctx.parent(call)
    if depth and isinstance(parent, cst.Assign) and use is parent.value:
        return any(_object_use(tracker, u, depth - 1) for u in _uses(tracker, use))
    return False


def torch_floor(path: Path, root: Path) -> tuple[int, int] | None:
    """The torch floor of the file's own project: the nearest folder, from the file's
    up to the run root, whose metadata declares one."""
    for folder in project.search_dirs(path, root):
        floor = folder_floor(folder)
        if floor is not None:
            return floor
    return None


@cache
def folder_floor(root: Path) -> tuple[int, int] | None:
    """The lowest torch version the metadata in `root` declares, as (major, minor)."""
    specs: list[str] = []
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        import tomllib  # a project without a pyproject.toml never pays for the parser

        try:
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            data = {}
        project = data.get("project", {})
        specs.extend(project.get("dependencies", []))
        for group in project.get("optional-dependencies", {}).values():
            specs.extend(group)
    for req in sorted(root.glob("requirements*.txt")):
        try:
            specs.extend(req.read_text(encoding="utf-8").splitlines())
        except (OSError, UnicodeDecodeError):
            continue
    floors = []
    for spec in specs:
        match = _TORCH_SPEC.match(spec) if isinstance(spec, str) else None
        if match is None:
            continue
        versions = [(int(a), int(b)) for _, a, b in _LOWER.findall(match["spec"])]
        if versions:
            floors.append(max(versions))
    return min(floors) if floors else None

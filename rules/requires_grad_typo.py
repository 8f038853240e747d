from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import ScriptRule
from nnlint.script import edits
from nnlint.script.values import values

_RIGHT = ("requires_grad", "requires_grad_")


class RequiresGradTypo(ScriptRule):
    """A misspelt or misused `requires_grad` freezes nothing.

    ## What it does
    Flags an assignment to a near miss of `requires_grad`
    (`p.require_grad = False`, `p.requires_gard = False`), a call of a
    near miss of `requires_grad_()`, an assignment to the method itself
    (`p.requires_grad_ = False`), and `module.requires_grad = False` on a
    module built in the file (a module has no such flag).

    ## Why is this bad?
    Python lets any attribute be set on a tensor or a module, so the typo
    raises no error: the parameters keep `requires_grad=True`, the
    "frozen" layers keep training and use optimizer memory, and nothing
    says so.

    ## Example
    ```python
    for p in backbone.parameters():
        p.require_grad = False
    head.requires_grad = False
    ```

    ## Use instead
    ```python
    for p in backbone.parameters():
        p.requires_grad = False
    head.requires_grad_(False)
    ```

    ## Fix
    Unsafe (the parameters then really freeze, which changes the training): a
    misspelt name is spelt `requires_grad` (or `requires_grad_` for a call),
    and an assignment to `requires_grad_` sets `requires_grad`. A module's
    `requires_grad = False` has no fix.

    ## Known problems
    A misspelt name the file also reads back (an attribute of the
    project's own) is left alone.
    """

    needs_all = ("torch", "grad")
    code = "NN220"
    name = "requires-grad-typo"
    message = "{problem}; {fix}"
    severity = Severity.ERROR

    invalid = (
        """
import torch
model = torch.nn.Linear(4, 2)
for p in model.parameters():
    p.require_grad = False
""",
        """
import torch
head = torch.nn.Linear(4, 2)
head.requires_grad = False
""",
        """
import torch
w = torch.zeros(3)
w.requires_grad_ = True
""",
    )
    fixes = (
        (
            """
import torch
model = torch.nn.Linear(4, 2)
for p in model.parameters():
    p.require_grad = False
model.bias.requires_grad_ = True
model.weight.requires_gard_(False)
""",
            """
import torch
model = torch.nn.Linear(4, 2)
for p in model.parameters():
    p.requires_grad = False
model.bias.requires_grad = True
model.weight.requires_grad_(False)
""",
        ),
    )
    valid = (
        """
import torch
model = torch.nn.Linear(4, 2)
for p in model.parameters():
    p.requires_grad = False
model.requires_grad_(False)
model.weight.requires_grad = True
""",
        """
import torch
class Config:
    def __init__(self):
        self.require_grad = True
cfg = Config()
cfg.require_grad = False
print(cfg.require_grad)
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        tracker = values(ctx)
        targets = _assigned_attributes(tracker)
        assigned = {id(t) for t in targets}
        read = {
            node.attr.value
            for node in tracker.walk(ctx.module)
            if isinstance(node, cst.Attribute) and id(node) not in assigned
        }
        for attr in targets:
            name = attr.attr.value
            if (
                name == "requires_grad"
                and "module" in tracker.tags(attr.value)
                and not _maybe_tensor(tracker, attr.value)
            ):
                yield ctx.report(
                    self,
                    attr,
                    problem=f"`{tracker.code(attr.value)}` is a module: setting `requires_grad` "
                    "on it freezes nothing",
                    fix=f"call `{tracker.code(attr.value)}.requires_grad_(False)`",
                )
            elif name == "requires_grad_":
                yield ctx.report(
                    self,
                    attr,
                    problem="assigning to `requires_grad_` replaces the method and changes nothing",
                    fix="set `requires_grad` (no underscore), or call `requires_grad_(...)`",
                    autofix=_respelt(ctx, attr, "requires_grad"),
                )
            elif (
                _typo(name) and name not in read and tracker.code(attr.value) not in ("self", "cls")
            ):
                yield ctx.report(
                    self,
                    attr,
                    problem=f"`{name}` is not `requires_grad`: setting it freezes nothing",
                    fix="spell it `requires_grad`",
                    autofix=_respelt(ctx, attr, "requires_grad"),
                )
        for call in tracker.calls:
            func = call.func
            if isinstance(func, cst.Attribute) and _typo(func.attr.value):
                yield ctx.report(
                    self,
                    func,
                    problem=f"`{func.attr.value}` is not a tensor method",
                    fix="spell it `requires_grad_`",
                    autofix=_respelt(ctx, func, "requires_grad_"),
                )


def _assigned_attributes(tracker) -> list[cst.Attribute]:
    found = []
    for node in tracker.walk(tracker.ctx.module):
        if isinstance(node, cst.Assign):
            targets = [t.target for t in node.targets]
        elif isinstance(node, cst.AnnAssign | cst.AugAssign):
            targets = [node.target]
        else:
            continue
        found.extend(t for t in targets if isinstance(t, cst.Attribute))
    return found


def _maybe_tensor(tracker, expr: cst.BaseExpression) -> bool:
    """Whether `expr` may hold an `nn.Parameter`/`nn.Buffer` (which the value tags call a module)."""
    if isinstance(expr, cst.Name):
        found = tracker.assigned_values(expr)
    elif isinstance(expr, cst.Attribute):
        found = tracker.self_attribute_values(expr)
    else:
        return True
    return not found or any(
        isinstance(v, cst.Call)
        and any(
            q.endswith(("Parameter", "Buffer")) for q in tracker.ctx.qualified_name_strings(v.func)
        )
        for v in found
    )


def _typo(name: str) -> bool:
    """A near miss of `requires_grad`/`requires_grad_` (at most two edits, about gradients)."""
    if name in _RIGHT or not name.startswith("re") or "g" not in name:
        return False
    return any(_distance(name, right) <= 2 for right in _RIGHT)


def _distance(a: str, b: str) -> int:
    """Levenshtein distance, with a swap of two neighbours counted as one edit."""
    rows = [list(range(len(b) + 1))]
    for i, ca in enumerate(a, 1):
        row = [i]
        for j, cb in enumerate(b, 1):
            cost = min(rows[-1][j] + 1, row[j - 1] + 1, rows[-1][j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cost = min(cost, rows[-2][j - 2] + 1)
            row.append(cost)
        rows.append(row)
    return rows[-1][-1]


def _respelt(ctx, attr: cst.Attribute, right: str):
    """The fix that renames the attribute to `right` (unsafe: it changes what trains)."""
    return edits.fix(f"Spell it `{right}`", edits.replace(ctx, attr.attr, right), safe=False)

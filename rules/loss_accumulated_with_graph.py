from __future__ import annotations

import re
from collections.abc import Iterator

import libcst as cst

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import ScriptRule
from nnlint.script import edits
from nnlint.script.values import values

# Evaluation helpers return a statistic, not a loss to backpropagate.
_EVALUATES = re.compile(r"eval|valid|test", re.IGNORECASE)


class LossAccumulatedWithGraph(ScriptRule):
    """A running total keeps every iteration's loss tensor, and its graph, alive.

    ## What it does
    Flags `total += loss`, `total = total + loss` and `losses.append(loss)`
    inside a loop, where `loss` still carries its autograd graph and the
    total is never backpropagated. `loss.item()`, `loss.detach()`,
    `float(loss)` and accumulation under `torch.no_grad()` are fine.

    ## Why is this bad?
    Each addition links the new graph to the total, so no iteration's graph
    (and none of its activations) can be freed: memory grows every step
    until the run dies with an out-of-memory error.

    ## Example
    ```python
    total_loss = 0
    for x, y in loader:
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        total_loss += loss
    ```

    ## Use instead
    ```python
    total_loss = 0.0
    for x, y in loader:
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        total_loss += loss.item()
    ```

    ## Fix
    Unsafe: accumulates `loss.detach()`, which holds no graph. The total stays a
    tensor, so code reading it afterwards (`total.item()`) keeps working; it is
    unsafe because code that meant to backpropagate through the total would
    no longer reach the model.

    ## Known problems
    A total that is later backpropagated (`total.backward()`, or a list of
    losses summed into one) is intended and is not flagged, and neither is a
    sum of loss terms that its function returns from a loop that does not
    train (a loss's `forward` summing over views): the caller backpropagates it.
    A total reset only under a condition still runs between resets and is
    flagged.
    """

    needs = ("loss", "Loss", "cross_entropy")
    needs_all = ("torch",)
    code = "NN207"
    name = "loss-accumulated-with-graph"
    message = "`{target}` accumulates `{value}` with its autograd graph; use `{value}.item()` or `.detach()`"
    severity = Severity.WARNING

    invalid = (
        """
import torch
crit = torch.nn.CrossEntropyLoss()
total_loss = 0
for x, y in loader:
    optimizer.zero_grad()
    loss = crit(model(x), y)
    loss.backward()
    optimizer.step()
    total_loss += loss
""",
        """
import torch
history = []
for x, y in loader:
    out = model(x)
    loss = torch.nn.functional.mse_loss(out, y)
    loss.backward()
    history.append(loss)
""",
        """
import torch
running = 0
for i, (x, y) in enumerate(loader):
    optimizer.zero_grad()
    loss = torch.nn.functional.nll_loss(model(x), y)
    loss.backward()
    optimizer.step()
    running += loss
    if (i + 1) % 10 == 0:
        print(running / 10)
        running = 0
""",
    )
    fixes = (
        (
            """
import torch
crit = torch.nn.CrossEntropyLoss()
total_loss = 0
for x, y in loader:
    loss = crit(model(x), y)
    loss.backward()
    total_loss += loss
""",
            """
import torch
crit = torch.nn.CrossEntropyLoss()
total_loss = 0
for x, y in loader:
    loss = crit(model(x), y)
    loss.backward()
    total_loss += loss.detach()
""",
        ),
    )
    valid = (
        """
import torch
crit = torch.nn.CrossEntropyLoss()
running, losses = 0.0, []
for x, y in loader:
    loss = crit(model(x), y)
    loss.backward()
    running += loss.item()
    losses.append(loss.detach())
with torch.no_grad():
    val = 0
    for x, y in val_loader:
        val += crit(model(x), y)
""",
        """
import torch
for chunk in sequence:
    total = 0
    parts = []
    for x, y in chunk:
        step_loss = torch.nn.functional.mse_loss(model(x), y)
        total += step_loss
        parts.append(step_loss)
    total.backward()
    torch.stack(parts).mean().backward()
""",
        """
import torch
import torch.nn.functional as F

class MultiViewLoss(torch.nn.Module):
    def forward(self, views, targets):
        total = 0
        for view, target in zip(views, targets):
            total += F.cross_entropy(view, target)
        return total / len(views)

total = 0.0
for x, y in val_loader:
    with torch.no_grad():
        loss = F.cross_entropy(model(x), y)
    total += loss
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        tracker = values(ctx)
        for node in tracker.walk(ctx.module):
            found = _accumulation(node)
            if found is None:
                continue
            target, value = found
            name = tracker.code(target)
            if name in tracker.feeds_backward() or "loss" not in tracker.tags(value):
                continue
            loop = tracker.enclosing(node, (cst.For, cst.While, cst.FunctionDef))
            if not isinstance(loop, cst.For | cst.While) or _reset_inside(tracker, loop, target):
                continue
            if tracker.grad_disabled(node) or _computed_without_grad(tracker, value):
                continue
            if _builds_returned_loss(tracker, loop, target):
                continue
            autofix = edits.fix(
                "Accumulate a detached copy",
                edits.replace(ctx, value, edits.operand(ctx, value) + ".detach()"),
                safe=False,
            )
            yield ctx.report(self, node, target=name, value=tracker.code(value), autofix=autofix)


def _accumulation(node: cst.CSTNode) -> tuple[cst.BaseExpression, cst.BaseExpression] | None:
    """(total, added value) for `total += v`, `total = total + v` and `total.append(v)`."""
    if isinstance(node, cst.AugAssign) and isinstance(node.operator, cst.AddAssign):
        return node.target, node.value
    if (
        isinstance(node, cst.Assign)
        and len(node.targets) == 1
        and isinstance(node.value, cst.BinaryOperation)
        and isinstance(node.value.operator, cst.Add)
        and node.value.left.deep_equals(node.targets[0].target)
    ):
        return node.targets[0].target, node.value.right
    if (
        isinstance(node, cst.Call)
        and isinstance(node.func, cst.Attribute)
        and node.func.attr.value == "append"
        and len(node.args) == 1
    ):
        return node.func.value, node.args[0].value
    return None


def _reset_inside(tracker, loop: cst.CSTNode, target: cst.BaseExpression) -> bool:
    """Whether the total is re-created inside the loop (a per-step sum, not a running one)."""
    text = tracker.code(target)
    # A reset under a condition (`if step % 10 == 0: total = 0`) leaves the total
    # running, and holding graphs, between resets.
    for node in tracker.walk(loop.body, skip=(cst.If,)):
        if isinstance(node, cst.Assign) and any(
            tracker.code(t.target) == text for t in node.targets
        ):
            value = node.value
            if not (isinstance(value, cst.BinaryOperation) and value.left.deep_equals(target)):
                return True
    return False


def _computed_without_grad(tracker, value: cst.BaseExpression) -> bool:
    """Whether every loss the value reads was computed under `no_grad` (it has no graph)."""
    names = [
        n for n in tracker.walk(value) if isinstance(n, cst.Name) and "loss" in tracker.tags(n)
    ]
    if not names:
        return False
    for name in names:
        sources = tracker.assigned_values(name)
        if not sources or not all(tracker.grad_disabled(v) for v in sources):
            return False
    return True


def _builds_returned_loss(tracker, loop: cst.CSTNode, target: cst.BaseExpression) -> bool:
    """A sum of loss terms that its function returns, in a loop that trains nothing.

    `total += F.cross_entropy(view, t)` in a loss's `forward` is the loss the caller
    backpropagates: `.item()` there would cut the gradient.
    """
    fn = tracker.enclosing(loop, cst.FunctionDef)
    if (
        fn is None
        or _EVALUATES.search(fn.name.value)
        or any(
            isinstance(n, cst.Attribute) and n.attr.value in ("backward", "step")
            for n in tracker.walk(loop)
        )
    ):
        return False
    text = tracker.code(target)
    return any(
        isinstance(node, cst.Return)
        and node.value is not None
        and any(tracker.code(n) == text for n in tracker.walk(node.value))
        for node in tracker.walk(fn.body)
    )

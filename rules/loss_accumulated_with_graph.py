from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import ScriptRule
from nnlint.script.values import values


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

    ## Known problems
    A total that is later backpropagated (`total.backward()`, or a list of
    losses summed into one) is intended and is not flagged.
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
            if tracker.grad_disabled(node):
                continue
            yield ctx.report(self, node, target=name, value=tracker.code(value))


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
    for node in tracker.walk(loop.body):
        if isinstance(node, cst.Assign) and any(
            tracker.code(t.target) == text for t in node.targets
        ):
            value = node.value
            if not (isinstance(value, cst.BinaryOperation) and value.left.deep_equals(target)):
                return True
    return False

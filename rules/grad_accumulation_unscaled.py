from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import ScriptRule
from nnlint.script.loops import BACKWARD, STEP, analyze


class GradAccumulationUnscaled(ScriptRule):
    """Gradients are accumulated over several batches without dividing the loss.

    ## What it does
    Flags a loop that calls `backward()` on every batch but steps the
    optimizer only every N batches (`if (i + 1) % N == 0: optimizer.step()`)
    while nothing in the loop divides by N.

    ## Why is this bad?
    Gradients add up over the N backward passes, so each step is N times
    larger than the one the learning rate was tuned for: training behaves as
    if the learning rate were multiplied by N, and changing the number of
    accumulation steps changes the optimisation.

    ## Example
    ```python
    for i, (x, y) in enumerate(loader):
        loss = loss_fn(model(x), y)
        loss.backward()
        if (i + 1) % accum_steps == 0:
            optimizer.step()
            optimizer.zero_grad()
    ```

    ## Use instead
    ```python
    for i, (x, y) in enumerate(loader):
        loss = loss_fn(model(x), y) / accum_steps
        loss.backward()
        if (i + 1) % accum_steps == 0:
            optimizer.step()
            optimizer.zero_grad()
    ```

    ## Known problems
    Only the function around the loop is read: any division by N there, or N
    handed to a helper (a loss function that takes the number of accumulation
    steps), silences the rule.
    """

    needs_all = ("torch", "backward", "%")
    code = "NN216"
    name = "grad-accumulation-unscaled"
    message = (
        "gradients accumulate over `{steps}` batches but the loss is not divided by it; "
        "divide the loss by `{steps}` before `backward()`"
    )
    severity = Severity.WARNING

    invalid = (
        """
import torch
model = torch.nn.Linear(4, 2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
accum = 4
for i, (x, y) in enumerate(loader):
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    if (i + 1) % accum == 0:
        optimizer.step()
        optimizer.zero_grad()
""",
    )
    valid = (
        """
import torch
model = torch.nn.Linear(4, 2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
accum = 4
for i, (x, y) in enumerate(loader):
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss = loss / accum
    loss.backward()
    if (i + 1) % accum == 0:
        optimizer.step()
        optimizer.zero_grad()
""",
        """
import torch
model = torch.nn.Linear(4, 2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for i, (x, y) in enumerate(loader):
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    if i % 100 == 0:
        print(loss.item())
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        loops = analyze(ctx)
        tracker = loops.values
        for loop in loops.loops:
            backwards = [e for e in loop.of(BACKWARD) if not e.conds and not e.loops]
            steps = [e for e in loop.of(STEP) if not e.manual]
            if not backwards or not steps or any(not e.conds for e in steps):
                continue
            periods = {_period(tracker, ctx.parent(e.conds[0])) for e in steps}
            if len(periods) != 1 or None in periods:
                continue
            period = periods.pop()
            word = tracker.code(period).rsplit(".", 1)[-1]
            # The divisor may be prepared before the loop (`scale = 1 / accum`).
            around = tracker.enclosing(loop.node, cst.FunctionDef) or ctx.module
            if not _divides(tracker, around, word) and not _handed_on(tracker, loop.node, word):
                yield ctx.report(self, steps[0].node, steps=tracker.code(period))


def _period(tracker, branch: cst.CSTNode | None) -> cst.BaseExpression | None:
    """`N` when `branch` is an `if` whose test is `... % N == 0`, N a name (not a literal)."""
    if not isinstance(branch, cst.If):
        return None
    for node in tracker.walk(branch.test):
        if (
            isinstance(node, cst.BinaryOperation)
            and isinstance(node.operator, cst.Modulo)
            and isinstance(node.right, cst.Name | cst.Attribute)
        ):
            return node.right
    return None


def _divides(tracker, loop: cst.CSTNode, word: str) -> bool:
    """Whether `loop` divides (or multiplies) anything by an expression naming `word`."""
    for node in tracker.walk(loop):
        if isinstance(node, cst.BinaryOperation) and isinstance(
            node.operator, cst.Divide | cst.Multiply | cst.FloorDivide
        ):
            sides = (node.right, node.left)
        elif isinstance(node, cst.AugAssign) and isinstance(
            node.operator, cst.DivideAssign | cst.MultiplyAssign
        ):
            sides = (node.value,)
        else:
            continue
        if any(_names(tracker, side, word) for side in sides):
            return True
    return False


def _handed_on(tracker, loop: cst.CSTNode, word: str) -> bool:
    """Whether the loop passes the period to a call, which may scale the loss with it."""
    return any(
        isinstance(node, cst.Call) and any(_names(tracker, a.value, word) for a in node.args)
        for node in tracker.walk(loop)
    )


def _names(tracker, expr: cst.CSTNode, word: str) -> bool:
    return any(
        (isinstance(n, cst.Name) and n.value == word)
        or (isinstance(n, cst.Attribute) and n.attr.value == word)
        for n in tracker.walk(expr)
    )

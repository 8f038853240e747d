from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from nnlint.core.finding import Finding, Severity
from nnlint.core.fix import Fix
from nnlint.core.rule import ScriptRule
from nnlint.script import edits
from nnlint.script.loops import BACKWARD, GRAD_WRITE, STEP, ZERO_GRAD, analyze


class MissingZeroGrad(ScriptRule):
    """A training loop steps the optimizer but never clears the gradients.

    ## What it does
    Flags `optimizer.step()` in a loop that calls `backward()` but clears
    neither that optimizer's gradients (`optimizer.zero_grad()`) nor the
    model's (`model.zero_grad()`, `p.grad = None`) anywhere inside the loop,
    including in helper functions the loop calls, those the script imports
    from its project, and helpers named like `zero_grad(params)`. A
    parameter updated by hand from its gradient (`w -= lr * w.grad`,
    `p.data.add_(-lr * p.grad)`) is a step too. Clearing once before the
    loop does not count.

    ## Why is this bad?
    `backward()` adds to `.grad`. Without clearing, every step applies the sum
    of all gradients so far: the effective learning rate grows each iteration
    and training diverges or stalls, usually without an error.

    ## Example
    ```python
    optimizer.zero_grad()
    for x, y in loader:
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
    ```

    ## Use instead
    ```python
    for x, y in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
    ```

    ## Fix
    Unsafe: calls `optimizer.zero_grad()` at the top of the loop. Code that
    meant to accumulate gradients over iterations would stop doing so.

    ## Known problems
    Gradient accumulation that clears every N steps is fine: any clear in the
    loop counts, conditional or not.
    """

    needs = ("step", ".grad")
    needs_all = ("torch", "backward")
    code = "NN201"
    name = "missing-zero-grad"
    message = "{what} in a loop that never clears gradients; {fix}"
    severity = Severity.ERROR

    invalid = (
        """
import torch
w = torch.zeros(3, requires_grad=True)
for x, y in loader:
    loss = ((x @ w - y) ** 2).mean()
    loss.backward()
    with torch.no_grad():
        w -= 0.1 * w.grad
""",
        """
import torch
model = torch.nn.Linear(4, 2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
optimizer.zero_grad()
for x, y in loader:
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
""",
        """
import torch
from torch import optim

def train_step(model, batch, opt):
    x, y = batch
    model(x).sum().backward()
    opt.step()

model = torch.nn.Linear(4, 2)
opt = optim.Adam(model.parameters())
for epoch in range(3):
    opt.zero_grad()
    for batch in loader:
        train_step(model, batch, opt)
""",
    )
    fixes = (
        (
            """
import torch
model = torch.nn.Linear(4, 2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for x, y in loader:
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
""",
            """
import torch
model = torch.nn.Linear(4, 2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for x, y in loader:
    optimizer.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
""",
        ),
    )
    valid = (
        """
import torch
model = torch.nn.Linear(4, 2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for i, (x, y) in enumerate(loader):
    loss = torch.nn.functional.cross_entropy(model(x), y) / 4
    loss.backward()
    if (i + 1) % 4 == 0:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
""",
        """
import torch
model = torch.nn.Linear(4, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
sched = torch.optim.lr_scheduler.StepLR(opt, 10)
for x, y in loader:
    for p in model.parameters():
        p.grad = None
    model(x).sum().backward()
    opt.step()
    sched.step()
""",
        """
import torch
model = torch.nn.Linear(4, 2)
optimizer = torch.optim.LBFGS(model.parameters())
for x, y in loader:
    def closure():
        optimizer.zero_grad()
        loss = model(x).sum()
        loss.backward()
        return loss
    optimizer.step(closure)
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        seen = set()
        analysis = analyze(ctx)
        for loop in analysis.loops:
            if not loop.of(BACKWARD):
                continue
            clears = loop.of(ZERO_GRAD) + loop.of(GRAD_WRITE)
            everything = any(e.target is None for e in clears)
            cleared = {e.target for e in clears}
            for step in loop.of(STEP):
                if everything or step.target in cleared or step.node in seen:
                    continue
                if step.manual and (clears or any(e.node in seen for e in loop.of(STEP))):
                    continue  # one finding per loop of hand-written updates
                seen.add(step.node)
                line = ctx.position(loop.node).start.line
                if step.manual:
                    what = "a parameter updated by hand from its `.grad`"
                    fix = "set `p.grad = None` (or `p.grad.zero_()`) after each update"
                else:
                    call = analysis.values.code(step.node)
                    what = f"`{call}`" if len(call) <= 40 else f"`{step.target}.step()`"
                    fix = f"call `{step.target}.zero_grad()` each iteration"
                autofix = None if step.manual else _clear_first(ctx, analysis, loop.node, step)
                yield ctx.report(
                    self,
                    step.node,
                    what=what,
                    fix=fix,
                    note=f"loop at {ctx.line_label(line)}",
                    autofix=autofix,
                )


def _clear_first(ctx, analysis, loop: cst.For | cst.While, step) -> Fix | None:
    """`optimizer.zero_grad()` as the first statement of the innermost loop around the
    step, when that is in the loop's own body (not a helper, whose optimizer may have
    another name here)."""
    inner = analysis.values.enclosing(step.node, (cst.For, cst.While, cst.FunctionDef))
    if not isinstance(inner, cst.For | cst.While):
        return None
    outer, here = ctx.position(loop), ctx.position(inner)
    if (here.start.line, here.start.column) < (outer.start.line, outer.start.column):
        return None
    body = inner.body
    if not isinstance(body, cst.IndentedBlock) or not body.body:
        return None
    return edits.fix(
        f"Call `{step.target}.zero_grad()` each iteration",
        edits.insert_line_before(ctx, body.body[0], f"{step.target}.zero_grad()"),
        safe=False,
    )

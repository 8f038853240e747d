from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import ScriptRule
from nnlint.script.values import values


class BackwardUnderNoGrad(ScriptRule):
    """`backward()` on a loss computed with autograd off.

    ## What it does
    Flags `loss.backward()` where the loss was computed inside
    `torch.no_grad()`/`torch.inference_mode()` (a `with` block or a
    decorator of the same function), with no `torch.enable_grad()` between.

    ## Why is this bad?
    Under `no_grad` no graph is recorded, so the loss does not require grad:
    `backward()` raises `element 0 of tensors does not require grad`, and only
    when the line is reached, often after a long first epoch. Usually the
    training step was pasted into, or called from, evaluation code.

    ## Example
    ```python
    with torch.no_grad():
        loss = loss_fn(model(x), y)
        loss.backward()
    ```

    ## Use instead
    ```python
    loss = loss_fn(model(x), y)
    loss.backward()
    ```

    ## Known problems
    Only the function around the backward is read: a function called under
    `no_grad` from elsewhere is left alone.
    """

    needs_all = ("torch", "backward")
    code = "NN222"
    name = "backward-under-no-grad"
    message = (
        "`{loss}` is computed with autograd off (`no_grad`/`inference_mode`), so it has no "
        "graph and `backward()` fails; "
        "compute the loss with autograd on"
    )
    severity = Severity.ERROR

    invalid = (
        """
import torch
model = torch.nn.Linear(4, 2)
with torch.no_grad():
    loss = model(x).pow(2).mean()
    loss.backward()
""",
        """
import torch
@torch.inference_mode()
def step(model, x):
    model(x).sum().backward()
""",
    )
    valid = (
        """
import torch
model = torch.nn.Linear(4, 2)
loss = model(x).pow(2).mean()
with torch.no_grad():
    loss.backward()
with torch.no_grad():
    with torch.enable_grad():
        model(x).sum().backward()
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        tracker = values(ctx)
        for call in tracker.calls:
            func = call.func
            if not isinstance(func, cst.Attribute) or func.attr.value != "backward":
                continue
            receiver = func.value
            if isinstance(receiver, cst.Name):
                computed = tracker.assigned_values(receiver)
                at = computed[-1] if len(computed) == 1 else None
            elif isinstance(receiver, cst.Attribute | cst.Subscript):
                at = None  # read back from elsewhere: where it was computed is not known
            else:
                at = receiver
            if at is not None and tracker.grad_off_locally(at):
                yield ctx.report(self, call, loss=tracker.code(receiver))

from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import ScriptRule
from nnlint.script.loops import BACKWARD, CLIP, UNSCALE, analyze


class ClipGradBeforeUnscale(ScriptRule):
    """Gradients are clipped while still multiplied by the AMP loss scale.

    ## What it does
    Flags `clip_grad_norm_`/`clip_grad_value_` (or a helper of the project
    that clips or rescales `p.grad` in place) after
    `scaler.scale(loss).backward()` with no `scaler.unscale_(optimizer)`
    between them.

    ## Why is this bad?
    With a `GradScaler` the gradients are multiplied by the loss scale
    (65536 at first). Clipping them at `max_norm=1.0` clips almost every
    step by a huge factor, so the model barely trains, and the amount
    changes whenever the scale does.

    ## Example
    ```python
    scaler.scale(loss).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)
    ```

    ## Use instead
    ```python
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)
    ```
    """

    needs = ("clip",)
    needs_all = ("torch", "scale")
    code = "NN213"
    name = "clip-grad-before-unscale"
    message = "gradients clipped while still scaled by the GradScaler; call `scaler.unscale_(optimizer)` before clipping"
    severity = Severity.ERROR

    invalid = (
        """
import torch
scaler = torch.cuda.amp.GradScaler()
for x, y in loader:
    optimizer.zero_grad()
    scaler.scale(loss_fn(model(x), y)).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)
    scaler.update()
""",
    )
    valid = (
        """
import torch
scaler = torch.cuda.amp.GradScaler()
for x, y in loader:
    optimizer.zero_grad()
    scaler.scale(loss_fn(model(x), y)).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)
    scaler.update()
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        seen = set()
        analysis = analyze(ctx)
        for unit in analysis.units:
            scaled = False
            for event in unit.events:
                if event.kind == BACKWARD:
                    scaled = _scaled_backward(analysis, event.node)
                elif event.kind == UNSCALE:
                    scaled = False
                elif event.kind == CLIP and scaled and event.node not in seen:
                    seen.add(event.node)
                    yield ctx.report(self, event.node)


def _scaled_backward(analysis, call: cst.Call) -> bool:
    """`scaler.scale(loss).backward()`: the receiver is a scaler's `scale(...)` call."""
    receiver = call.func.value if isinstance(call.func, cst.Attribute) else None
    return (
        isinstance(receiver, cst.Call)
        and isinstance(receiver.func, cst.Attribute)
        and receiver.func.attr.value == "scale"
        and analysis.is_scaler(receiver.func.value)
    )

from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import ScriptRule
from nnlint.script.loops import BACKWARD, CLIP, ZERO_GRAD, Loop, analyze
from nnlint.script.values import values

_CLAMPS = ("clamp", "clamp_", "clip", "clip_")


class ClipGradMisplaced(ScriptRule):
    """Gradients are clipped where there are none to clip, or the loss is clamped instead.

    ## What it does
    Flags `clip_grad_norm_`/`clip_grad_value_` that always runs before the
    iteration's `backward()`, or right after `zero_grad()` with no
    `backward()` in between; and `torch.clamp(loss, ...)`/`loss.clamp(...)`
    on a loss that is then backpropagated, in place of gradient clipping.

    ## Why is this bad?
    Clipping before `backward()` clips the previous step's gradients (or
    empty ones) and leaves the new ones unclipped, so exploding gradients go
    through. Clamping the loss does not bound the gradient: where the clamp
    is active the gradient is zero, and the batch teaches nothing.

    ## Example
    ```python
    optimizer.zero_grad()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    loss.backward()
    optimizer.step()
    ```

    ## Use instead
    ```python
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    ```
    """

    needs = ("clip_grad", "clamp")
    needs_all = ("torch",)
    code = "NN208"
    name = "clip-grad-misplaced"
    message = "{problem}; {fix}"
    severity = Severity.ERROR

    invalid = (
        """
import torch
from torch.nn.utils import clip_grad_norm_
for x, y in loader:
    optimizer.zero_grad()
    clip_grad_norm_(model.parameters(), 1.0)
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    optimizer.step()
""",
        """
import torch
for x, y in loader:
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss = torch.clamp(loss, max=10.0)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
""",
    )
    valid = (
        """
import torch
scaler = torch.amp.GradScaler()
for x, y in loader:
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cuda"):
        loss = torch.nn.functional.mse_loss(model(x), y)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)
    scaler.update()
    margin = (1.0 - model(x)).clamp(min=0)
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        seen = set()
        for unit in analyze(ctx).units:
            for clip, problem in _misplaced(unit):
                if clip.node not in seen:
                    seen.add(clip.node)
                    fix = "clip after `backward()` and before `step()`"
                    yield ctx.report(self, clip.node, problem=problem, fix=fix)
        tracker = values(ctx)
        feeds = tracker.feeds_backward()
        for call in tracker.calls:
            clamped = _clamped(tracker, call)
            if clamped is None or "loss" not in tracker.tags(clamped):
                continue
            holder = tracker.enclosing(call, (cst.Assign, cst.SimpleStatementLine))
            targets = holder.targets if isinstance(holder, cst.Assign) else []
            if any(tracker.code(t.target) in feeds for t in targets):
                yield ctx.report(
                    self,
                    call,
                    problem="the loss is clamped, which zeroes its gradient where the clamp is active",
                    fix="clip the gradients with `torch.nn.utils.clip_grad_norm_` after `backward()`",
                )


def _misplaced(unit: Loop) -> Iterator[tuple]:
    events = unit.events
    for i, clip in enumerate(events):
        if clip.kind != CLIP:
            continue
        before = [e for e in events[:i] if e.kind == BACKWARD]
        after = [e for e in events[i + 1 :] if e.kind == BACKWARD and e.loops == clip.loops]
        if not before and after and not clip.conds:
            yield clip, "gradients clipped before `backward()`, so the new gradients go unclipped"
            continue
        for prior in reversed(events[:i]):
            if prior.kind == BACKWARD:
                break
            if prior.kind == ZERO_GRAD and prior.always_with(clip) and prior.loops == clip.loops:
                if before:
                    yield clip, "gradients clipped right after `zero_grad()`, so nothing is clipped"
                break


def _clamped(tracker, call: cst.Call) -> cst.BaseExpression | None:
    func = call.func
    names = {q.rsplit(".", 1)[-1] for q in tracker.torch_names(func)}
    if names & {"clamp", "clip"} and call.args:
        return call.args[0].value
    if isinstance(func, cst.Attribute) and func.attr.value in _CLAMPS and not names:
        return func.value
    return None

from __future__ import annotations

from collections.abc import Iterator

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import ScriptRule
from nnlint.script.loops import BACKWARD, STEP, ZERO_GRAD, Event, Loop, analyze


class ZeroGradBetweenBackwardAndStep(ScriptRule):
    """Gradients are cleared after `backward()` and before `step()`.

    ## What it does
    Flags `optimizer.zero_grad()` (or `model.zero_grad()`, `p.grad = None`)
    that always runs between a `backward()` and the `step()` of the same
    optimizer, with no new `backward()` in between.

    ## Why is this bad?
    The step then sees empty gradients: plain SGD does nothing, and Adam-like
    optimizers drift on their momentum alone. The loss stays flat with no error.

    ## Example
    ```python
    for x, y in loader:
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.zero_grad()
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

    ## Known problems
    A helper of another module that clears gradients may clear only some of
    them on purpose (freezing a layer for a few steps) and is not flagged.
    A `model.zero_grad()` counts only when the loop steps a single optimizer;
    with several (a GAN) it may be clearing another model on purpose.
    """

    needs = ("backward",)
    needs_all = ("torch", "backward", "step")
    code = "NN202"
    name = "zero-grad-between-backward-and-step"
    message = "gradients cleared between `backward()` and `{target}.step()`; clear them before `backward()`"
    severity = Severity.ERROR

    invalid = (
        """
import torch
model = torch.nn.Linear(4, 2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for x, y in loader:
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.zero_grad()
    optimizer.step()
""",
        """
import torch

def train_step(model, opt, x):
    model(x).sum().backward()
    model.zero_grad(set_to_none=True)
    opt.step()
""",
    )
    valid = (
        """
import torch
model = torch.nn.Linear(4, 2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for x, y in loader:
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    if not torch.isfinite(loss):
        optimizer.zero_grad()
        continue
    optimizer.step()
    optimizer.zero_grad()
""",
        """
import torch
opt_d = torch.optim.Adam(disc.parameters())
opt_g = torch.optim.Adam(gen.parameters())
for real in loader:
    opt_d.zero_grad()
    d_loss(disc, gen, real).backward()
    opt_d.step()
    opt_g.zero_grad()
    g_loss(disc, gen).backward()
    disc.zero_grad()
    opt_g.step()
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        seen = set()
        for unit in analyze(ctx).units:
            for clear, step in _cleared_before_step(unit):
                if clear.node in seen:
                    continue
                seen.add(clear.node)
                line = ctx.position(step.node).start.line
                yield ctx.report(
                    self, clear.node, target=step.target, note=f"step at {ctx.line_label(line)}"
                )


def _cleared_before_step(unit: Loop) -> Iterator[tuple[Event, Event]]:
    targets = {e.target for e in unit.of(STEP)}
    events = unit.events
    for i, step in enumerate(events):
        if step.kind != STEP or step.closure:
            continue
        for j in range(i - 1, -1, -1):
            prior = events[j]
            if prior.kind == BACKWARD:
                break
            covers = prior.target == step.target or (prior.target is None and len(targets) == 1)
            if (
                prior.kind == ZERO_GRAD
                and not prior.helper
                and covers
                and prior.always_with(step)
                and prior.loops == step.loops
            ):
                if any(e.kind == BACKWARD for e in events[:j]):
                    yield prior, step
                break

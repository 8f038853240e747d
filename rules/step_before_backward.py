from __future__ import annotations

from collections.abc import Iterator

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import ScriptRule
from nnlint.script.loops import BACKWARD, STEP, Event, Loop, analyze


class StepBeforeBackward(ScriptRule):
    """`optimizer.step()` runs before `loss.backward()` in the same iteration.

    ## What it does
    Flags an optimizer step that always runs in a loop iteration (or a
    function) before any `backward()` of that iteration, while a `backward()`
    follows it in the same iteration.

    ## Why is this bad?
    The step applies the gradients of the previous batch (or none at all on
    the first one), and the gradients of the last batch are never applied.
    Combined with a `zero_grad()` between them, the step applies nothing.

    ## Example
    ```python
    for x, y in loader:
        optimizer.zero_grad()
        optimizer.step()
        loss = loss_fn(model(x), y)
        loss.backward()
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
    A step inside an `if` before an unconditional `backward()` (stepping at the
    start of the next iteration after accumulating) is left alone, and so is
    `optimizer.step(closure)`. A step after any backward of the iteration is
    left alone: with several optimizers the file cannot tell which loss fills
    which optimizer.
    """

    needs = ("backward",)
    needs_all = ("torch", "backward", "step")
    code = "NN203"
    name = "step-before-backward"
    message = (
        "`{target}.step()` runs before `backward()` in the same iteration; step after `backward()`"
    )
    severity = Severity.ERROR

    invalid = (
        """
import torch
model = torch.nn.Linear(4, 2)
optimizer = torch.optim.Adam(model.parameters())
for x, y in loader:
    optimizer.zero_grad()
    optimizer.step()
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
""",
    )
    valid = (
        """
import torch
model = torch.nn.Linear(4, 2)
optimizer = torch.optim.Adam(model.parameters())
for i, (x, y) in enumerate(loader):
    if i > 0 and i % 4 == 0:
        optimizer.step()
        optimizer.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
""",
        """
import torch
model = torch.nn.Linear(4, 2)
optimizer = torch.optim.LBFGS(model.parameters())

def closure():
    optimizer.zero_grad()
    loss = model(x).sum()
    loss.backward()
    return loss

for x in loader:
    optimizer.step(closure)
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        seen = set()
        for unit in analyze(ctx).units:
            for step, backward in steps_before_backward(unit):
                if step.node not in seen:
                    seen.add(step.node)
                    line = ctx.position(backward.node).start.line
                    yield ctx.report(
                        self,
                        step.node,
                        target=step.target,
                        note=f"backward at {ctx.line_label(line)}",
                    )


def steps_before_backward(unit: Loop) -> Iterator[tuple[Event, Event]]:
    """(step, the backward after it) for each step that no backward of its iteration precedes.

    The backward after the step must sit in the same branches: a step inside an
    `if` before an unconditional backward is the accumulation pattern. With a
    backward earlier in the iteration (another optimizer's, in a GAN) the file
    cannot tell which loss fills which optimizer, and the step is left alone.
    """
    events = unit.events
    for i, step in enumerate(events):
        if step.kind != STEP or step.closure:
            continue
        if any(e.kind == BACKWARD for e in events[:i]):
            continue
        later = [
            e
            for e in events[i + 1 :]
            if e.kind == BACKWARD and e.loops == step.loops and e.conds == step.conds
        ]
        if later:
            yield step, later[0]

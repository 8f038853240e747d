from __future__ import annotations

from collections.abc import Iterator

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import ScriptRule
from nnlint.script.loops import SCHEDULER_STEP, STEP, analyze


class SchedulerBeforeOptimizerStep(ScriptRule):
    """The learning-rate scheduler steps before the optimizer in each iteration.

    ## What it does
    Flags a `scheduler.step()` that always runs in a loop iteration (or a
    function) before every optimizer step of that iteration, as in the order
    PyTorch used before 1.1.0: `scheduler.step()` at the top of the epoch loop,
    then the batches.

    ## Why is this bad?
    Since PyTorch 1.1.0 the scheduler must step after the optimizer. Stepping
    it first skips the first value of the schedule: a warm-up starts one step
    late and the whole schedule is shifted by one epoch (PyTorch warns about
    it once, at the first step).

    ## Example
    ```python
    for epoch in range(epochs):
        scheduler.step()
        for x, y in loader:
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            optimizer.step()
    ```

    ## Use instead
    ```python
    for epoch in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            optimizer.step()
        scheduler.step()
    ```

    ## Known problems
    A scheduler step inside an `if`, or an iteration whose optimizer step runs
    in a helper of another module, is left alone.
    """

    needs_all = ("torch", "step")
    code = "NN214"
    name = "scheduler-before-optimizer-step"
    message = (
        "`{target}.step()` runs before the optimizer step of its iteration; "
        "step the scheduler after `optimizer.step()`"
    )
    severity = Severity.WARNING

    invalid = (
        """
import torch
model = torch.nn.Linear(4, 2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
sched = torch.optim.lr_scheduler.StepLR(optimizer, 10)
for epoch in range(30):
    sched.step()
    for x, y in loader:
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
""",
    )
    valid = (
        """
import torch
model = torch.nn.Linear(4, 2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
sched = torch.optim.lr_scheduler.StepLR(optimizer, 10)
for epoch in range(30):
    for x, y in loader:
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
    sched.step()
""",
        """
import torch
model = torch.nn.Linear(4, 2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.1, total_steps=100)
for i, (x, y) in enumerate(loader):
    if i > 0:
        scheduler.step()
    optimizer.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    optimizer.step()
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        seen = set()
        for unit in analyze(ctx).units:
            for i, event in enumerate(unit.events):
                if event.kind != SCHEDULER_STEP or event.conds or event.loops:
                    continue
                if any(e.kind == STEP for e in unit.events[:i]):
                    continue
                later = [e for e in unit.events[i + 1 :] if e.kind == STEP and not e.manual]
                if later and event.node not in seen:
                    seen.add(event.node)
                    line = ctx.position(later[0].node).start.line
                    yield ctx.report(
                        self, event.node, note=f"optimizer step at line {line}", target=event.target
                    )

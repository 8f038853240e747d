from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import ScriptRule
from nnlint.script.loops import BACKWARD, STEP, analyze


class MissingSeed(ScriptRule):
    """A training script never seeds its random number generators.

    ## What it does
    Flags a file with a training loop (`backward()` and an optimizer step)
    that never calls anything named like a seeding function
    (`torch.manual_seed`, `lightning.seed_everything`, `transformers.set_seed`,
    your own `set_seed`). Off by default: enable it for experiment scripts.

    ## Why is this bad?
    Weight initialization, data shuffling, dropout and augmentation all draw
    random numbers. Without a fixed seed two runs of the same code differ,
    so a change cannot be told apart from noise, and a bug seen once may
    never come back.

    ## Example
    ```python
    model = Net()
    for x, y in loader:
        ...
    ```

    ## Use instead
    ```python
    torch.manual_seed(0)
    model = Net()
    for x, y in loader:
        ...
    ```
    """

    needs = ("backward",)
    needs_all = ("torch", "backward", "step")
    code = "NN211"
    name = "missing-seed"
    message = (
        "training script never seeds torch; call `torch.manual_seed(...)` before building the model"
    )
    severity = Severity.INFO
    default_enabled = False

    invalid = (
        """
import torch
model = torch.nn.Linear(4, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for x, y in loader:
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step()
""",
    )
    valid = (
        """
import random
import torch

def set_seed(seed):
    random.seed(seed)
    torch.manual_seed(seed)

set_seed(0)
model = torch.nn.Linear(4, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for x, y in loader:
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step()
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        analysis = analyze(ctx)
        training = [u for u in analysis.loops if u.of(BACKWARD) and u.of(STEP)]
        if not training or _seeds(analysis):
            return
        yield ctx.report(self, _header(training[0].node))


def _seeds(analysis) -> bool:
    for call in analysis.values.calls:
        func = call.func
        name = func.attr.value if isinstance(func, cst.Attribute) else getattr(func, "value", "")
        if isinstance(name, str) and "seed" in name.lower():
            return True
    return False


def _header(loop: cst.For | cst.While) -> cst.CSTNode:
    return loop.target if isinstance(loop, cst.For) else loop.test

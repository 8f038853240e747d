from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import GraphRule


class ModulesInPlainList(GraphRule):
    """Submodules or parameters kept in a plain Python list or dict, so they never train.

    ## What it does
    Looks at every module of the model for an attribute that is a `list`,
    `tuple`, `dict` or `set` holding layers (`nn.Module`) or `nn.Parameter`s
    with trainable weights that the model does not register anywhere else.

    ## Why is this bad?
    PyTorch registers a submodule only when it is assigned to an attribute
    directly or held by `nn.ModuleList`/`nn.ModuleDict`/`nn.ParameterList`.
    Layers in a plain list run in the forward, but `model.parameters()` does
    not yield them: the optimizer never updates them, `model.to(device)` and
    `model.eval()` skip them, and `state_dict()` does not save them. The model
    trains with those layers frozen at their random initialisation.

    ## Example
    ```python
    self.blocks = [nn.Linear(64, 64) for _ in range(4)]
    ```

    ## Use instead
    ```python
    self.blocks = nn.ModuleList(nn.Linear(64, 64) for _ in range(4))
    ```

    ## Known problems
    A model kept out of registration on purpose (`self.teacher = [teacher]`, so
    that its weights are neither trained nor saved) is not reported when it is
    frozen or in eval mode; otherwise suppress the finding on that line.
    """

    code = "NN109"
    name = "modules-in-plain-list"
    message = (
        "`{attr}` holds {count} trainable {what} in a plain {container} that the model "
        "does not register, so the optimizer never sees them; use {fix}"
    )
    severity = Severity.ERROR

    invalid = (
        """
import torch.nn as nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = [nn.Linear(16, 16) for _ in range(3)]
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        for block in self.blocks:
            x = block(x).relu()
        return self.head(x)

model = Net()
""",
        """
import torch
import torch.nn as nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)
        self.scales = {"a": nn.Parameter(torch.ones(4)), "b": nn.Parameter(torch.ones(4))}

    def forward(self, x):
        return self.fc(x) * self.scales["a"] + self.scales["b"]

model = Net()
""",
    )
    valid = (
        """
import torch.nn as nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(16, 16) for _ in range(3))
        self.taps = [self.blocks[0], self.blocks[2]]  # views of registered layers
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        for block in self.blocks:
            x = block(x).relu()
        return self.head(x)

model = Net()
""",
        """
import torch.nn as nn

class Student(nn.Module):
    def __init__(self, teacher):
        super().__init__()
        self.teacher = [teacher.eval().requires_grad_(False)]  # hidden on purpose
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(x)

model = Student(nn.Linear(8, 4))
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        import torch

        registered = {id(p) for p in ctx.model.parameters()}
        internals = set(vars(torch.nn.Module()))
        for owner, module in ctx.model.named_modules():
            if type(module).__module__.startswith("torch."):
                continue
            for attr, value in vars(module).items():
                if attr in internals or not isinstance(value, list | tuple | dict | set):
                    continue
                items = list(value.values() if isinstance(value, dict) else value)
                hidden = [item for item in items if _trains_unseen(item, registered, torch)]
                if not hidden:
                    continue
                layers = any(isinstance(item, torch.nn.Module) for item in hidden)
                name = f"{owner}.{attr}" if owner else attr
                yield ctx.report(
                    self,
                    ctx.module_site(name),
                    attr=name,
                    count=len(hidden),
                    what="layers" if layers else "parameters",
                    container=type(value).__name__,
                    fix=_registering(value, layers),
                )


def _trains_unseen(item: Any, registered: set[int], torch: Any) -> bool:
    """A layer or parameter with trainable weights that `model.parameters()` misses."""
    if isinstance(item, torch.nn.Parameter):
        return item.requires_grad and id(item) not in registered
    if not isinstance(item, torch.nn.Module) or not item.training:
        return False
    return any(p.requires_grad and id(p) not in registered for p in item.parameters())


def _registering(value: Any, layers: bool) -> str:
    if isinstance(value, dict):
        return "nn.ModuleDict" if layers else "nn.ParameterDict"
    return "nn.ModuleList" if layers else "nn.ParameterList"

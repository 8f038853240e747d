from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import ScriptRule
from nnlint.script.gradmode import only_in_training
from nnlint.script.values import values

_DROPOUTS = tuple(
    f"torch.nn.{name}"
    for name in ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout")
) + tuple(
    f"torch.nn.modules.dropout.{name}"
    for name in ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout")
)


class DropoutBuiltInForward(ScriptRule):
    """An `nn.Dropout` module is built inside `forward`.

    ## What it does
    Flags `nn.Dropout(...)` (and its 1d/2d/3d and alpha variants)
    constructed in a module's `forward`, as in `nn.Dropout(0.1)(x)`.

    ## Why is this bad?
    A module built during the call is a new object each time, in training
    mode, and is not a submodule of the model: `model.eval()` never reaches
    it, so dropout stays on at evaluation and inference.

    ## Example
    ```python
    def forward(self, x):
        return self.fc(nn.Dropout(0.5)(x))
    ```

    ## Use instead
    ```python
    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(self.drop(x))
    ```
    """

    needs_all = ("torch", "Dropout", "forward")
    code = "NN219"
    name = "dropout-built-in-forward"
    message = (
        "`{call}` is built inside `forward`, so `model.eval()` never turns it off; "
        "build it once in `__init__` and call the submodule"
    )
    severity = Severity.WARNING

    invalid = (
        """
import torch
from torch import nn
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 2)
    def forward(self, x):
        return self.fc(nn.Dropout(0.5)(x))
""",
    )
    valid = (
        """
import torch
from torch import nn
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(8, 2)
    def forward(self, x):
        return self.fc(self.drop(x))
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        tracker = values(ctx)
        for fn in tracker.functions.get("forward", ()):
            if tracker.enclosing(fn, cst.ClassDef) is None:
                continue
            for node in tracker.walk(fn.body):
                if (
                    isinstance(node, cst.Call)
                    and isinstance(node.func, cst.Name | cst.Attribute)
                    and ctx.qualified_name_strings(node.func) & set(_DROPOUTS)
                    and not only_in_training(tracker, node, fn)
                ):
                    yield ctx.report(self, node, call=tracker.code(node))

from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import ScriptRule
from nnlint.script.cstwalk import is_name
from nnlint.script.gradmode import only_in_training
from nnlint.script.values import values

_DROPOUTS = tuple(
    f"torch.nn.functional.{name}"
    for name in ("dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout")
)


class FunctionalDropoutAlwaysOn(ScriptRule):
    """`F.dropout` in a `forward` ignores the module's train/eval mode.

    ## What it does
    Flags `torch.nn.functional.dropout` (and its 1d/2d/3d and alpha
    variants) called in a module's `forward` without `training=`, or with
    `training=True`.

    ## Why is this bad?
    The functional form has no mode of its own: its `training` argument
    defaults to `True`. `model.eval()` does not reach it, so the model keeps
    dropping activations at evaluation and inference, and its predictions are
    noisy and worse than it is.

    ## Example
    ```python
    def forward(self, x):
        return self.fc(F.dropout(x, p=0.5))
    ```

    ## Use instead
    ```python
    def forward(self, x):
        return self.fc(F.dropout(x, p=0.5, training=self.training))
    ```
    """

    needs_all = ("torch", "dropout", "forward")
    code = "NN218"
    name = "functional-dropout-always-on"
    message = (
        "`{call}` in `forward` stays on in eval mode; pass `training=self.training` "
        "(or use an `nn.Dropout` module)"
    )
    severity = Severity.WARNING

    invalid = (
        """
import torch
import torch.nn.functional as F
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 2)
    def forward(self, x):
        return self.fc(F.dropout(x, 0.5))
""",
    )
    valid = (
        """
import torch
import torch.nn.functional as F
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 2)
    def forward(self, x):
        x = F.dropout(x, 0.5, self.training)
        return self.fc(F.dropout(x, p=0.5, training=self.training))
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        tracker = values(ctx)
        for fn in tracker.functions.get("forward", ()):
            if tracker.enclosing(fn, cst.ClassDef) is None:
                continue
            for node in tracker.walk(fn.body):
                if not isinstance(node, cst.Call) or not (
                    ctx.qualified_name_strings(node.func) & set(_DROPOUTS)
                ):
                    continue
                if any(a.star for a in node.args) or only_in_training(tracker, node, fn):
                    continue
                training = [a.value for a in node.args if is_name(a.keyword, "training")]
                positional = [a.value for a in node.args if a.keyword is None]
                training += positional[2:3]
                if not training or is_name(training[0], "True"):
                    yield ctx.report(self, node, call=tracker.code(node.func))

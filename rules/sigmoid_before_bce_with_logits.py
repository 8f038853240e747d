from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import ScriptRule
from nnlint.script import edits
from nnlint.script.values import values


class SigmoidBeforeBceWithLogits(ScriptRule):
    """Sigmoid outputs are fed to a loss that applies the sigmoid itself.

    ## What it does
    Flags `BCEWithLogitsLoss` and `binary_cross_entropy_with_logits` whose
    input is the output of a sigmoid (`torch.sigmoid`, `x.sigmoid()`,
    `nn.Sigmoid()`), directly or through variables.

    ## Why is this bad?
    The loss applies a second sigmoid: every prediction is squashed into
    (0.5, 0.73), gradients shrink, and the model cannot become confident.

    ## Example
    ```python
    criterion = nn.BCEWithLogitsLoss()
    loss = criterion(torch.sigmoid(model(x)), y)
    ```

    ## Use instead
    ```python
    criterion = nn.BCEWithLogitsLoss()
    loss = criterion(model(x), y)
    ```

    ## Fix
    Unsafe: drops the sigmoid (`torch.sigmoid(logits)` becomes `logits`, where
    the loss reads it or where it is assigned). Other code reading the same
    variable then sees logits instead of probabilities.
    """

    needs = ("sigmoid", "Sigmoid")
    needs_all = ("torch",)
    code = "NN212"
    name = "sigmoid-before-bce-with-logits"
    message = "sigmoid output passed to a loss that applies sigmoid itself; pass the raw logits"
    severity = Severity.ERROR

    invalid = (
        """
import torch
import torch.nn as nn
crit = nn.BCEWithLogitsLoss()
scores = model(x).sigmoid()
loss = crit(scores, y)
""",
    )
    fixes = (
        (
            """
import torch
import torch.nn.functional as F
loss = F.binary_cross_entropy_with_logits(torch.sigmoid(model(x)), y)
""",
            """
import torch
import torch.nn.functional as F
loss = F.binary_cross_entropy_with_logits(model(x), y)
""",
        ),
    )
    valid = (
        """
import torch
import torch.nn as nn
import torch.nn.functional as F
logits = model(x)
loss = F.binary_cross_entropy_with_logits(logits, y)
bce = nn.BCELoss()(torch.sigmoid(logits), y)
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        tracker = values(ctx)
        for call in tracker.calls:
            names = {q.rsplit(".", 1)[-1] for q in tracker.torch_names(call.func)}
            if (
                "binary_cross_entropy_with_logits" not in names
                and "bce_logits_fn" not in tracker.tags(call.func)
            ):
                continue
            positional = [a for a in call.args if a.keyword is None and not a.star]
            first = positional[0].value if positional else _keyword(call, "input")
            if first is not None and "sigmoid" in tracker.tags(first):
                source = edits.activation_source(tracker, first, {"sigmoid"})
                drop = edits.drop_activation(tracker, source, {"sigmoid"}) if source else None
                autofix = edits.fix("Drop the sigmoid", drop, safe=False)
                yield ctx.report(self, call, autofix=autofix)


def _keyword(call: cst.Call, name: str) -> cst.BaseExpression | None:
    return next((a.value for a in call.args if a.keyword and a.keyword.value == name), None)

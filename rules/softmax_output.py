from __future__ import annotations

from collections.abc import Iterator

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import GraphRule
from nnlint.graph import TRANSPARENT

_EXPECTS = {"cross_entropy": "logits", "nll": "log-probabilities"}
_LOSS_NAMES = {"cross_entropy": "CrossEntropyLoss", "nll": "NLLLoss"}


class SoftmaxOutput(GraphRule):
    """The model ends in softmax, but the loss expects logits or log-probabilities.

    ## What it does
    Flags a model whose output passes through `softmax` (`nn.Softmax` or
    `F.softmax` in `forward`) when the training script's loss is
    `CrossEntropyLoss` (which expects logits) or `NLLLoss` (which expects
    log-probabilities). The loss is read from the training script, or from the
    `loss_fn` given to `nnlint.check`. `log_softmax` into `CrossEntropyLoss` is
    harmless and reported as info. Softmax applied in the script itself is the
    script rule `softmax-before-cross-entropy`'s business.

    ## Why is this bad?
    `CrossEntropyLoss` applies `log_softmax` itself: on probabilities it
    squashes every output into [0, 1], the gradients shrink, and training
    stalls at a high loss. `NLLLoss` on probabilities is not a likelihood at all.

    ## Example
    ```python
    self.head = nn.Sequential(nn.Linear(128, 10), nn.Softmax(dim=1))
    criterion = nn.CrossEntropyLoss()
    ```

    ## Use instead
    ```python
    self.head = nn.Linear(128, 10)  # logits; softmax only for predictions
    criterion = nn.CrossEntropyLoss()
    ```
    """

    code = "NN102"
    name = "softmax-output"
    message = "the model outputs {what} but {loss} expects {expects}; return {fix}"
    severity = Severity.ERROR

    invalid = (
        """
import torch.nn as nn
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3), nn.Softmax(dim=1))
loss_fn = nn.CrossEntropyLoss()
""",
        """
import torch.nn as nn
import torch.nn.functional as F

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return F.softmax(self.fc(x), dim=-1)

model = Net()
loss_fn = F.nll_loss
""",
    )
    valid = (
        """
import torch.nn as nn
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
loss_fn = nn.CrossEntropyLoss()
""",
        """
import torch.nn as nn
model = nn.Sequential(nn.Linear(8, 3), nn.LogSoftmax(dim=1))
loss_fn = nn.NLLLoss()
""",
        """
import torch.nn as nn
model = nn.Sequential(nn.Linear(8, 3), nn.Softmax(dim=1))
loss_fn = nn.MSELoss()
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        out = ctx.graph.output_node()
        if out is None or ctx.loss not in _EXPECTS:
            return
        if out.kind in TRANSPARENT:
            out = ctx.graph.producer(out)
        if out is None:
            return
        fields = {"loss": _LOSS_NAMES[ctx.loss], "expects": _EXPECTS[ctx.loss]}
        fix = "logits" if ctx.loss == "cross_entropy" else "log_softmax"
        if out.kind == "softmax":
            yield ctx.report(
                self, ctx.op_site(out), what="probabilities (softmax)", fix=fix, **fields
            )
        elif out.kind == "log_softmax" and ctx.loss == "cross_entropy":
            yield ctx.report(
                self,
                ctx.op_site(out),
                note="harmless: log_softmax is idempotent, but it is computed twice",
                severity=Severity.INFO,
                what="log-probabilities (log_softmax)",
                fix="logits",
                **fields,
            )

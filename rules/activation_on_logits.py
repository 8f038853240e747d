from __future__ import annotations

from collections.abc import Iterator

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import GraphRule
from nnlint.graph import TRANSPARENT

# Activations that clip or squash: after them the loss cannot see real logits.
_SQUASHING = frozenset(
    {
        "relu",
        "relu_",
        "relu6",
        "sigmoid",
        "sigmoid_",
        "hardsigmoid",
        "tanh",
        "hardtanh",
        "threshold",
    }
)
_LOGIT_LOSSES = {
    "cross_entropy": "CrossEntropyLoss",
    "nll": "NLLLoss",
    "bce_with_logits": "BCEWithLogitsLoss",
}


class ActivationOnLogits(GraphRule):
    """The model's last op is a ReLU or sigmoid, and the loss expects raw logits.

    ## What it does
    Flags a model whose output comes straight out of `relu`, `sigmoid`,
    `tanh` and similar squashing activations when the training script's loss
    is `CrossEntropyLoss`, `NLLLoss` or `BCEWithLogitsLoss`.

    ## Why is this bad?
    Logits must be free to take any real value. After a ReLU every negative
    logit is 0, so the model cannot make a class unlikely, and dead units get
    no gradient; after a sigmoid the logits live in [0, 1] and the softmax
    over them is nearly uniform. `BCEWithLogitsLoss` applies its own sigmoid.

    ## Example
    ```python
    self.head = nn.Sequential(nn.Linear(128, 10), nn.ReLU())
    criterion = nn.CrossEntropyLoss()
    ```

    ## Use instead
    ```python
    self.head = nn.Linear(128, 10)
    criterion = nn.CrossEntropyLoss()
    ```
    """

    code = "NN108"
    name = "activation-on-logits"
    message = "the model's output goes through `{activation}` but {loss} expects raw logits; drop the final activation"
    severity = Severity.ERROR

    invalid = (
        """
import torch.nn as nn
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3), nn.ReLU())
loss_fn = nn.CrossEntropyLoss()
""",
        """
import torch.nn as nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 1)

    def forward(self, x):
        return self.fc(x).sigmoid()

model = Net()
loss_fn = nn.BCEWithLogitsLoss()
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
model = nn.Sequential(nn.Linear(8, 1), nn.Sigmoid())
loss_fn = nn.BCELoss()
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        out = ctx.graph.output_node()
        if out is None or ctx.loss not in _LOGIT_LOSSES:
            return
        if out.kind in TRANSPARENT:
            out = ctx.graph.producer(out)
        if out is None or out.kind != "activation" or out.target not in _SQUASHING:
            return
        yield ctx.report(
            self, ctx.op_site(out), activation=out.target.rstrip("_"), loss=_LOGIT_LOSSES[ctx.loss]
        )

from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import ScriptRule
from nnlint.script import edits
from nnlint.script.values import values


class SoftmaxBeforeCrossEntropy(ScriptRule):
    """Softmax probabilities are fed to a loss that expects logits or log-probabilities.

    ## What it does
    Flags `cross_entropy`/`CrossEntropyLoss` and `nll_loss`/`NLLLoss` whose
    input is the output of a softmax (`F.softmax`, `torch.softmax`,
    `x.softmax(dim)`, `nn.Softmax()`, or an `nn.Sequential` ending in one),
    directly or through variables, attributes and indexing, or the output
    of a model whose class in the same file ends every `forward` return in
    softmax. `log_softmax` into `NLLLoss` is correct and is not flagged.

    ## Why is this bad?
    `CrossEntropyLoss` applies `log_softmax` itself, so a softmax before it
    squashes the logits twice: gradients shrink and training stalls well
    above the loss it should reach. `NLLLoss` expects log-probabilities, and
    given probabilities it optimizes the wrong quantity.

    ## Example
    ```python
    criterion = nn.CrossEntropyLoss()
    probs = F.softmax(model(x), dim=1)
    loss = criterion(probs, y)
    ```

    ## Use instead
    ```python
    criterion = nn.CrossEntropyLoss()
    loss = criterion(model(x), y)
    probs = F.softmax(logits, dim=1)  # only where probabilities are needed
    ```

    ## Fix
    Unsafe: drops the softmax before cross entropy (`F.softmax(logits, 1)`
    becomes `logits`, where the loss reads it or where it is assigned) and
    makes it a `log_softmax` before NLL. Other code reading the same
    variable then sees logits instead of probabilities.
    """

    needs = ("softmax", "Softmax")
    needs_all = ("torch",)
    code = "NN204"
    name = "softmax-before-cross-entropy"
    message = "softmax output passed to `{loss}`; {fix}"
    severity = Severity.ERROR

    invalid = (
        """
import torch.nn.functional as F
from torch import nn as tnn
crit = tnn.CrossEntropyLoss()
out = model(x)
probs = out.softmax(1)
loss = crit(probs, y)
""",
        """
import torch
import torch.nn as nn

class Trainer:
    def __init__(self, model):
        self.model = model
        self.criterion = nn.NLLLoss()

    def loss(self, x, y):
        return self.criterion(torch.softmax(self.model(x), dim=-1), y)
""",
        """
import torch.nn as nn
import torch.nn.functional as F
net = nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=1))
loss = F.cross_entropy(net(x), y)
"""
        """
import torch.nn as nn
import torch.nn.functional as F

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return F.softmax(self.fc(x), dim=1)

model = Net().to(device)

def train_step(x, y):
    return F.nll_loss(model(x)[mask], y[mask])
""",
    )
    fixes = (
        (
            """
import torch.nn.functional as F
logits = model(x)
probs = F.softmax(logits, dim=-1)
loss = F.cross_entropy(probs.view(-1, probs.size(-1)), y.view(-1))
""",
            """
import torch.nn.functional as F
logits = model(x)
probs = logits
loss = F.cross_entropy(probs.view(-1, probs.size(-1)), y.view(-1))
""",
        ),
        (
            """
import torch
loss = torch.nn.functional.nll_loss(torch.softmax(model(x), dim=-1), y)
""",
            """
import torch
loss = torch.nn.functional.nll_loss(torch.log_softmax(model(x), dim=-1), y)
""",
        ),
    )
    valid = (
        """
import torch.nn as nn
import torch.nn.functional as F
crit = nn.NLLLoss()
log_probs = F.log_softmax(model(x), dim=1)
loss = crit(log_probs, y)
probs = F.softmax(model(x), dim=1)
""",
        """
import torch.nn.functional as F
from torch.nn import CrossEntropyLoss as CE
logits = model(x)
probs = logits.softmax(-1)
loss = CE()(logits, y)
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        tracker = values(ctx)
        for call in tracker.calls:
            family = _family(tracker, call)
            if family is None:
                continue
            arg = _input(call)
            if arg is None:
                continue
            tags = tracker.tags(arg)
            if "probs" in tags and "log_probs" not in tags:
                fix = (
                    "pass the raw logits, it applies log_softmax itself"
                    if family == "cross_entropy"
                    else "use `log_softmax` instead of `softmax`"
                )
                autofix = _fix(tracker, arg, family)
                yield ctx.report(self, call, loss=family, fix=fix, autofix=autofix)


def _fix(tracker, arg: cst.BaseExpression, family: str):
    """Drop the softmax (cross entropy takes logits) or make it a log_softmax (NLL)."""
    source = edits.activation_source(tracker, arg, {"softmax"})
    if source is None:
        return None
    if family == "cross_entropy":
        return edits.fix(
            "Drop the softmax", edits.drop_activation(tracker, source, {"softmax"}), safe=False
        )
    func = source.func
    if not isinstance(func, cst.Attribute) or func.attr.value != "softmax":
        return None
    return edits.fix(
        "Use `log_softmax`", edits.replace(tracker.ctx, func.attr, "log_softmax"), safe=False
    )


def _family(tracker, call: cst.Call) -> str | None:
    names = {q.rsplit(".", 1)[-1] for q in tracker.torch_names(call.func)}
    callee = tracker.tags(call.func)
    if "cross_entropy" in names or "ce_fn" in callee:
        return "cross_entropy"
    if "nll_loss" in names or "nll_fn" in callee:
        return "nll_loss"
    return None


def _input(call: cst.Call) -> cst.BaseExpression | None:
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value == "input":
            return arg.value
    positional = [a for a in call.args if a.keyword is None and not a.star]
    return positional[0].value if positional else None

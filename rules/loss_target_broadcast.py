from __future__ import annotations

import re
from collections.abc import Iterator

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import DynamicRule

# torch's own words when an elementwise loss broadcasts input against target
_SIZES = re.compile(
    r"target size \(torch\.Size\((\[[^\]]*\])\)\) that is different to the input size "
    r"\(torch\.Size\((\[[^\]]*\])\)\)"
)


class LossTargetBroadcast(DynamicRule):
    """The loss's input and target have different shapes and broadcast into a wrong loss.

    ## What it does
    Computes the training loss on the real batch and watches for the
    warning torch gives when an elementwise loss (`mse_loss`, `l1_loss`,
    `smooth_l1_loss`, `huber_loss`, ...) receives an input and a target of
    different shapes, such as predictions of shape `(N, 1)` and targets of
    shape `(N,)`.

    ## Why is this bad?
    The two broadcast to `(N, N)`: every prediction is compared with every
    target, not with its own. The loss still decreases, so training runs, but
    the model learns to predict the batch mean. torch only prints a warning,
    which scrolls away in a training log.

    ## Example
    ```python
    pred = model(x)            # (N, 1)
    loss = F.mse_loss(pred, y) # y: (N,)
    ```

    ## Use instead
    ```python
    loss = F.mse_loss(pred.squeeze(1), y)
    ```
    """

    code = "NN315"
    name = "loss-target-broadcast"
    message = (
        "`{loss}` gets an input of shape {input} and a target of shape {target}, which "
        "broadcast: each prediction is compared with every target; make the shapes equal"
    )
    severity = Severity.ERROR

    invalid = (
        """
import torch
import torch.nn.functional as F

model = torch.nn.Linear(8, 1)
batch = (torch.randn(16, 8), torch.randn(16))
loss_fn = F.mse_loss
""",
        """
import torch
import torch.nn.functional as F

def loss_fn(out, y):
    return F.smooth_l1_loss(out, y) + 0.1 * out.pow(2).mean()

model = torch.nn.Linear(8, 1)
batch = (torch.randn(16, 8), torch.randn(16))
""",
    )
    valid = (
        """
import torch
import torch.nn.functional as F

def loss_fn(out, y):
    return F.mse_loss(out.squeeze(1), y)

model = torch.nn.Linear(8, 1)
batch = (torch.randn(16, 8), torch.randn(16))
""",
        """
import torch
import torch.nn.functional as F

model = torch.nn.Linear(8, 3)
batch = (torch.randn(16, 8), torch.randn(16, 3))
loss_fn = F.l1_loss
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        import warnings

        import torch

        from nnlint.dynamic.context import Skip

        if ctx.loss is None or ctx.loss.synthesized:
            raise Skip("no real loss and target: pass loss_fn, --loss, or a training script")
        with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ctx.loss_of(ctx.run(ctx.fresh(train=False)))
        for warning in caught:
            sizes = _SIZES.search(str(warning.message))
            if sizes is None:
                continue
            target, given = sizes.groups()
            path, line = ctx.loss.site if ctx.loss.site else ctx.locate(None)
            yield self.make(
                path, line, 1, loss=ctx.loss.describe(), input=_tuple(given), target=_tuple(target)
            )
            return


def _tuple(size: str) -> str:
    """`[16, 1]` as the shape a user would write, `(16, 1)`."""
    dims = [d.strip() for d in size.strip("[]").split(",") if d.strip()]
    return f"({dims[0]},)" if len(dims) == 1 else f"({', '.join(dims)})"

from __future__ import annotations

from collections.abc import Iterator

from nnlint.core.finding import Finding
from nnlint.core.rule import DynamicRule


class LossReduction(DynamicRule):
    """The loss grows with the batch size: summed instead of averaged.

    ## What it does
    In eval mode, computes the loss on the batch and on the batch stacked
    twice (the same samples, so a mean gives the same value). A loss that
    doubles is a sum over samples.

    ## Why is this bad?
    With a summed loss the gradient, and so the effective learning rate,
    scales with the batch size: changing the batch size or the last, smaller
    batch of an epoch changes the training dynamics.

    ## Example
    ```python
    loss = F.cross_entropy(logits, y, reduction="sum")
    ```

    ## Use instead
    ```python
    loss = F.cross_entropy(logits, y)   # reduction="mean"
    ```
    """

    code = "NN312"
    name = "loss-reduction"
    message = "{loss} on the batch stacked twice is {ratio}x its value on the batch; average over samples (reduction='mean')"

    valid = (
        """
import torch
model = torch.nn.Linear(8, 3)
batch = (torch.randn(8, 8), torch.randint(0, 3, (8,)))
loss_fn = torch.nn.CrossEntropyLoss()
""",
    )
    invalid = (
        """
import torch
model = torch.nn.Linear(8, 3)
batch = (torch.randn(8, 8), torch.randint(0, 3, (8,)))
loss_fn = torch.nn.CrossEntropyLoss(reduction="sum")
""",
        """
import torch
import torch.nn.functional as F

def loss_fn(out, y):
    return F.mse_loss(out, y, reduction="none").sum()

model = torch.nn.Linear(8, 3)
batch = (torch.randn(8, 8), torch.randn(8, 3))
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        import torch

        from nnlint.dynamic import probes
        from nnlint.dynamic.context import Skip, rounded

        if ctx.loss is None:
            raise Skip("no loss")
        model = ctx.fresh(train=False)
        args, kwargs = probes.repeat((ctx.args, ctx.kwargs), ctx.batch_size, 2)
        with torch.no_grad():
            once = float(ctx.loss_of(ctx.run(model)))
            twice = float(ctx.loss_of(ctx.run(model, args, kwargs), times=2))
        if once == 0 or not abs(once) < float("inf"):
            raise Skip("the loss is zero or not finite")
        ratio = twice / once
        if abs(ratio - 2.0) < 0.1:
            path, line = ctx.loss.site if ctx.loss.site else ctx.locate(None)
            yield self.make(path, line, 1, loss=ctx.loss.describe(), ratio=rounded(ratio))

from __future__ import annotations

import math
from collections.abc import Iterator

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import DynamicRule


class NonFinite(DynamicRule):
    """NaN or Inf in a module's output or in the loss.

    ## What it does
    Watches every module's output in one train-mode forward of the batch; when
    one holds NaN or Inf, replays the forward op by op and reports the first
    op that made NaN or Inf from finite inputs, at the line of your code that
    ran it (else the first module whose output holds it); checks the loss too.
    Reported once: the checks whose verdict NaN invalidates (dead gradients,
    ignored inputs, cannot-overfit, ...) are skipped, NN007 under `--verbose`.

    ## Why is this bad?
    One NaN spreads to every weight at the next step; training is over.
    Typical causes: `log(0)`, `sqrt` of a negative, division by a zero norm,
    an overflowing `exp`.

    ## Example
    ```python
    def forward(self, x):
        return torch.log(self.fc(x))   # log of negative numbers
    ```

    ## Use instead
    ```python
    def forward(self, x):
        return F.log_softmax(self.fc(x), dim=-1)
    ```
    """

    code = "NN311"
    name = "non-finite"
    message = "{what} holds NaN or Inf at init; {hint}"
    severity = Severity.ERROR
    needs_finite = False

    valid = (
        """
import torch
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
batch = (torch.randn(8, 4), torch.randint(0, 3, (8,)))
loss_fn = torch.nn.functional.cross_entropy
""",
    )
    invalid = (
        """
import torch

class Log(torch.nn.Module):
    def forward(self, x):
        return torch.log(x)

model = torch.nn.Sequential(torch.nn.Linear(4, 8), Log(), torch.nn.Linear(8, 3))
batch = (torch.randn(8, 4), torch.randint(0, 3, (8,)))
loss_fn = torch.nn.functional.cross_entropy
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        import torch

        from nnlint.dynamic import probes

        for tensor in probes.tensors((ctx.args, ctx.kwargs)):
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                yield ctx.report(
                    self, None, what="the input batch", hint="clean the data before training"
                )
                return
        base = ctx.passes()
        op = base.nonfinite_op
        if op is not None:
            # The op that made it, at the forward line that ran it; later modules only carry it.
            yield self.make(
                op.path,
                op.line,
                1,
                what=f"the output of `{op.op}`",
                hint="guard log/sqrt/division/exp at this line",
            )
        elif base.first_nonfinite is not None:
            name = base.first_nonfinite[0]
            what = f"the output of `{name}`" if name else "the model's output"
            yield ctx.report(
                self, name or None, what=what, hint="guard log/sqrt/division/exp in that module"
            )
        elif base.loss is not None and not math.isfinite(base.loss):
            yield ctx.report(
                self,
                None,
                what=f"the loss ({ctx.loss.describe()})",
                hint="check the loss inputs (log of 0, probabilities outside [0, 1])",
            )

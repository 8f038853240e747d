from __future__ import annotations

from collections.abc import Iterator

from nnlint.core.finding import Finding
from nnlint.core.rule import DynamicRule


class TrainEvalMismatch(DynamicRule):
    """`model.eval()` does not make the forward deterministic.

    ## What it does
    Runs the batch twice in eval mode under different seeds and names the
    first module whose output differs between the runs. Behind a
    zero-initialised layer (a residual branch's last BatchNorm gamma at zero)
    it looks again after a few real optimizer steps of a copy.

    ## Why is this bad?
    Randomness left on in eval mode (functional dropout with `training=True`,
    a noise layer that ignores `self.training`) makes validation noisy and
    inference irreproducible, and the reported metrics understate the model.

    ## Example
    ```python
    def forward(self, x):
        return self.fc(F.dropout(x, p=0.5, training=True))
    ```

    ## Use instead
    ```python
    def forward(self, x):
        return self.fc(F.dropout(x, p=0.5, training=self.training))
    ```
    """

    code = "NN313"
    name = "train-eval-mismatch"
    message = "in eval mode the output varies between runs (relative {diff}), first at `{module}`; make randomness depend on self.training"

    valid = (
        """
import torch
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Dropout(0.5), torch.nn.Linear(16, 3))
batch = torch.randn(4, 8)
""",
    )
    invalid = (
        """
import torch
import torch.nn.functional as F

class Noisy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(F.dropout(x, p=0.5, training=True))

model = Noisy()
batch = torch.randn(4, 8)
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        import torch

        from nnlint.dynamic import probes
        from nnlint.dynamic.context import SEED, reseed, rounded
        from nnlint.dynamic.training import blocked_at_init, found_after_steps

        def twice(model, recorded: bool):
            runs = []
            for seed in (SEED, SEED + 1):
                reseed(seed)
                with torch.no_grad():
                    if recorded:
                        runs.append(probes.record(model, lambda: ctx.run(model)))
                    else:
                        runs.append((ctx.run(model), []))
            return runs

        def judge(model):
            (out_a, _), (out_b, _) = twice(model, recorded=False)
            a, b = probes.main_output(out_a), probes.main_output(out_b)
            diff = probes.differs(a, b) if a is not None and b is not None else 0.0
            if not diff:
                return None
            # Only now again, recorded with the same seeds, to name the first module.
            (_, rec_a), (_, rec_b) = twice(model, recorded=True)
            module = probes.first_difference(rec_a, rec_b) or ""
            name = module or type(ctx.model).__name__
            return ctx.report(self, module or None, diff=rounded(diff), module=name)

        found = judge(ctx.fresh(train=False))
        if found is None and blocked_at_init(ctx):
            # Behind a zero-initialised layer the randomness shows only after training.
            found = found_after_steps(ctx, judge)
        if found is not None:
            yield found

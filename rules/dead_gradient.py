from __future__ import annotations

from collections.abc import Iterator

from nnlint.core.finding import Finding
from nnlint.core.rule import DynamicRule


class DeadGradient(DynamicRule):
    """Trainable parameters get no gradient, or an exactly zero one, from the real loss.

    ## What it does
    Runs one backward of the real loss on the batch and names the trainable
    parameters whose gradient is None or exactly zero, grouped by module.
    Frozen parameters (`requires_grad=False`) are expected to get none. When
    the graph rule `unused-parameters` is on, parameters that get no gradient
    at all are left to it.

    ## Why is this bad?
    Those weights never train: a branch multiplied by zero, a `.detach()` or
    `.data` in the forward, a module whose output never reaches the loss, or a
    layer of dead ReLUs in front of it.

    ## Example
    ```python
    def forward(self, x):
        return self.a(x) + 0 * self.b(x)
    ```

    ## Use instead
    ```python
    def forward(self, x):
        return self.a(x) + self.b(x)
    ```
    """

    code = "NN306"
    name = "dead-gradient"
    message = "{params} of `{module}` {verb} {what} under the loss; {hint}"

    valid = (
        """
import torch
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
model[0].requires_grad_(False)
batch = (torch.randn(8, 4), torch.randint(0, 3, (8,)))
""",
    )
    invalid = (
        """
import torch

class Zeroed(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(4, 3)
        self.b = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.a(x) + 0 * self.b(x)

model = Zeroed()
batch = (torch.randn(8, 4), torch.randint(0, 3, (8,)))
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        from nnlint.dynamic.context import Skip, module_of

        base = ctx.passes()
        if base.loss is None or not base.grads:
            raise Skip("no loss to backpropagate")
        graph_reports_unused = "unused-parameters" in ctx.selected
        dead: dict[str, list[tuple[str, str]]] = {}
        for name, grad in base.grads.items():
            if grad is None:
                if not graph_reports_unused:
                    dead.setdefault(module_of(name), []).append(
                        (name.rpartition(".")[2], "no gradient")
                    )
            elif not grad.any():
                dead.setdefault(module_of(name), []).append(
                    (name.rpartition(".")[2], "an exactly zero gradient")
                )
        for module, items in dead.items():
            params = ", ".join(f"`{p}`" for p, _ in items)
            what = items[0][1]
            verb = "gets" if len(items) == 1 else "get"
            hint = "check for .detach(), zeroed branches or outputs that never reach the loss"
            yield ctx.report(
                self,
                module,
                params=params,
                module=module or type(ctx.model).__name__,
                verb=verb,
                what=what,
                hint=hint,
            )

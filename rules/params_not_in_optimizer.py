from __future__ import annotations

from collections.abc import Iterator

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import DynamicRule


class ParamsNotInOptimizer(DynamicRule):
    """Trainable parameters that the optimizer does not hold.

    ## What it does
    Compares the model's parameters with `requires_grad=True` against the
    parameters of the optimizer's groups, and names the missing ones by module.

    ## Why is this bad?
    They get gradients but are never updated: typically a head replaced or a
    module added after the optimizer was built, or an optimizer built from
    `model.backbone.parameters()` only.

    ## Example
    ```python
    optimizer = torch.optim.Adam(model.parameters())
    model.head = nn.Linear(512, 10)
    ```

    ## Use instead
    ```python
    model.head = nn.Linear(512, 10)
    optimizer = torch.optim.Adam(model.parameters())
    ```
    """

    code = "NN308"
    name = "params-not-in-optimizer"
    message = "{count} trainable parameter tensor{s} of `{module}` ({names}) {verb} not in the optimizer; build the optimizer after the model is complete"
    severity = Severity.ERROR
    needs_finite = False  # which parameters the optimizer holds does not depend on values

    valid = (
        """
import torch
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
model[0].requires_grad_(False)
optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
batch = (torch.randn(8, 4), torch.randint(0, 3, (8,)))
""",
    )
    invalid = (
        """
import torch
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
model[2] = torch.nn.Linear(8, 3)
batch = (torch.randn(8, 4), torch.randint(0, 3, (8,)))
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        from nnlint.dynamic.context import Skip, module_of

        if ctx.optimizer is None:
            raise Skip("no optimizer given")
        held = ctx.optimizer.held
        missing: dict[str, list[str]] = {}
        for name, param in ctx.model.named_parameters():
            if param.requires_grad and name not in held:
                missing.setdefault(module_of(name), []).append(name.rpartition(".")[2])
        for module, names in missing.items():
            yield ctx.report(
                self,
                module,
                count=len(names),
                s="s" if len(names) > 1 else "",
                module=module or type(ctx.model).__name__,
                names=", ".join(f"`{n}`" for n in names),
                verb="are" if len(names) > 1 else "is",
            )

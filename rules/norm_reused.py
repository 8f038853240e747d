from __future__ import annotations

from collections.abc import Iterator

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import GraphRule


class NormReused(GraphRule):
    """One BatchNorm instance is called at two places in the forward.

    ## What it does
    Flags a BatchNorm module that the forward calls from two or more
    different lines, so that two different activations share its running
    statistics and affine parameters.

    ## Why is this bad?
    The running mean and variance become a blend of two distributions and
    match neither: the model behaves differently in eval than in training.
    Each normalized activation needs its own BatchNorm.

    ## Example
    ```python
    x = self.bn(self.conv1(x))
    x = self.bn(self.conv2(x))
    ```

    ## Use instead
    ```python
    self.bn1, self.bn2 = nn.BatchNorm2d(16), nn.BatchNorm2d(16)
    x = self.bn1(self.conv1(x))
    x = self.bn2(self.conv2(x))
    ```
    """

    code = "NN107"
    name = "norm-reused"
    message = "{norm} is called at {count} places in the forward, mixing their statistics; give each its own BatchNorm"
    severity = Severity.ERROR

    invalid = (
        """
import torch.nn as nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        x = self.bn(self.conv1(x)).relu()
        x = self.bn(self.conv2(x)).relu()
        return x.mean((2, 3))

model = Net()
""",
    )
    valid = (
        """
import torch.nn as nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Conv2d(3 if i == 0 else 8, 8, 3, padding=1, bias=False) for i in range(3))
        self.norms = nn.ModuleList(nn.BatchNorm2d(8) for _ in range(3))

    def forward(self, x):
        for conv, bn in zip(self.blocks, self.norms):
            x = bn(conv(x)).relu()
        return x.mean((2, 3))

model = Net()
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        from torch.nn.modules.batchnorm import _BatchNorm

        places: dict[str, list[tuple[str, int]]] = {}
        for call in ctx.graph.calls:
            if isinstance(call.module, _BatchNorm) and call.location is not None:
                lines = places.setdefault(call.name, [])
                if call.location not in lines:
                    lines.append(call.location)
        for name, lines in places.items():
            if len(lines) < 2:
                continue
            where = ", ".join(f"{ctx.display(path)}:{line}" for path, line in lines)
            yield ctx.report(
                self,
                ctx.module_site(name),
                note=f"called at {where}",
                norm=ctx.label(name),
                count=len(lines),
            )

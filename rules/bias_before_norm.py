from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from nnlint.core.finding import Finding
from nnlint.core.rule import GraphRule
from nnlint.script import edits

_NORMS = frozenset({"batch_norm", "instance_norm"})


class BiasBeforeNorm(GraphRule):
    """A Conv or Linear layer has a bias that the BatchNorm after it cancels.

    ## What it does
    Flags a `Conv*d` or `Linear` with `bias=True` whose output feeds only a
    BatchNorm or an InstanceNorm, in `nn.Sequential` or in a forward such as
    `self.bn(self.conv(x))`. LayerNorm and GroupNorm are not flagged: they
    normalize across channels, so a per-channel bias survives them.

    ## Why is this bad?
    BatchNorm subtracts the per-channel mean, which removes any constant added
    per channel: the bias learns nothing, costs memory and optimizer state,
    and BatchNorm's own shift (beta) already does its job.

    ## Example
    ```python
    self.conv = nn.Conv2d(3, 64, 3)
    self.bn = nn.BatchNorm2d(64)
    ...
    x = self.bn(self.conv(x))
    ```

    ## Fix
    Unsafe: adds `bias=False` to the `nn.Conv2d(...)` or `nn.Linear(...)` call
    at the layer's construction line, when that file is among those linted and
    the line holds one such call. Checkpoints saved with the bias then no
    longer load with `strict=True`.

    ## Use instead
    ```python
    self.conv = nn.Conv2d(3, 64, 3, bias=False)
    self.bn = nn.BatchNorm2d(64)
    ```
    """

    code = "NN101"
    name = "bias-before-norm"
    message = "{layer} has a bias that {norm} cancels; pass `bias=False`"

    invalid = (
        """
import torch.nn as nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        return self.bn(self.conv(x)).relu()

model = Net()
""",
        """
import torch.nn as nn
model = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 2))
""",
    )
    fixes = (
        (
            """
import torch.nn as nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        return self.bn(self.conv(x)).relu()

model = Net()
""",
            """
import torch.nn as nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, bias=False)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        return self.bn(self.conv(x)).relu()

model = Net()
""",
        ),
    )
    valid = (
        """
import torch.nn as nn
model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU())
""",
        """
import torch.nn as nn
model = nn.Sequential(nn.Linear(16, 32), nn.LayerNorm(32), nn.ReLU(), nn.Linear(32, 2))
""",
        """
import torch.nn as nn

class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y

model = nn.Sequential(nn.Conv2d(3, 8, 1, bias=False), Residual())
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        seen = set()
        for node in ctx.graph.nodes:
            if node.kind not in ("conv", "linear") or not node.attrs.get("bias"):
                continue
            users = ctx.graph.consumers(node, through=frozenset())
            if not users or any(u.kind not in _NORMS for u in users):
                continue
            if node.module_name in seen:
                continue
            seen.add(node.module_name)
            site = ctx.module_site(node.module_name)
            yield ctx.report(
                self,
                site,
                autofix=_no_bias(ctx, node.module_name, site),
                note=ctx.forward_line(users[0].module_name),
                layer=ctx.label(node.module_name),
                norm=ctx.label(users[0].module_name),
            )


def _no_bias(ctx, name: str, site):
    """`bias=False` added at the construction line of torch's own layer `name`."""
    layer = type(ctx.model.get_submodule(name))
    if site is None or not layer.__module__.startswith("torch.nn."):
        return None
    edit = edits.keyword_at_site(Path(site.path), site.line, {layer.__name__}, "bias=False")
    return edits.fix("Pass `bias=False`", edit, safe=False)

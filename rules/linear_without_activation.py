from __future__ import annotations

from collections.abc import Iterator

from nnlint.core.finding import Finding
from nnlint.core.rule import GraphRule
from nnlint.graph import TRANSPARENT

# Dropout is the identity at inference, so it does not separate two linear maps.
_THROUGH = TRANSPARENT | {"dropout"}


def _bottleneck(first: dict, second: dict) -> bool:
    """A deliberate low-rank factorization (LoRA): the inner width is below both ends."""
    inner = first.get("out")
    return inner is not None and inner < first.get("in", 0) and inner < second.get("out", 0)


def _axes_swapped(graph, node, first) -> bool:
    """Whether a transpose or permute lies between `first` and `node`: the second
    layer then mixes another axis than the first (a 2D DCT, token then channel mixing)."""
    while node.inputs:
        node = graph.nodes[node.inputs[0]]
        if node is first:
            return False
        if node.kind in ("transpose", "permute"):
            return True
    return False


class LinearWithoutActivation(GraphRule):
    """Two Linear (or dense Conv) layers in a row with nothing nonlinear between.

    ## What it does
    Flags a `Linear` fed directly by another `Linear` (or a dense convolution
    fed by a dense convolution), with only reshapes or dropout between them.
    A low-rank bottleneck (the inner width smaller than both ends, as in LoRA),
    depthwise or grouped convolutions (separable convolutions) and two layers
    with a transpose or permute between them (each mixes another axis, as in
    a 2D DCT) are deliberate designs and not flagged.

    ## Why is this bad?
    A composition of linear maps is one linear map: the two layers have the
    expressive power of one, with more parameters and compute. Usually an
    activation was forgotten.

    ## Example
    ```python
    nn.Sequential(nn.Linear(784, 256), nn.Linear(256, 10))
    ```

    ## Use instead
    ```python
    nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    ```
    """

    code = "NN105"
    name = "linear-without-activation"
    message = "{second} directly follows {first} with no nonlinearity between, so the two collapse into one layer; add an activation"

    invalid = (
        """
import torch.nn as nn
model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Linear(32, 10))
""",
        """
import torch.nn as nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)

    def forward(self, x):
        return self.conv2(self.conv1(x)).relu().mean((2, 3))

model = Net()
""",
    )
    valid = (
        """
import torch.nn as nn
model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.GELU(), nn.Linear(32, 10))
""",
        """
import torch.nn as nn

class LoRALinear(nn.Module):
    def __init__(self, dim=32, rank=4):
        super().__init__()
        self.base = nn.Linear(dim, dim)
        self.down = nn.Linear(dim, rank, bias=False)
        self.up = nn.Linear(rank, dim, bias=False)

    def forward(self, x):
        return self.base(x) + self.up(self.down(x))

model = LoRALinear()
""",
        """
import torch
import torch.nn as nn

class Separable(nn.Module):
    def __init__(self, size=8):
        super().__init__()
        self.rows = nn.Linear(size, size, bias=False)

    def forward(self, x):
        return self.rows(self.rows(x).transpose(-1, -2)).transpose(-1, -2)

model = Separable()
batch = torch.randn(4, 3, 8, 8)
""",
        """
import torch.nn as nn
model = nn.Sequential(
    nn.Conv2d(3, 16, 3, padding=1, groups=1, bias=False),
    nn.BatchNorm2d(16),
    nn.ReLU(),
    nn.Conv2d(16, 16, 3, padding=1, groups=16),
    nn.Conv2d(16, 32, 1),
    nn.ReLU(),
)
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        seen = set()
        for node in ctx.graph.nodes:
            if node.kind not in ("linear", "conv"):
                continue
            first = ctx.graph.producer(node, through=_THROUGH)
            if first is None or first.kind != node.kind:
                continue
            if node.kind == "conv" and (
                first.attrs.get("groups", 1) != 1 or node.attrs.get("groups", 1) != 1
            ):
                continue
            if _bottleneck(first.attrs, node.attrs):
                continue
            if _axes_swapped(ctx.graph, node, first):
                continue  # a separable map (rows, then columns): not one layer
            if any(
                user.kind not in ("linear", "conv")
                for user in ctx.graph.consumers(first, through=_THROUGH)
            ):
                continue  # the first output is also used as it is (a residual): no collapse
            key = (first.module_name, node.module_name)
            if key in seen:
                continue
            seen.add(key)
            yield ctx.report(
                self,
                ctx.module_site(node.module_name),
                note=ctx.forward_line(node.module_name),
                first=ctx.label(first.module_name),
                second=ctx.label(node.module_name),
            )

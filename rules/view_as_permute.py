from __future__ import annotations

from collections.abc import Iterator

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import GraphRule


def _reordered(source: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """True when `target` lists the same dimensions as `source` in another order.

    Moving a size-1 dimension is harmless (it is an unsqueeze), so only the order
    of the other dimensions counts.
    """
    if len(source) != len(target) or sorted(source) != sorted(target):
        return False
    return [d for d in source if d != 1] != [d for d in target if d != 1]


class ViewAsPermute(GraphRule):
    """`view`/`reshape` reorders dimensions, which scrambles the data; use `permute`.

    ## What it does
    Flags a `view` or `reshape` in the model's forward whose target shape is a
    reordering of the source's dimensions, such as turning a `(B, T, C)` tensor
    into `(B, C, T)`. Splitting and merging dimensions, as in the usual
    attention head split `(B, T, C) -> (B, T, H, D)` and merge after a
    `transpose`, is not flagged. It needs the shapes of a recorded forward.

    ## Why is this bad?
    `view` and `reshape` keep the elements in memory order and only relabel
    them: a `(B, T, C)` tensor viewed as `(B, C, T)` mixes time steps and
    channels into nonsense, with no error because the sizes match.

    ## Example
    ```python
    x = x.view(B, C, T)  # x is (B, T, C)
    ```

    ## Use instead
    ```python
    x = x.transpose(1, 2)  # or x.permute(0, 2, 1)
    ```

    ## Known problems
    Dimensions of equal size cannot be told apart: `(B, T, T).view(B, T, T)`
    is never flagged.
    """

    code = "NN103"
    name = "view-as-permute"
    message = "`{op}` turns shape {source} into {target}, a reordering that scrambles the data; use `permute` or `transpose`"
    severity = Severity.ERROR

    invalid = (
        """
import torch
import torch.nn as nn

class Mixer(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(8, 8, 3, padding=1)

    def forward(self, x):
        B, T, C = x.shape
        return self.conv(x.view(B, C, T))

model = Mixer()
batch = torch.randn(2, 5, 8)
""",
    )
    valid = (
        """
import torch
import torch.nn as nn

class Mixer(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(8, 8, 3, padding=1)

    def forward(self, x):
        return self.conv(x.transpose(1, 2))

model = Mixer()
batch = torch.randn(2, 5, 8)
""",
        """
import torch
import torch.nn as nn

class Attention(nn.Module):
    def __init__(self, dim=16, heads=4):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, self.heads, C // self.heads).transpose(1, 2)
        k = k.view(B, T, self.heads, C // self.heads).transpose(1, 2)
        v = v.view(B, T, self.heads, C // self.heads).transpose(1, 2)
        y = torch.softmax(q @ k.transpose(-2, -1), dim=-1) @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.proj(y)

model = Attention()
batch = torch.randn(2, 6, 16)
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        if not ctx.graph.has_shapes:
            return
        for node in ctx.graph.nodes:
            if node.kind not in ("view", "reshape") or not node.in_user_code:
                continue
            if not node.input_shapes or node.output_shape is None:
                continue
            source = node.input_shapes[0]
            if source is None or not _reordered(source, node.output_shape):
                continue
            yield ctx.report(
                self,
                ctx.op_site(node),
                op=node.target,
                source=tuple(source),
                target=tuple(node.output_shape),
            )

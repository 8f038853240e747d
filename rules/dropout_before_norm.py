from __future__ import annotations

from collections.abc import Iterator

from nnlint.core.finding import Finding
from nnlint.core.rule import GraphRule


class DropoutBeforeNorm(GraphRule):
    """Dropout feeds a BatchNorm, whose statistics then differ between train and eval.

    ## What it does
    Flags a Dropout layer (or `F.dropout`) whose output goes into a BatchNorm,
    possibly through reshapes.

    ## Why is this bad?
    In training, BatchNorm learns running variance from dropped-out
    activations; in eval, dropout is off and the variance it sees is
    different, so the normalized outputs shift and accuracy drops at test
    time ("variance shift", Li et al. 2019).

    ## Example
    ```python
    nn.Sequential(nn.Linear(64, 64), nn.Dropout(0.5), nn.BatchNorm1d(64), nn.ReLU())
    ```

    ## Use instead
    ```python
    nn.Sequential(nn.Linear(64, 64, bias=False), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.5))
    ```
    """

    code = "NN104"
    name = "dropout-before-norm"
    message = "{dropout} feeds {norm}, whose statistics then shift between train and eval; put dropout after the normalization"

    invalid = (
        """
import torch.nn as nn
model = nn.Sequential(
    nn.Linear(16, 32, bias=False),
    nn.ReLU(),
    nn.Dropout(0.5),
    nn.BatchNorm1d(32),
    nn.Linear(32, 2),
)
""",
    )
    valid = (
        """
import torch.nn as nn
model = nn.Sequential(
    nn.Linear(16, 32, bias=False),
    nn.BatchNorm1d(32),
    nn.ReLU(),
    nn.Dropout(0.5),
    nn.Linear(32, 2),
)
""",
        """
import torch.nn as nn
model = nn.Sequential(nn.Linear(16, 32), nn.Dropout(0.1), nn.LayerNorm(32), nn.Linear(32, 2))
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        seen = set()
        for node in ctx.graph.nodes:
            if node.kind != "dropout" or not node.attrs.get("active", True):
                continue
            norms = [u for u in ctx.graph.consumers(node) if u.kind == "batch_norm"]
            if not norms or (node.module_name, node.location) in seen:
                continue
            seen.add((node.module_name, node.location))
            own = type(node.module).__name__.startswith(("Dropout", "AlphaDropout"))
            dropout = ctx.label(node.module_name) if own else f"`{node.target}`"
            yield ctx.report(
                self,
                ctx.op_site(node),
                note=ctx.forward_line(norms[0].module_name),
                dropout=dropout,
                norm=ctx.label(norms[0].module_name),
            )

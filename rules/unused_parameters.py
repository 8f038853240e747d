from __future__ import annotations

from collections.abc import Iterator

from nnlint.core.finding import Finding
from nnlint.core.rule import GraphRule


class UnusedParameters(GraphRule):
    """Trainable parameters that the forward never reads.

    ## What it does
    Lists the trainable parameters (`requires_grad=True`) that no op of the
    captured forward reads, grouped by the module that owns them. A parameter
    read through another module counts as used: tied embeddings, or
    `F.linear(x, self.head.weight)`.

    ## Why is this bad?
    They get no gradient, yet the optimizer keeps state for them, weight
    decay shrinks them, checkpoints store them, and DistributedDataParallel
    fails with "Expected to have finished reduction" unless
    `find_unused_parameters=True`. Usually a layer was defined and then
    forgotten in `forward`.

    ## Example
    ```python
    self.fc1 = nn.Linear(784, 256)
    self.fc2 = nn.Linear(256, 10)
    self.dropout = nn.Linear(256, 256)  # meant nn.Dropout, never called
    ```

    ## Use instead
    Call the layer in `forward`, delete it, or freeze it with `requires_grad_(False)`.

    ## Known problems
    One forward on one batch is observed: a branch not taken for this batch
    (mixture-of-experts routing, an auxiliary head used only in some steps)
    leaves its parameters unread. Suppress the finding on that line.
    """

    code = "NN106"
    name = "unused-parameters"
    message = "trainable parameters never read by the forward: {names}; use, remove or freeze them"

    invalid = (
        """
import torch.nn as nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 2)
        self.extra = nn.Linear(16, 16)

    def forward(self, x):
        return self.fc2(self.fc1(x).relu())

model = Net()
""",
        """
import torch
import torch.nn as nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 2)
        self.scale = nn.Parameter(torch.ones(2))

    def forward(self, x):
        return self.fc(x)

model = Net()
""",
    )
    valid = (
        """
import torch.nn as nn
import torch.nn.functional as F

class TiedLM(nn.Module):
    def __init__(self, vocab=50, dim=16):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embed.weight
        self.norm = nn.LayerNorm(dim)

    def forward(self, ids):
        return F.linear(self.norm(self.embed(ids)), self.head.weight)

model = TiedLM()
""",
        """
import torch.nn as nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 2)
        self.frozen = nn.Linear(8, 8).requires_grad_(False)

    def forward(self, x):
        return self.fc(x)

model = Net()
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        unused: dict[str, list[str]] = {}
        for name, param in ctx.model.named_parameters():
            if param.requires_grad and name not in ctx.graph.params_read:
                module_name, _, leaf = name.rpartition(".")
                unused.setdefault(module_name, []).append(leaf)
        for module_name, leaves in unused.items():
            full = [f"{module_name}.{leaf}" if module_name else leaf for leaf in leaves]
            whole = {
                n for n, p in ctx.model.get_submodule(module_name).named_parameters(recurse=False)
            }
            target = module_name if module_name and set(leaves) == whole else full[0]
            yield ctx.report(self, ctx.module_site(target), names=", ".join(full))

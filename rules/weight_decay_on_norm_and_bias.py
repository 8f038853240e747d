from __future__ import annotations

from collections.abc import Iterator

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import DynamicRule


class WeightDecayOnNormAndBias(DynamicRule):
    """Weight decay applied to norm weights, biases and embeddings.

    ## What it does
    Reads the optimizer's parameter groups and names the trainable
    parameters held with `weight_decay > 0` that are biases, the weights of
    a normalization layer (BatchNorm, LayerNorm, GroupNorm, RMSNorm, ...) or
    of an embedding, one finding for each kind. Off by default: a
    recommendation, which many healthy setups do not follow (`AdamW`
    decays everything by 0.01 unless told otherwise).

    ## Why is this bad?
    Weight decay pulls a weight matrix towards small norms, which regularizes
    it. A norm layer's scale and a bias have no such role: decaying a
    LayerNorm gamma towards 0 shrinks the activations the next layer sees,
    and decaying rare tokens' embeddings erases them between the steps that
    see them. Most recipes (BERT, GPT, ViT, ConvNeXt) keep them in a group
    with `weight_decay=0.0`.

    ## Example
    ```python
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    ```

    ## Use instead
    ```python
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    other = [p for n, p in model.named_parameters() if p.dim() < 2 or "embed" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": other, "weight_decay": 0.0}], lr=1e-3
    )
    ```
    """

    code = "NN322"
    name = "weight-decay-on-norm-and-bias"
    message = "weight decay {decay} applied to {what}; put {them} in a parameter group with `weight_decay=0.0`"
    severity = Severity.INFO
    default_enabled = False
    needs_finite = False  # the groups do not depend on the values

    valid = (
        """
import torch
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 3))
decay = [p for p in model.parameters() if p.dim() >= 2]
other = [p for p in model.parameters() if p.dim() < 2]
optimizer = torch.optim.AdamW(
    [{"params": decay, "weight_decay": 0.05}, {"params": other, "weight_decay": 0.0}], lr=1e-3
)
batch = (torch.randn(8, 4), torch.randint(0, 3, (8,)))
""",
        """
import torch
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 3))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
batch = (torch.randn(8, 4), torch.randint(0, 3, (8,)))
""",
    )
    invalid = (
        """
import torch
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 3))
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
batch = (torch.randn(8, 4), torch.randint(0, 3, (8,)))
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        from nnlint.dynamic.context import Skip, rounded

        if ctx.optimizer is None:
            raise Skip("no optimizer given")
        kinds = _kinds(ctx.model)
        params = dict(ctx.model.named_parameters())
        found: dict[str, list[str]] = {}
        decays: dict[str, set[float]] = {}
        for names, options in ctx.optimizer.groups:
            decay = options.get("weight_decay") or 0.0
            if not isinstance(decay, float | int) or decay <= 0:
                continue
            for name in names:
                kind = kinds.get(name)
                if kind is not None and params[name].requires_grad:
                    found.setdefault(kind, []).append(name)
                    decays.setdefault(kind, set()).add(float(decay))
        if not found:
            return
        parts, everything = [], set()
        for kind, names in found.items():
            shown = ", ".join(f"`{n}`" for n in names[:3]) + (", ..." if len(names) > 3 else "")
            parts.append(f"{len(names)} {kind if len(names) > 1 else _ONE[kind]} ({shown})")
            everything |= decays[kind]
        count = sum(len(names) for names in found.values())
        # One finding for the model: the fix is one change to how its groups are built.
        yield ctx.report(
            self,
            None,
            decay="/".join(rounded(d) for d in sorted(everything)),
            what=", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1],
            them="them" if count > 1 else "it",
        )


_ONE = {"biases": "bias", "norm weights": "norm weight", "embeddings": "embedding"}


def _kinds(model) -> dict[str, str]:
    """Parameter name -> "biases", "norm weights" or "embeddings", for those that are."""
    import torch

    norms = (
        torch.nn.modules.batchnorm._NormBase,
        torch.nn.LayerNorm,
        torch.nn.GroupNorm,
        torch.nn.LocalResponseNorm,
        *((torch.nn.RMSNorm,) if hasattr(torch.nn, "RMSNorm") else ()),
    )
    kinds: dict[str, str] = {}
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        for leaf, _ in module.named_parameters(recurse=False):
            name = prefix + leaf
            if leaf == "bias" or leaf.endswith("_bias"):
                kinds[name] = "biases"
            elif isinstance(module, norms) or "norm" in type(module).__name__.lower():
                kinds[name] = "norm weights"
            elif isinstance(module, torch.nn.Embedding | torch.nn.EmbeddingBag):
                kinds[name] = "embeddings"
    return kinds

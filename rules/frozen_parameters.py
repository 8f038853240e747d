from __future__ import annotations

from collections.abc import Iterator

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import DynamicRule


class FrozenParameters(DynamicRule):
    """Frozen parameters that the optimizer holds, or that still change at a step.

    ## What it does
    Names the parameters with `requires_grad=False` that the optimizer's groups
    hold (info), then takes one real step of the user's optimizer on a copy,
    with the gradients the user's frozen parameters carry at that step, and
    names the frozen parameters the step changed, or that share memory with
    a trained one (warning). Off by default: `AdamW(model.parameters())` on a
    model with fixed sinusoidal position tables (Marian, Pegasus, RoFormer)
    holds frozen parameters harmlessly, as torch skips those without a
    gradient.

    ## Why is this bad?
    A frozen parameter that still gets a gradient tensor (frozen after
    training began, with `zero_grad(set_to_none=False)` leaving zeros) is
    moved by weight decay and momentum as if it trained: the backbone you
    froze drifts. One that the optimizer merely holds costs nothing today,
    but unfreezing it later trains it with the optimizer's state of a frozen
    tensor, and it hides which parameters are meant to train.

    ## Example
    ```python
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=1e-2)
    ...
    optimizer.zero_grad(set_to_none=False)
    model.backbone.requires_grad_(False)
    ```

    ## Use instead
    ```python
    model.backbone.requires_grad_(False)
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=0.1, weight_decay=1e-2
    )
    ```
    """

    code = "NN321"
    name = "frozen-parameters"
    default_enabled = False
    message = "{count} frozen parameter tensor{s} of `{module}` ({names}) {what}; {hint}"
    needs_finite = False  # what the optimizer holds and moves does not depend on the values

    valid = (
        """
import torch
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
model[0].requires_grad_(False)
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
batch = (torch.randn(8, 4), torch.randint(0, 3, (8,)))
""",
    )
    invalid = (
        """
import torch
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
model[0].requires_grad_(False)
batch = (torch.randn(8, 4), torch.randint(0, 3, (8,)))
""",
        """
import torch
import torch.nn.functional as F
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
batch = (torch.randn(8, 4), torch.randint(0, 3, (8,)))
F.cross_entropy(model(batch[0]), batch[1]).backward()
optimizer.step()
optimizer.zero_grad(set_to_none=False)
model[0].requires_grad_(False)
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        from nnlint.dynamic.context import Skip

        if ctx.optimizer is None:
            raise Skip("no optimizer given")
        frozen = [n for n, p in ctx.model.named_parameters() if not p.requires_grad]
        if not frozen:
            return
        held = ctx.optimizer.held
        moved = _tied_to_trained(ctx.model, frozen)
        if ctx.loss is not None:
            moved |= _moved_by_a_step(ctx, frozen)
        yield from self._grouped(
            ctx,
            sorted(moved, key=frozen.index),
            Severity.WARNING,
            "{verb} changed by one optimizer step",
            "build the optimizer from the trainable parameters only and clear gradients with `zero_grad(set_to_none=True)`",
        )
        yield from self._grouped(
            ctx,
            [n for n in frozen if n in held and n not in moved],
            Severity.INFO,
            "{verb} held by the optimizer",
            "build it from `[p for p in model.parameters() if p.requires_grad]`",
        )

    def _grouped(self, ctx, names, severity, what, hint) -> Iterator[Finding]:
        from nnlint.dynamic.context import module_of

        by_module: dict[str, list[str]] = {}
        for name in names:
            by_module.setdefault(module_of(name), []).append(name.rpartition(".")[2])
        for module, leaves in by_module.items():
            yield ctx.report(
                self,
                module,
                severity=severity,
                count=len(leaves),
                s="s" if len(leaves) > 1 else "",
                module=module or type(ctx.model).__name__,
                names=", ".join(f"`{n}`" for n in leaves),
                what=what.format(verb="are" if len(leaves) > 1 else "is"),
                hint=hint,
            )


def _moved_by_a_step(ctx, frozen: list[str]) -> set[str]:
    """The frozen parameters that one step of the user's optimizer changes, on a copy
    whose frozen parameters carry the gradients the user's carry (zeros left by
    `zero_grad(set_to_none=False)`, a stale one from before they were frozen). The
    weights are compared after the backward, so a forward that updates a frozen
    tensor itself (a codebook, a running statistic) is not counted."""
    import torch

    model = ctx.fresh(train=True)
    loss = ctx.loss_of(ctx.run(model))
    if loss.requires_grad:
        loss.backward()
    theirs = dict(ctx.model.named_parameters())
    params = dict(model.named_parameters())
    for name in frozen:
        grad = theirs[name].grad
        params[name].grad = None if grad is None else grad.detach().clone()
    if all(params[n].grad is None for n in frozen):
        return set()
    before = {n: params[n].detach().clone() for n in frozen}
    ctx.optimizer.build(model).step()
    return {n for n in frozen if not torch.equal(before[n], params[n].detach())}


def _tied_to_trained(model, frozen: list[str]) -> set[str]:
    """The frozen parameters that share memory with a trainable one (`b.weight =
    nn.Parameter(a.weight.data, requires_grad=False)`): every step of that one moves
    them. Read on the user's model, as a copy does not keep such a tie."""
    params = dict(model.named_parameters())
    trained = {p.untyped_storage().data_ptr() for p in params.values() if p.requires_grad}
    return {n for n in frozen if params[n].untyped_storage().data_ptr() in trained}

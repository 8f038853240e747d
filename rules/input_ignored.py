from __future__ import annotations

from collections.abc import Iterator

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import DynamicRule, Option


class InputIgnored(DynamicRule):
    """The output does not depend on an input, or on a large part of it.

    ## What it does
    In eval mode, replaces each input of sample 0 with new values and checks
    that sample 0's output changes. For float inputs it also backpropagates
    random output weights to find the input features that get no gradient in
    any sample, then confirms by changing exactly those features: if the
    output stays the same and they are more than `max_ignored_fraction` of
    the input, the model ignores them. A zero-initialised output layer ignores
    the input only at init, so either verdict is confirmed on a copy trained
    for a few real optimizer steps (in train mode, dropout off).

    ## Why is this bad?
    A model that never looks at (part of) its input can only learn the label
    prior: a branch multiplied by zero, an input overwritten in `forward`,
    a slice that drops half the features.

    ## Example
    ```python
    def forward(self, x):
        return self.fc(x[:, :4] * 0 + self.bias)
    ```

    ## Use instead
    ```python
    def forward(self, x):
        return self.fc(x)
    ```
    """

    code = "NN305"
    name = "input-ignored"
    message = "the output ignores {what}; {hint}"
    severity = Severity.ERROR
    options = {
        "max_ignored_fraction": Option(0.5, "largest fraction of an input's features left unused")
    }

    valid = (
        """
import torch
model = torch.nn.Sequential(torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(16, 3))
batch = (torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,)))
""",
    )
    invalid = (
        """
import torch

class Half(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x[:, :4])

model = Half()
batch = (torch.randn(8, 16), torch.randint(0, 3, (8,)))
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        import torch

        from nnlint.dynamic import probes
        from nnlint.dynamic.context import Skip, rounded

        named = probes.input_names(ctx.args, ctx.kwargs)
        if not named:
            raise Skip("no tensor input")
        model = ctx.fresh(train=False)
        gen = ctx.generator()
        with torch.no_grad():
            base = probes.main_output(ctx.run(model, same_rng=True))
        if base is None or not base.dim() or base.shape[0] != ctx.batch_size:
            raise Skip("the output has no batch dimension")
        for key, label in named:
            x = probes.get_input(ctx.args, ctx.kwargs, key)
            if not x.dim() or x.shape[0] != ctx.batch_size or (key == "attention_mask"):
                continue
            perturbed = probes.perturb_sample(x, gen)
            if self._unchanged(ctx, model, key, perturbed, base) and self._still(
                ctx, key, perturbed
            ):
                yield ctx.report(
                    self, None, what=f"input {label} entirely", hint="check that forward uses it"
                )
                continue
            if not x.is_floating_point():
                continue
            unused = self._zero_gradient(ctx, model, key, x, gen)
            fraction = float(unused.float().mean()) if unused is not None else 0.0
            if fraction > self.settings["max_ignored_fraction"]:
                changed = x.clone()
                changed[0][unused] = probes.random_like(x[0], gen)[unused]
                if self._unchanged(ctx, model, key, changed, base) and self._still(
                    ctx, key, changed
                ):
                    yield ctx.report(
                        self,
                        None,
                        what=f"{rounded(fraction * 100)}% of input {label}'s features",
                        hint="check slicing, masking and zeroed branches in forward",
                    )

    def _unchanged(self, ctx, model, key, changed, base) -> bool:
        import torch

        from nnlint.dynamic import probes

        with torch.no_grad():
            out = probes.main_output(
                ctx.run(
                    model, *probes.with_input(ctx.args, ctx.kwargs, key, changed), same_rng=True
                )
            )
        return not probes.differs(out[0], base[0])

    def _still(self, ctx, key, changed) -> bool:
        """Whether the input is still ignored after a few optimizer steps: a zero-initialised
        output layer (adaLN-Zero, `zero_module`, a zero head) ignores it only at init.
        In train mode (dropout off), as eval-mode BatchNorm statistics are still those of init."""
        import torch

        from nnlint.dynamic import probes

        if ctx.loss is None:
            return True
        verdicts: dict[int, bool] = {}  # steps -> still ignored

        def still(t) -> bool:
            if t.steps not in verdicts:
                model = ctx.set_mode(t.model, train=True, dropout=False)
                with torch.no_grad():
                    base = probes.main_output(ctx.run(model, same_rng=True))
                verdicts[t.steps] = self._unchanged(ctx, model, key, changed, base)
            return verdicts[t.steps]

        trained = ctx.trained(until=lambda t: not still(t))
        if trained.diverged or not trained.steps:
            return True
        return still(trained)

    def _zero_gradient(self, ctx, model, key, x, gen):
        import torch

        from nnlint.dynamic import probes

        x = x.detach().clone().requires_grad_(True)
        out = probes.main_output(ctx.run(model, *probes.with_input(ctx.args, ctx.kwargs, key, x)))
        if out is None or not out.requires_grad:
            return None
        weights = torch.randn(out.shape, generator=gen).to(out.device, out.dtype)
        (weights * out).sum().backward()
        return None if x.grad is None else (x.grad == 0).all(0)

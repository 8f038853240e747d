from __future__ import annotations

from collections.abc import Iterator

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import DynamicRule, Option


class NumericGradCheck(DynamicRule):
    """Autograd gradients disagree with finite differences.

    ## What it does
    On a float64 copy in eval mode, compares the gradient of the loss with
    central differences for `coordinates` random coordinates of each of the
    first `tensors` parameter tensors. Off by default: it costs two forwards
    per coordinate.

    ## Why is this bad?
    A custom `torch.autograd.Function` with a wrong `backward`, or a
    straight-through trick applied where it should not be, trains the model
    on gradients of a different function.

    ## Example
    ```python
    class Square(torch.autograd.Function):
        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return g * x          # should be 2 * x * g
    ```

    ## Use instead
    Fix the backward; `torch.autograd.gradcheck` helps while writing it.
    """

    code = "NN314"
    name = "numeric-grad-check"
    message = "autograd gradient of `{param}` is {auto}, finite differences give {numeric} (relative error {error}); check custom autograd functions"
    severity = Severity.ERROR
    default_enabled = False
    options = {
        "coordinates": Option(3, "coordinates checked per tensor"),
        "tensors": Option(8, "parameter tensors checked"),
        "tolerance": Option(1e-3, "largest relative error"),
    }

    valid = (
        """
import torch
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
batch = (torch.randn(6, 4), torch.randint(0, 3, (6,)))
""",
    )
    invalid = (
        """
import torch

class Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * x

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return Square.apply(self.fc(x))

model = Net()
batch = (torch.randn(6, 4), torch.randint(0, 3, (6,)))
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        import torch

        from nnlint.dynamic import probes
        from nnlint.dynamic.context import Skip, module_of, rounded

        if ctx.loss is None:
            raise Skip("no loss")
        model = ctx.fresh(train=False).double()
        args, kwargs = probes.map_tensors(
            (ctx.args, ctx.kwargs), lambda t: t.double() if t.is_floating_point() else t
        )
        saved = ctx.loss.target
        if isinstance(saved, torch.Tensor) and saved.is_floating_point():
            ctx.loss.target = saved.double()
        try:
            yield from self._compare(ctx, model, args, kwargs, rounded, module_of)
        finally:
            ctx.loss.target = saved

    def _compare(self, ctx, model, args, kwargs, rounded, module_of):
        import torch

        from nnlint.dynamic.context import Skip

        def loss() -> torch.Tensor:
            return ctx.loss_of(ctx.run(model, args, kwargs))

        value = loss()
        if value.dtype != torch.float64:
            raise Skip("the model computes its loss below float64 precision")
        if not value.requires_grad:
            raise Skip("no gradient reaches the loss")
        value.backward()
        gen = ctx.generator(3)
        params = [
            (n, p) for n, p in model.named_parameters() if p.requires_grad and p.grad is not None
        ]
        for name, param in params[: self.settings["tensors"]]:
            flat, grad = param.data.view(-1), param.grad.view(-1)
            for index in torch.randint(
                0, flat.numel(), (self.settings["coordinates"],), generator=gen
            ).tolist():
                ctx.tick()
                original = flat[index].item()
                eps = 1e-6 * max(1.0, abs(original))
                with torch.no_grad():
                    flat[index] = original + eps
                    up = float(loss())
                    flat[index] = original - eps
                    down = float(loss())
                    flat[index] = original
                numeric, auto = (up - down) / (2 * eps), float(grad[index])
                error = abs(numeric - auto) / max(abs(numeric), abs(auto), 1e-8)
                if error > self.settings["tolerance"] and abs(numeric - auto) > 1e-7:
                    yield ctx.report(
                        self,
                        module_of(name),
                        param=name,
                        auto=rounded(auto),
                        numeric=rounded(numeric),
                        error=rounded(error),
                    )
                    return

from __future__ import annotations

import math
from collections.abc import Iterator

from nnlint.core.finding import Finding
from nnlint.core.rule import DynamicRule, Option

_ADAPTIVE = (
    "Adam",
    "AdamW",
    "Adamax",
    "NAdam",
    "RAdam",
    "RMSprop",
    "Adagrad",
    "Adadelta",
    "SparseAdam",
)


class GradientScale(DynamicRule):
    """Vanishing, exploding or non-finite gradients, or updates far off the ~1e-3 rule.

    ## What it does
    From one backward of the real loss: names parameters with NaN/Inf
    gradients, weight matrices whose gradient is more than `max_relative_grad`
    times their own scale (exploding), and layers whose relative gradient is
    below `vanishing_ratio` of the largest layer's (vanishing). Then takes one
    step of the user's optimizer on a copy and compares the median
    update/weight ratio of the weight matrices with the ~1e-3 rule of thumb
    (biases and zero-initialized parameters excluded; adaptive optimizers
    move each element by about lr, so they get a wider band).

    ## Why is this bad?
    Vanishing gradients leave early layers untrained; exploding ones and
    updates as large as the weights make training diverge; updates a thousand
    times too small make it crawl.

    ## Example
    ```python
    layers = [nn.Sequential(nn.Linear(64, 64), nn.Sigmoid()) for _ in range(30)]
    ```

    ## Use instead
    ```python
    layers = [nn.Sequential(nn.Linear(64, 64), nn.LayerNorm(64), nn.GELU()) for _ in range(30)]
    ```
    """

    code = "NN307"
    name = "gradient-scale"
    message = "{what}; {hint}"
    options = {
        "max_relative_grad": Option(10.0, "largest gradient/weight RMS ratio of a weight matrix"),
        "vanishing_ratio": Option(
            1e-5, "smallest relative gradient of a layer, as a fraction of the largest"
        ),
        "max_update_ratio": Option(
            0.1, "largest median update/weight ratio (x10 for adaptive optimizers)"
        ),
        "min_update_ratio": Option(1e-6, "smallest median update/weight ratio"),
    }

    valid = (
        """
import torch
model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
batch = (torch.randn(16, 16), torch.randint(0, 4, (16,)))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
""",
    )
    invalid = (
        """
import torch
model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
batch = (torch.randn(16, 16), torch.randint(0, 4, (16,)))
optimizer = torch.optim.SGD(model.parameters(), lr=100.0)
""",
        """
import torch
layers = []
for _ in range(30):
    layers += [torch.nn.Linear(32, 32), torch.nn.Sigmoid()]
model = torch.nn.Sequential(torch.nn.Linear(16, 32), *layers, torch.nn.Linear(32, 4))
batch = (torch.randn(16, 16), torch.randint(0, 4, (16,)))
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        import torch

        from nnlint.dynamic.context import Skip, module_of, rounded

        base = ctx.passes()
        if base.loss is None or not base.grads:
            raise Skip("no loss to backpropagate")
        if not math.isfinite(base.loss):
            raise Skip("the loss is not finite (see non-finite)")
        bad = [n for n, g in base.grads.items() if g is not None and not torch.isfinite(g).all()]
        if bad:
            yield ctx.report(
                self,
                module_of(bad[0]),
                what=f"gradient of `{bad[0]}` holds NaN or Inf"
                + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""),
                hint="look for log/sqrt/division of values near 0 in the forward",
            )
            return
        params = dict(base.model.named_parameters())
        embeddings = {
            n + ".weight"
            for n, m in base.model.named_modules()
            if isinstance(m, torch.nn.Embedding)
        }
        relative = {}
        for name, grad in base.grads.items():
            weight = params[name]
            if grad is None or weight.dim() < 2 or name in embeddings or not grad.any():
                continue
            w_rms = float(weight.detach().double().pow(2).mean().sqrt())
            if w_rms > 0:
                relative[name] = float(grad.double().pow(2).mean().sqrt()) / w_rms
        if relative:
            name, top = max(relative.items(), key=lambda kv: kv[1])
            if top > self.settings["max_relative_grad"]:
                yield ctx.report(
                    self,
                    module_of(name),
                    what=f"gradient of `{name}` is {rounded(top)}x its weight's scale (exploding)",
                    hint="normalize activations, scale down init or clip gradients",
                )
                return
            low_name, low = min(relative.items(), key=lambda kv: kv[1])
            if low < top * self.settings["vanishing_ratio"]:
                yield ctx.report(
                    self,
                    module_of(low_name),
                    what=f"relative gradient of `{low_name}` is {rounded(low)}, {rounded(top / low)}x below `{name}`'s (vanishing)",
                    hint="use residual connections, normalization or non-saturating activations",
                )
                return
        flowing = {n for n, g in base.grads.items() if g is not None and g.any()}
        yield from self._update_ratio(ctx, embeddings, flowing)

    def _update_ratio(self, ctx, embeddings, flowing) -> Iterator[Finding]:
        from nnlint.dynamic.context import rounded

        model = ctx.fresh(train=True)
        optimizer, described, _ = ctx.optimizer_for(model)
        before = {
            n: p.detach().clone()
            for n, p in model.named_parameters()
            if n in flowing and p.dim() >= 2 and p.detach().any() and n not in embeddings
        }
        if not before:
            return
        ctx.loss_of(ctx.run(model)).backward()
        optimizer.step()
        params = dict(model.named_parameters())
        ratios = sorted(
            float((params[n].detach() - w).norm() / w.norm()) for n, w in before.items()
        )
        median = ratios[len(ratios) // 2]
        high = self.settings["max_update_ratio"] * (
            10 if type(optimizer).__name__ in _ADAPTIVE else 1
        )
        if median > high:
            yield ctx.report(
                self,
                None,
                what=f"one {described} step changes the weights by {rounded(median)} of their norm (median), expected ~1e-3",
                hint="lower the learning rate",
            )
        elif median < self.settings["min_update_ratio"]:
            yield ctx.report(
                self,
                None,
                what=f"one {described} step changes the weights by {rounded(median)} of their norm (median), expected ~1e-3",
                hint="raise the learning rate",
            )

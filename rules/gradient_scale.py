from __future__ import annotations

import copy
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
    times their own scale (exploding; with a non-adaptive optimizer only, as
    Adam-like ones set the step's size themselves), and a fall with depth: the
    best-fed of the first quarter of the layers more than 1/`vanishing_ratio`
    below the best-fed of the last quarter (vanishing). Then takes one step of
    the user's optimizer on a copy and compares the median update/weight ratio
    of the weight matrices with the ~1e-3 rule of thumb (adaptive optimizers
    move each element by about lr, so they get a wider band). Biases, tokens
    and position embeddings, embeddings, and weights tiny by construction
    (initial RMS below 1/100 of 1/sqrt(fan_in): a 1e-6 class token, a layer
    scale, a zero layer) are left out. A verdict that a small initialisation
    can explain is confirmed on a copy trained for a few real optimizer steps;
    when every judged weight lies behind a zero-initialised layer (its first
    step moves nothing), the step is measured on that copy once their
    gradients flow.

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

        from nnlint.dynamic.context import Skip, module_of

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
        judged = _judged(base.model)
        relative = _relative(base.model, base.grads, judged)
        optimizer_name = _optimizer_name(ctx)
        found = self._scale(relative, optimizer_name)
        if found is not None:
            # A BatchNorm'd stem or a gradient behind a small init is extreme only at init.
            def extreme(t) -> bool:
                return self._scale(_relative(t.model, t.grads, judged), optimizer_name) is not None

            trained = ctx.trained(until=lambda t: not extreme(t))
            if trained.diverged or (trained.steps and extreme(trained)):
                at, what, hint = found
                yield ctx.report(self, at, what=what, hint=hint)
                return
        flowing = {n for n, g in base.grads.items() if g is not None and g.any()}
        blocked = {n for n in judged - flowing if base.grads.get(n) is not None}
        if judged & flowing or not blocked:
            yield from self._update_ratio(ctx, judged & flowing)
            return
        # Every judged weight lies behind a zero-initialised layer (adaLN-Zero, a zero
        # output conv): its first step moves nothing, so judge the step taken once
        # their gradients flow, from the trained copy.
        trained = ctx.trained(until=lambda t: bool(blocked & t.flowing))
        if trained.steps and not trained.diverged and blocked & trained.flowing:
            model = ctx.set_mode(copy.deepcopy(trained.model))
            yield from self._update_ratio(ctx, blocked & trained.flowing, model)

    def _scale(self, relative: dict, optimizer_name: str) -> tuple[str, str, str] | None:
        """(module, what, hint) of an exploding or vanishing gradient, or None."""
        from nnlint.dynamic.context import module_of, rounded

        if not relative:
            return None
        name, top = max(relative.items(), key=lambda kv: kv[1])
        # Adaptive optimizers divide each gradient by its own running scale: its size
        # does not set the step's, which the update-ratio check measures instead.
        if optimizer_name not in _ADAPTIVE and top > self.settings["max_relative_grad"]:
            return (
                module_of(name),
                f"gradient of `{name}` is {rounded(top)}x its weight's scale (exploding)",
                "normalize activations, scale down init or clip gradients",
            )
        # Vanishing is a fall with depth: the best-fed of the first quarter of the
        # layers against the best-fed of the last quarter, not one odd parameter
        # (attention keys at a small init) against the largest anywhere.
        names = list(relative)
        quarter = len(names) // 4
        if not quarter:
            return None
        low_name = max(names[:quarter], key=relative.get)
        high_name = max(names[-quarter:], key=relative.get)
        low, high = relative[low_name], relative[high_name]
        if low < high * self.settings["vanishing_ratio"]:
            return (
                module_of(low_name),
                f"relative gradient of `{low_name}` is {rounded(low)}, {rounded(high / low)}x below `{high_name}`'s (vanishing)",
                "use residual connections, normalization or non-saturating activations",
            )
        return None

    def _update_ratio(self, ctx, judged, model=None) -> Iterator[Finding]:
        from nnlint.dynamic.context import rounded

        model = ctx.fresh(train=True) if model is None else model
        median, floored, described, adaptive = self._median_step(ctx, model, judged)
        if median is None:
            return
        high = self.settings["max_update_ratio"] * (10 if adaptive else 1)
        low = self.settings["min_update_ratio"]
        if low <= median <= high:
            return
        # A weight drawn far below its fan-in scale moves by a large fraction of
        # itself at first: when that explains the ratio (measured against the fan-in
        # scale it is in range), judge the step again from the trained copy.
        if low <= floored <= high:
            verdicts: dict[int, bool] = {}  # steps -> in range

            def in_range(t) -> bool:
                if t.steps not in verdicts:
                    again, _, _, _ = self._median_step(ctx, copy.deepcopy(t.model), judged)
                    verdicts[t.steps] = again is not None and low <= again <= high
                return verdicts[t.steps]

            trained = ctx.trained(until=in_range)
            if trained.steps and not trained.diverged and in_range(trained):
                return
        yield ctx.report(
            self,
            None,
            what=f"one {described} step changes the weights by {rounded(median)} of their norm (median), expected ~1e-3",
            hint="lower the learning rate" if median > high else "raise the learning rate",
        )

    def _median_step(self, ctx, model, judged) -> tuple[float | None, float, str, bool]:
        """The median update/weight norm ratio of one optimizer step of `model`, the
        same with each weight's norm floored at its fan-in scale, the optimizer's
        description and whether it is adaptive."""
        optimizer, described, _ = ctx.optimizer_for(model)
        before = {
            n: p.detach().clone()
            for n, p in model.named_parameters()
            if n in judged and p.detach().any()
        }
        if not before:
            return None, 0.0, described, False
        model.zero_grad(set_to_none=True)
        ctx.loss_of(ctx.run(model)).backward()
        optimizer.step()
        params = dict(model.named_parameters())
        ratios, floored = [], []
        for n, w in before.items():
            step = float((params[n].detach() - w).norm())
            norm = float(w.norm())
            ratios.append(step / norm)
            floored.append(step / max(norm, math.sqrt(w.numel() / w[0].numel())))
        ratios.sort()
        floored.sort()
        middle = len(ratios) // 2
        adaptive = type(optimizer).__name__ in _ADAPTIVE
        return ratios[middle], floored[middle], described, adaptive


# Parameters whose size is set by design rather than by the fan-in rule: class and
# distillation tokens, position embeddings, mask tokens.
_TOKEN_NAMES = ("token", "pos_embed", "position", "cls", "pos_emb")
# Init RMS below this fraction of 1/sqrt(fan_in): tiny by construction (a 1e-6 class
# token, a layer scale of 1e-5, a head scaled by 1e-3); their ratios say nothing.
_TINY = 0.01


def _judged(model) -> set[str]:
    """The weight matrices whose gradient and update ratios are judged."""
    import torch

    embeddings = {
        f"{n}.weight" if n else "weight"
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Embedding)
    }
    judged = set()
    for name, p in model.named_parameters():
        leaf = name.rpartition(".")[2].lower()
        if not p.requires_grad or p.dim() < 2 or name in embeddings:
            continue
        if any(t in leaf for t in _TOKEN_NAMES):
            continue
        fan_in = p[0].numel()
        rms = float(p.detach().double().pow(2).mean().sqrt())
        if rms < _TINY / math.sqrt(fan_in):
            continue  # zero-initialised ones too
        judged.add(name)
    return judged


def _relative(model, grads, judged) -> dict[str, float]:
    """Gradient RMS over weight RMS of each judged parameter with a nonzero gradient,
    in the model's parameter order (first layers first)."""
    params = dict(model.named_parameters())
    relative = {}
    for name, grad in grads.items():
        if name not in judged or grad is None or not grad.any():
            continue
        w_rms = float(params[name].detach().double().pow(2).mean().sqrt())
        if w_rms > 0:
            relative[name] = float(grad.double().pow(2).mean().sqrt()) / w_rms
    return relative


def _optimizer_name(ctx) -> str:
    """The class name of the optimizer the checks train with (the user's, else the default)."""
    from nnlint.setup.resolve import training_optimizer

    spec, _ = training_optimizer(ctx.setup, ctx.settings)
    return spec.cls.__name__

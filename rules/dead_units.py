from __future__ import annotations

import math
from collections.abc import Iterator

from nnlint.core.finding import Finding
from nnlint.core.rule import DynamicRule, Option


class DeadUnits(DynamicRule):
    """Layers whose ReLU units are zero for every sample, or whose sigmoid/tanh saturate.

    ## What it does
    Runs at least `samples` samples (synthesized from the batch's statistics
    when it is smaller) and watches every ReLU-family activation, module or
    functional. A unit (a channel of a conv output, a feature otherwise) is
    dead when it is zero for every sample and position; a layer is flagged
    when more than `max_dead_fraction` of its units are dead. Sigmoid/tanh
    outputs within 1% of their bounds for more than `max_saturated_fraction`
    of the values are flagged as saturated. A few dead units in a wide layer
    are normal, and so are a few dead units of a narrow layer fed an input
    that barely varies across samples (a squeeze-excitation block after global
    pooling), where each unit is dead or alive by the sign of its random
    weights: a layer is flagged only when more of its units are dead than
    that coin toss would give (a binomial tail below 0.1%).

    ## Why is this bad?
    Dead units pass no gradient and never recover; saturated units pass almost
    none. Usually a bad init (large negative biases, weights too large) or
    unnormalized inputs.

    ## Example
    ```python
    self.fc = nn.Linear(64, 64)
    nn.init.constant_(self.fc.bias, -5.0)
    ```

    ## Use instead
    ```python
    self.fc = nn.Linear(64, 64)   # default init; normalize the inputs
    ```
    """

    code = "NN310"
    name = "dead-units"
    message = "{what} after `{layer}`; {hint}"
    options = {
        "samples": Option(64, "samples to watch the activations over"),
        "max_dead_fraction": Option(0.5, "largest fraction of dead ReLU units in a layer"),
        "max_saturated_fraction": Option(0.5, "largest fraction of saturated sigmoid/tanh values"),
    }

    valid = (
        """
import torch
model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
batch = (torch.randn(8, 16), torch.randint(0, 4, (8,)))
""",
    )
    invalid = (
        """
import torch
model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
torch.nn.init.constant_(model[0].bias, -10.0)
batch = (torch.randn(8, 16), torch.randint(0, 4, (8,)))
""",
        """
import torch
model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 4))
torch.nn.init.normal_(model[0].weight, std=10.0)
batch = (torch.randn(8, 16), torch.randint(0, 4, (8,)))
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        import torch

        from nnlint.dynamic.context import Skip, rounded

        model = ctx.fresh(train=True, dropout=False)
        args, kwargs = _widen(ctx, self.settings["samples"])
        watcher = _Watcher(model)
        with watcher, torch.no_grad():
            ctx.run(model, args, kwargs)
        if not watcher.stats:
            raise Skip("no ReLU, sigmoid or tanh activation")
        for (layer, kind), (dead, total, saturated, count) in watcher.stats.items():
            if (
                kind in ("relu", "relu6")
                and total >= 4
                and dead / total > self.settings["max_dead_fraction"]
                and _beyond_chance(dead, total)
            ):
                yield ctx.report(
                    self,
                    layer or None,
                    what=f"{dead} of {total} ReLU units are zero for all samples",
                    layer=layer or "input",
                    hint="check the init (negative biases, large weights) and input scale",
                )
            elif (
                kind in ("sigmoid", "tanh")
                and count
                and saturated / count > self.settings["max_saturated_fraction"]
            ):
                share = rounded(100 * saturated / count)
                yield ctx.report(
                    self,
                    layer or None,
                    what=f"{share}% of {kind} outputs are saturated",
                    layer=layer or "input",
                    hint="scale down the init or normalize the layer's input",
                )


# A unit fed an input that barely varies across samples (a squeeze-excitation
# block's globally pooled features) is dead or alive by the sign of its random
# weights, each with probability about 1/2. More dead units than that chance
# gives (a binomial tail below this) point at the init or the input scale.
_CHANCE = 1e-3


def _beyond_chance(dead: int, total: int) -> bool:
    """Whether `dead` of `total` units is unlikely if each died with probability 1/2."""
    tail = sum(math.comb(total, k) for k in range(dead, total + 1))
    return tail < _CHANCE * 2**total


def _widen(ctx, samples: int):
    """The batch, plus samples drawn from its per-feature statistics up to `samples`."""
    import torch

    from nnlint.dynamic import probes

    n = ctx.batch_size
    if n >= samples:
        return ctx.args, ctx.kwargs
    times = -(-samples // n)
    args, kwargs = probes.repeat((ctx.args, ctx.kwargs), n, times)
    gen = ctx.generator(7)
    key = probes.primary_key(args, kwargs)
    x = probes.get_input(args, kwargs, key)
    extra = x[n:]
    if x.is_floating_point():
        mean, std = x[:n].mean(0), x[:n].std(0) if n > 1 else x[:n].abs()
        extra = mean + std * torch.randn(extra.shape, generator=gen).to(x.device, x.dtype)
    else:
        extra = probes.random_like(extra, gen)
    return probes.with_input(args, kwargs, key, torch.cat([x[:n], extra]))


class _Watcher:
    """Counts dead and saturated units per (last layer run, activation kind)."""

    def __init__(self, model) -> None:
        self.model = model
        self.stats: dict = {}
        self.last = ""

    def __enter__(self):
        import torch
        from torch.overrides import TorchFunctionMode

        names = {m: n for n, m in self.model.named_modules()}
        leaves = [m for m in self.model.modules() if not list(m.children())]
        watcher = self

        def after(module, _inputs, _output):
            if not isinstance(
                module, torch.nn.ReLU | torch.nn.ReLU6 | torch.nn.Sigmoid | torch.nn.Tanh
            ):
                watcher.last = names[module]

        self.handles = [m.register_forward_hook(after) for m in leaves]
        self.modules = dict(self.model.named_modules())

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                kind = getattr(func, "__name__", "").rstrip("_")
                if kind in ("relu", "relu6", "sigmoid", "tanh") and isinstance(out, torch.Tensor):
                    watcher.count(kind, out)
                return out

        self.mode = Mode()
        self.mode.__enter__()
        return self

    def count(self, kind, out) -> None:
        if out.dim() < 2:
            return
        conv = out.dim() >= 3 and isinstance(self.modules.get(self.last), _conv())
        dim = 1 if conv else out.dim() - 1
        per_unit = out.detach().movedim(dim, -1).reshape(-1, out.shape[dim])
        key = (self.last, kind)
        dead, total, saturated, count = self.stats.get(key, (0, 0, 0, 0))
        if kind.startswith("relu"):
            dead += int((per_unit == 0).all(0).sum())
            total += per_unit.shape[1]
        else:
            low = -1.0 if kind == "tanh" else 0.0
            near = (per_unit - low).abs() < 0.01 * (1 - low)
            near |= (per_unit - 1.0).abs() < 0.01 * (1 - low)
            saturated += int(near.sum())
            count += per_unit.numel()
        self.stats[key] = (dead, total, saturated, count)

    def __exit__(self, *exc) -> None:
        self.mode.__exit__(*exc)
        for handle in self.handles:
            handle.remove()


def _conv():
    import torch

    return torch.nn.modules.conv._ConvNd

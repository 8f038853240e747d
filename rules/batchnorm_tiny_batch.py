from __future__ import annotations

from collections.abc import Iterator

from nnlint.core.finding import Finding
from nnlint.core.rule import DynamicRule, Option


class BatchnormTinyBatch(DynamicRule):
    """BatchNorm in training mode computes its statistics over a handful of values.

    ## What it does
    Runs one train-mode forward of the real batch (the training script's,
    `--data`'s or the one given to `nnlint.check`, at its own size; never a
    batch nnlint made up) and counts, for each BatchNorm layer, the values
    each channel's mean and variance are computed over: the batch size times
    the positions of a feature map. A layer is flagged when that count is below
    `min_values`: batch 1 into a `BatchNorm1d` after a `Linear`, batch 2 of
    1x1 maps after global pooling. BatchNorm layers the model keeps in eval
    mode itself (frozen statistics) are not judged.

    ## Why is this bad?
    A mean and variance over a few values are noise: every step normalises by
    different numbers, the running statistics used in eval mode drift away
    from them, and with one value per channel the output is all zeros (torch
    raises for a `BatchNorm1d` given a single sample). The model trains worse
    than without normalisation, and evaluates differently than it trains.

    ## Example
    ```python
    self.fc = nn.Sequential(nn.Linear(512, 256), nn.BatchNorm1d(256), nn.ReLU())
    loader = DataLoader(dataset, batch_size=2)
    ```

    ## Use instead
    ```python
    self.fc = nn.Sequential(nn.Linear(512, 256), nn.LayerNorm(256), nn.ReLU())
    # or a larger batch, or GroupNorm for conv features, or BatchNorm frozen in eval mode
    ```
    """

    code = "NN317"
    name = "batchnorm-tiny-batch"
    message = (
        "`{layer}`{more} normalizes over {values} per channel in training mode ({how}); {hint}"
    )
    needs_finite = False  # counts values, whatever they are
    options = {"min_values": Option(8, "fewest values per channel a batch statistic may use")}

    valid = (
        """
import torch
model = torch.nn.Sequential(
    torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(), torch.nn.Linear(16, 3)
)
batch = (torch.randn(32, 8), torch.randint(0, 3, (32,)))
""",
        """
import torch
model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                            torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 3))
batch = (torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2,)))  # 2 x 6x6 = 72 values per channel
""",
    )
    invalid = (
        """
import torch
model = torch.nn.Sequential(
    torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(), torch.nn.Linear(16, 3)
)
batch = (torch.randn(1, 8), torch.randint(0, 3, (1,)))
""",
        """
import torch
model = torch.nn.Sequential(
    torch.nn.Conv2d(3, 8, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.BatchNorm2d(8),
    torch.nn.Flatten(), torch.nn.Linear(8, 3),
)
batch = (torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2,)))
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        import torch

        from nnlint.dynamic.context import Skip

        if not ctx.setup.real_batch:
            raise Skip("the batch is made up by nnlint: only the training batch size is judged")
        norm = torch.nn.modules.batchnorm._BatchNorm
        # a model in train mode holding BatchNorm layers in eval mode keeps them frozen
        frozen = {
            name
            for name, m in ctx.model.named_modules()
            if ctx.model.training and isinstance(m, norm) and not m.training
        }
        model = ctx.fresh(train=True)
        names = {m: n for n, m in model.named_modules()}
        counts: dict[str, tuple[int, tuple]] = {}

        def count(module, inputs) -> None:
            x = inputs[0] if inputs else None
            name = names[module]
            if isinstance(x, torch.Tensor) and x.dim() >= 2 and name not in counts:
                counts[name] = (x.numel() // max(x.shape[1], 1), tuple(x.shape))

        watched = [m for m in model.modules() if isinstance(m, norm) and names[m] not in frozen]
        if not watched:
            raise Skip("no BatchNorm layer in training mode")
        for m in watched:
            m.train()  # also at batch 1, which the other checks run with BatchNorm in eval mode
        handles = [m.register_forward_pre_hook(count) for m in watched]
        try:
            with torch.no_grad():
                ctx.run(model)
        except Exception:
            if not counts:  # the forward failed before any BatchNorm: nothing to judge
                raise
        finally:
            for handle in handles:
                handle.remove()
        tiny = [(v, s, n) for n, (v, s) in counts.items() if v < self.settings["min_values"]]
        if not tiny:
            return
        values, shape, layer = min(tiny, key=lambda t: t[0])
        more = f" and {len(tiny) - 1} more BatchNorm layers" if len(tiny) > 1 else ""
        maps = "x".join(map(str, shape[2:]))
        how = f"batch {shape[0]} of {maps} maps" if maps else f"batch {shape[0]}"
        yield ctx.report(
            self,
            layer,
            layer=layer,
            more=more,
            values=f"{values} value{'s' if values != 1 else ''}",
            how=how,
            hint="use a larger batch, LayerNorm or GroupNorm, or keep the layer in eval mode",
        )

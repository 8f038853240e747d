from __future__ import annotations

from collections.abc import Iterator

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import DynamicRule, Option


class CausalLeak(DynamicRule):
    """A sequence model's output at position t depends on inputs after t.

    ## What it does
    Takes sample 0 and builds one probe batch whose rows randomize the inputs
    after a different split position (all positions up to `max_positions`,
    else a spread including the last ones), in chunks so memory stays bounded:
    every output at or before the split must stay the same. Repeats a few
    splits in train mode at batch size 1 with seeded dropout, which exposes
    leaks through batch statistics over time and masks applied only in eval
    mode. Reported when the task is causal (`--task causal-lm`, an HF causal
    LM, next-token targets) or, when no real targets say otherwise, when the
    model is causal at some positions only (a mask off by one).

    ## Why is this bad?
    A model that sees the token it must predict reaches a near-zero training
    loss and generates garbage: a missing or off-by-one causal mask, or a
    mask built for a shorter length.

    ## Example
    ```python
    scores = q @ k.transpose(-2, -1)          # no mask
    ```

    ## Use instead
    ```python
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    scores = (q @ k.transpose(-2, -1)).masked_fill(~mask, float("-inf"))
    ```
    """

    code = "NN304"
    name = "causal-leak"
    message = "position {pos} of {length} sees inputs after it{mode}; {hint}"
    severity = Severity.ERROR
    options = {
        "max_positions": Option(64, "split positions probed"),
        "chunk": Option(16, "rows per probe forward"),
    }

    valid = (
        """
import torch

class Causal(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(20, 16)
        self.head = torch.nn.Linear(16, 20)

    def forward(self, x):
        h = self.emb(x).cumsum(1) / torch.arange(1, x.shape[1] + 1).view(1, -1, 1)
        return self.head(h)

model = Causal()
tokens = torch.randint(0, 20, (4, 17))
batch = (tokens[:, :-1], tokens[:, 1:])
""",
    )
    invalid = (
        """
import torch

class Leaky(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(20, 16)
        self.head = torch.nn.Linear(16, 20)

    def forward(self, x):
        h = self.emb(x)
        return self.head(h + h.roll(-1, dims=1))

model = Leaky()
tokens = torch.randint(0, 20, (4, 17))
batch = (tokens[:, :-1], tokens[:, 1:])
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        import torch

        from nnlint.dynamic import probes
        from nnlint.dynamic.context import Skip

        key = probes.primary_key(ctx.args, ctx.kwargs)
        if key is None:
            raise Skip("no tensor input")
        x = probes.get_input(ctx.args, ctx.kwargs, key)
        length = x.shape[1] if x.dim() >= 2 else 0
        if length < 2 or x.dim() > 3 or (x.dim() == 3 and not x.is_floating_point()):
            raise Skip("no sequence input")
        args, kwargs = probes.take((ctx.args, ctx.kwargs), ctx.batch_size, slice(0, 1))
        model = ctx.fresh(train=False)
        with torch.no_grad():
            out = probes.main_output(ctx.run(model, args, kwargs))
        if out is None or out.dim() < 2 or out.shape[1] != length:
            raise Skip("the output is not one step per input position")
        splits = _splits(length, self.settings["max_positions"])
        gen = ctx.generator()
        leaks = self._probe(ctx, model, args, kwargs, key, splits, gen)
        mode = ""
        if not leaks:
            leaks = self._train_probe(ctx, args, kwargs, key, splits, gen)
            mode = " in train mode at batch size 1"
        causal_task = ctx.task == "causal-lm"
        # A model that sees the future at some positions only is a broken mask, unless
        # the real targets are per-position labels that are not next tokens (a tagger):
        # a bidirectional model may well leave the last positions alone.
        labelled = ctx.loss is not None and not ctx.loss.synthesized and ctx.loss.target is not None
        if leaks and (causal_task or (len(leaks) < len(splits) and not labelled)):
            hint = "mask attention to positions <= t (check the mask's size and offset)"
            yield ctx.report(self, None, pos=min(leaks), length=length, mode=mode, hint=hint)

    def _probe(self, ctx, model, args, kwargs, key, splits, gen) -> list[int]:
        import torch

        from nnlint.dynamic import probes

        x = probes.get_input(args, kwargs, key)
        leaks: list[int] = []
        chunk = max(2, self.settings["chunk"])
        for start in range(0, len(splits), chunk - 1):
            part = splits[start : start + chunk - 1]
            rows = [x[0]]
            for p in part:
                row = x[0].clone()
                row[p + 1 :] = probes.random_like(row[p + 1 :], gen)
                rows.append(row)
            probe_args, probe_kwargs = probes.repeat((args, kwargs), 1, len(rows))
            probe_args, probe_kwargs = probes.with_input(
                probe_args, probe_kwargs, key, torch.stack(rows)
            )
            with torch.no_grad():
                y = probes.main_output(ctx.run(model, probe_args, probe_kwargs))
            leaks += [
                p
                for i, p in enumerate(part, 1)
                if probes.differs(y[i, : p + 1], y[0, : p + 1], 1e-4)
            ]
        return leaks

    def _train_probe(self, ctx, args, kwargs, key, splits, gen) -> list[int]:
        import torch

        from nnlint.dynamic import probes
        from nnlint.dynamic.context import reseed

        model = ctx.fresh(train=True)
        x = probes.get_input(args, kwargs, key)
        leaks = []
        for p in sorted({splits[0], splits[len(splits) // 2], splits[-1]}):
            row = x.clone()
            row[0, p + 1 :] = probes.random_like(row[0, p + 1 :], gen)
            outs = []
            for inp in (x, row):
                reseed()
                with torch.no_grad():
                    try:
                        outs.append(
                            probes.main_output(
                                ctx.run(model, *probes.with_input(args, kwargs, key, inp))
                            )
                        )
                    except (RuntimeError, ValueError):
                        return []
            if probes.differs(outs[0][0, : p + 1], outs[1][0, : p + 1], 1e-4):
                leaks.append(p)
        return leaks


def _splits(length: int, limit: int) -> list[int]:
    """Split positions 0..length-2: all of them, or a spread that keeps the last ones."""
    every = list(range(length - 1))
    if len(every) <= limit:
        return every
    tail = every[-8:]
    step = (len(every) - 8) / (limit - 8)
    return sorted({every[int(i * step)] for i in range(limit - 8)} | set(tail))

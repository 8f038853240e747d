from __future__ import annotations

from collections.abc import Iterator

from nnlint.core.finding import Finding
from nnlint.core.rule import DynamicRule


class ConstantOutput(DynamicRule):
    """Every sample of the batch gets the same output, although their inputs differ.

    ## What it does
    Runs the real batch in eval mode and compares the outputs of its samples.
    When they are all the same (to float rounding) while the samples' inputs
    differ, it looks again on a copy trained for a few real optimizer steps
    (train mode, dropout off), since a zero-initialised output layer gives one
    output to everyone only at init. A model whose output ignores its input
    entirely is `input-ignored`'s finding (one bug, one finding); this one is
    about outputs that depend on the input, just not on what differs between
    the real samples: a classifier reading the position of a start token that
    every sequence shares, a causal mask that lets a class token at position 0
    see only itself, features pooled from a region that is blank in every image.

    ## Why is this bad?
    The loss can only fit the average target: the model learns the label
    prior and nothing else, however long it trains.

    ## Example
    ```python
    h, _ = self.lstm(self.embed(tokens))   # every sequence starts with <bos>
    return self.head(h[:, 0])              # the state after <bos>: the same for all
    ```

    ## Use instead
    ```python
    return self.head(h[:, -1])             # the state after the whole sequence
    ```
    """

    code = "NN319"
    name = "constant-output"
    message = (
        "all {n} samples of the batch get the same output although their inputs differ; {hint}"
    )
    default_enabled = False  # mostly other rules' findings; on for a closer look

    valid = (
        """
import torch
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
batch = (torch.randn(16, 8), torch.randint(0, 3, (16,)))
""",
    )
    invalid = (
        """
import torch

class FirstToken(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(20, 16)
        self.rnn = torch.nn.GRU(16, 16, batch_first=True)
        self.head = torch.nn.Linear(16, 3)

    def forward(self, tokens):
        h, _ = self.rnn(self.embed(tokens))
        return self.head(h[:, 0])

model = FirstToken()
tokens = torch.randint(2, 20, (16, 12))
tokens[:, 0] = 1  # <bos>
batch = (tokens, torch.randint(0, 3, (16,)))
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        import torch

        from nnlint.dynamic import probes
        from nnlint.dynamic.context import Skip

        n = ctx.batch_size
        key = probes.primary_key(ctx.args, ctx.kwargs)
        x = probes.get_input(ctx.args, ctx.kwargs, key) if key is not None else None
        if n < 2 or not isinstance(x, torch.Tensor) or not x.dim() or x.shape[0] != n:
            raise Skip("needs a batch of two or more samples")
        if all(not probes.differs(x[i].float(), x[0].float()) for i in range(1, n)):
            raise Skip("the samples' inputs are identical")
        model = ctx.fresh(train=False)
        if not _constant(ctx, model, n):
            return
        if {"input-ignored", "NN305"} & ctx.selected and _ignores(ctx, model, key, x):
            return  # input-ignored reports it
        if ctx.loss is not None:
            verdicts: dict[int, bool] = {}

            def still(t) -> bool:
                if t.steps not in verdicts:
                    verdicts[t.steps] = _constant(ctx, ctx.set_mode(t.model, dropout=False), n)
                return verdicts[t.steps]

            trained = ctx.trained(until=lambda t: not still(t))
            if trained.steps and not trained.diverged and not still(trained):
                return  # a zero-initialised layer, opened by training
        yield ctx.report(
            self,
            None,
            n=n,
            hint="check what the head reads (a position, a pooled region, a token every sample shares)",
        )


def _constant(ctx, model, n: int) -> bool:
    import torch

    from nnlint.dynamic import probes

    with torch.no_grad():
        out = probes.main_output(ctx.run(model, same_rng=True))
    if not isinstance(out, torch.Tensor) or not out.dim() or out.shape[0] != n:
        return False
    return all(not probes.differs(out[i], out[0]) for i in range(1, n))


def _ignores(ctx, model, key, x) -> bool:
    """Whether sample 0's output stays the same when its input is replaced (input-ignored's case)."""
    import torch

    from nnlint.dynamic import probes

    changed = probes.perturb_sample(x, ctx.generator())
    with torch.no_grad():
        base = probes.main_output(ctx.run(model, same_rng=True))
        out = probes.main_output(
            ctx.run(model, *probes.with_input(ctx.args, ctx.kwargs, key, changed), same_rng=True)
        )
    return not probes.differs(out[0], base[0])

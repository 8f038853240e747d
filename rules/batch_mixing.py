from __future__ import annotations

from collections.abc import Iterator

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import DynamicRule


class BatchMixing(DynamicRule):
    """One sample's output depends on the other samples of the batch.

    ## What it does
    In eval mode, changes only sample 0 of the batch and runs the same batch
    again: every other sample's output must stay the same. Then backpropagates
    random weights on sample 0's output: the other samples' inputs must get
    no gradient (for token ids, at the output of the embeddings that read
    them). Names the first module whose output mixes samples.
    Train-mode BatchNorm mixes by design; it runs in eval mode here, so it is
    not flagged. Behind a zero-initialised layer (a residual branch's last
    BatchNorm gamma at zero) the forward is looked at again after a few real
    optimizer steps of a copy.

    ## Why is this bad?
    A `view` or `reshape` where a `permute` was meant, attention over the
    batch dimension (`batch_first` left False), or a reduction over dim 0
    lets samples see each other: the model trains on information it will
    not have at test time, silently.

    ## Example
    ```python
    def forward(self, x):          # x: (N, C, L)
        return self.fc(x.view(-1, x.shape[0]))
    ```

    ## Use instead
    ```python
    def forward(self, x):
        return self.fc(x.permute(0, 2, 1))
    ```
    """

    code = "NN303"
    name = "batch-mixing"
    message = "output of sample {sample} changes when only sample 0 changes (relative {diff}){where}; keep samples independent along the batch dimension"
    severity = Severity.ERROR

    valid = (
        """
import torch
model = torch.nn.Sequential(torch.nn.Conv1d(3, 8, 3), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
                            torch.nn.Flatten(), torch.nn.Linear(8 * 14, 4))
batch = (torch.randn(6, 3, 16), torch.randint(0, 4, (6,)))
""",
    )
    invalid = (
        """
import torch

class Mixer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(6, 6)

    def forward(self, x):
        return self.fc(x.t()).t()

model = Mixer()
batch = (torch.randn(6, 4), torch.randint(0, 4, (6,)))
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        from nnlint.dynamic import probes
        from nnlint.dynamic.context import Skip
        from nnlint.dynamic.training import blocked_at_init, found_after_steps

        args, kwargs, n = ctx.args, ctx.kwargs, ctx.batch_size
        if not probes.input_names(args, kwargs):
            raise Skip("no tensor input")
        if n == 1:
            args, kwargs, n = (*probes.repeat((args, kwargs), 1, 2), 2)
        gen = ctx.generator()
        changed_args, changed_kwargs = args, kwargs
        for key, _ in probes.input_names(args, kwargs):
            x = probes.get_input(changed_args, changed_kwargs, key)
            if x.dim() and x.shape[0] == n:
                changed_args, changed_kwargs = probes.with_input(
                    changed_args, changed_kwargs, key, probes.perturb_sample(x, gen)
                )
        model = ctx.fresh(train=False)
        changed = (changed_args, changed_kwargs)
        found = self._forward(ctx, model, (args, kwargs), changed, n)
        if found is None:
            found = next(iter(self._backward(ctx, model, args, kwargs, n, gen)), None)
        if found is None and blocked_at_init(ctx):
            # A zero-initialised layer (a residual branch's last BatchNorm gamma) hides
            # what lies behind it at init; look again after a few real steps.
            same = (args, kwargs)
            found = found_after_steps(
                ctx,
                lambda m: (
                    self._forward(ctx, m, same, changed, n)
                    or next(iter(self._backward(ctx, m, args, kwargs, n, gen)), None)
                ),
            )
        if found is not None:
            yield found

    def _forward(self, ctx, model, same, changed, n):
        """The finding when a sample's output moves with sample 0's input, else None."""
        import torch

        from nnlint.dynamic import probes
        from nnlint.dynamic.context import Skip, rounded

        with torch.no_grad():
            out = ctx.run(model, *same, same_rng=True)
            out2 = ctx.run(model, *changed, same_rng=True)
        y, y2 = probes.main_output(out), probes.main_output(out2)
        if y is None or not y.dim() or y.shape[0] != n:
            raise Skip("the output has no batch dimension")
        for sample in range(1, n):
            diff = probes.differs(y[sample], y2[sample])
            if diff:
                # Only now the two forwards again, recorded (the same random numbers),
                # to name the first module where the samples meet.
                with torch.no_grad():
                    _, before = probes.record(model, lambda: ctx.run(model, *same, same_rng=True))
                    _, after = probes.record(model, lambda: ctx.run(model, *changed, same_rng=True))
                name = probes.first_difference(before, after, slice(1, None))
                where = f", first at `{name}`" if name else ""
                return ctx.report(self, name, sample=sample, diff=rounded(diff), where=where)
        return None

    def _backward(self, ctx, model, args, kwargs, n, gen):
        import torch

        from nnlint.dynamic import probes
        from nnlint.dynamic.context import rounded

        key = probes.primary_key(args, kwargs)
        x = probes.get_input(args, kwargs, key)
        leaves: list = []  # where the gradient is taken: the input, or its embeddings
        handles = []
        if x.is_floating_point():
            x = x.detach().clone().requires_grad_(True)
            args, kwargs = probes.with_input(args, kwargs, key, x)
            leaves.append(x)
        else:
            # Token ids: at what the embeddings make of a batch of them, (n, ...) ids in.
            def leaf(_module, inputs, out):
                ids = inputs[0] if inputs else None
                batched = isinstance(ids, torch.Tensor) and ids.dim() >= 2 and ids.shape[0] == n
                if batched and isinstance(out, torch.Tensor) and out.is_floating_point():
                    out = out.detach().requires_grad_(True)
                    leaves.append(out)
                    return out
                return None

            embeddings = [m for m in model.modules() if isinstance(m, torch.nn.Embedding)]
            handles = [m.register_forward_hook(leaf) for m in embeddings]
        try:
            y = probes.main_output(ctx.run(model, args, kwargs, same_rng=True))
        finally:
            for handle in handles:
                handle.remove()
        if y is None or not y.requires_grad or not leaves:
            return
        weights = torch.randn(y[0].shape, generator=gen).to(y.device, y.dtype)
        grads = torch.autograd.grad((weights * y[0]).sum(), leaves, allow_unused=True)
        grads = [g for g in grads if g is not None]
        if not grads:
            return
        grad = max(grads, key=lambda g: float(g[1:].abs().max()) if len(g) > 1 else 0.0)
        others = grad[1:].abs()
        if others.numel() and others.max() > 0:
            sample = int(others.reshape(n - 1, -1).amax(1).argmax()) + 1
            scale = float(grad[0].abs().max()) or 1.0
            yield ctx.report(
                self,
                None,
                sample=0,
                diff=rounded(float(others.max()) / scale),
                where=f" (input gradient reaches sample {sample})",
            )

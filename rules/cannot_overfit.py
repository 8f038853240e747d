from __future__ import annotations

import math
from collections.abc import Iterator

from nnlint.core.finding import Finding
from nnlint.core.rule import DynamicRule, Option


class CannotOverfit(DynamicRule):
    """The model cannot drive the loss on a few samples well below its initial value.

    ## What it does
    Trains a copy of the model on at most `samples` samples of the batch with
    the user's optimizer (Adam, lr 3e-3, when there is none), dropout off, for
    at most `max_steps` steps. It passes as soon as the loss is below
    `target` of the way from the initial loss to the loss's floor (0, or the
    entropy of smoothed labels), and fails early when the loss stalls, or at
    the cap when its recent pace would not get there in twice as many steps.

    It also looks ahead: every 5 steps, once the loss has come a tenth of
    the way, it moves the weights on along their last 5 steps' direction, as
    far as they would go at that pace in three, then eight times the steps
    taken so far (never past the cap), and runs one forward at each, the
    second only if the first lowered the loss; if the loss at one is below
    the target, it passes. With a small
    learning rate the loss falls in a straight line, and looking ahead
    answers in a third of the steps or fewer. It never passes a model that cannot get there: the loss is measured
    at real weights, so a loss with a floor above the target (a squashed
    output, a weight decay that holds the weights back) fails as before.
    Models with over 32 MiB of parameters do not look ahead: it keeps two
    more copies of the weights. A loss nnlint had to guess (no target, no
    task, no loss from the script, `--loss` or `--task`) is not judged.

    ## Why is this bad?
    Overfitting a handful of samples is the easiest task a network gets. If
    it cannot, something between input, model, loss and optimizer is broken:
    a detached output, a squashed output fed to a loss that expects logits, a
    learning rate far too small, frozen weights.

    ## Example
    ```python
    def forward(self, x):
        return torch.sigmoid(self.fc(x))    # fed to cross_entropy
    ```

    ## Use instead
    ```python
    def forward(self, x):
        return self.fc(x)                   # logits
    ```
    """

    code = "NN309"
    name = "cannot-overfit"
    alongside = True  # the longest check: may run in a worker thread beside the others
    message = "loss on {n} samples went from {start} to {end} in {steps} {optimizer} steps ({why}), expected below {goal}; {hint}"
    options = {
        "samples": Option(8, "samples to overfit"),
        "max_steps": Option(300, "step cap"),
        "target": Option(0.5, "fraction of the initial loss (above its floor) to reach"),
        "patience": Option(60, "steps without a 1% improvement before the loss counts as stalled"),
    }

    valid = (
        """
import torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
batch = (torch.randn(8, 16), torch.randint(0, 4, (8,)))
""",
    )
    invalid = (
        """
import torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4), torch.nn.Sigmoid())
batch = (torch.randn(8, 16), torch.randint(0, 4, (8,)))
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        from nnlint.dynamic import probes
        from nnlint.dynamic.context import Skip, guessed_loss

        if ctx.loss is None:
            raise Skip("no loss")
        if ctx.loss.guessed:
            raise Skip(guessed_loss(ctx.loss))
        k = min(ctx.batch_size, self.settings["samples"])
        index = slice(0, k)
        args, kwargs = probes.take((ctx.args, ctx.kwargs), ctx.batch_size, index)
        model = ctx.fresh(train=True, dropout=False)
        optimizer, described, _ = ctx.optimizer_for(model)
        floor = _floor(ctx.loss, model, ctx)
        start = best = None
        history: list[float] = []
        since = 0
        ahead = _Lookahead(model, self.settings["max_steps"])
        for step in range(1, self.settings["max_steps"] + 1):
            ctx.tick()
            optimizer.zero_grad()
            loss = ctx.loss_of(ctx.run(model, args, kwargs), index=index)
            value = float(loss.detach())
            history.append(value)
            if not math.isfinite(value):
                yield self._fail(
                    ctx,
                    k,
                    start,
                    value,
                    step,
                    described,
                    "diverged",
                    floor,
                    "lower the learning rate",
                )
                return
            if start is None:
                start = best = value
                goal = floor + self.settings["target"] * (start - floor)
                # the report draws this run's curve instead of training another copy
                ctx.measured["overfit"] = {"losses": history, "target": goal, "samples": k}
            if value <= goal:
                return
            if value < best - 0.01 * (start - floor):
                best, since = value, 0
            else:
                since += 1
            if since >= self.settings["patience"]:
                yield self._fail(
                    ctx,
                    k,
                    start,
                    value,
                    step,
                    described,
                    "stalled",
                    goal,
                    "check that the output is raw logits, nothing is detached and the learning rate is not tiny",
                )
                return
            if not loss.requires_grad:
                yield self._fail(
                    ctx,
                    k,
                    start,
                    value,
                    step,
                    described,
                    "no gradient reaches the loss",
                    goal,
                    "something in forward detaches the output",
                )
                return
            loss.backward()
            optimizer.step()
            if ahead.due(step, progress=(start - best) / (start - goal) if start > goal else 0.0):
                value = ahead.loss(
                    step,
                    lambda: ctx.loss_of(ctx.run(model, args, kwargs), index=index),
                    goal,
                    last=value,
                )
                if value <= goal:
                    return
        window = history[-100:]
        rate = max(0.0, (window[0] - window[-1]) / len(window))
        if best - goal > rate * 2 * self.settings["max_steps"]:
            yield self._fail(
                ctx,
                k,
                start,
                best,
                self.settings["max_steps"],
                described,
                "too slow to get there in twice as many steps",
                goal,
                "raise the learning rate or check the model's output",
            )

    def _fail(self, ctx, n, start, end, steps, described, why, goal, hint):
        from nnlint.dynamic.context import rounded

        return ctx.report(
            self,
            None,
            n=n,
            start=rounded(start if start is not None else end),
            end=rounded(end),
            steps=steps,
            optimizer=described,
            why=why,
            goal=rounded(goal),
            hint=hint,
        )


class _Lookahead:
    """The least loss where the weights would be if they kept their pace over the
    last `EVERY` steps for each of `AHEAD` times the steps taken so far (never past
    `cap`)."""

    EVERY = 5
    AHEAD = (3, 8)  # near first, farther only while the loss falls (a valley curves)
    MAX_BYTES = 32 * 2**20  # two copies of the weights are kept
    FROM = 0.1  # of the way to the target before looking ahead

    def __init__(self, model, cap: int) -> None:
        self.cap = cap
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.buffers = list(model.buffers())
        size = sum(p.numel() * p.element_size() for p in self.params)
        self.enabled = 0 < size <= self.MAX_BYTES
        self.last: list | None = None  # the weights EVERY steps ago

    def _snapshot(self) -> list:
        return [p.detach().clone() for p in self.params]

    def due(self, step: int, progress: float) -> bool:
        """Called after each optimizer step: whether to look ahead now."""
        if not self.enabled or step % self.EVERY:
            return False
        if self.last is None or progress < self.FROM or step >= self.cap:
            self.last = self._snapshot()
            return False
        return True

    def loss(self, step: int, forward, goal: float = -math.inf, last: float = math.inf) -> float:
        """The least loss (one forward each, no gradient) at the extrapolated weights,
        nearest first, stopping at the first at or below `goal` and at the first no
        lower than the one before it (`last`, the loss at this step, for the first):
        the valley curves, so looking farther is wasted. The weights and buffers
        are restored exactly afterwards."""
        import torch

        now = self._snapshot()
        buffers = [b.detach().clone() for b in self.buffers]
        scales = sorted({min(k * step, self.cap - step) / self.EVERY for k in self.AHEAD})
        value = math.inf
        try:
            with torch.no_grad():
                for scale in scales:
                    for p, current, before in zip(self.params, now, self.last, strict=True):
                        p.copy_(current).add_(current - before, alpha=scale)
                    for b, saved in zip(self.buffers, buffers, strict=True):
                        b.copy_(saved)
                    found = float(forward().detach())
                    if not math.isfinite(found) or found >= last:
                        break
                    value = last = found
                    if value <= goal:
                        break
        finally:
            with torch.no_grad():
                for p, current in zip(self.params, now, strict=True):
                    p.copy_(current)
                for b, saved in zip(self.buffers, buffers, strict=True):
                    b.copy_(saved)
            self.last = now
        return value


def _floor(loss, model, ctx) -> float:
    """The smallest loss reachable: 0, or the entropy of label-smoothed targets."""
    smoothing = loss.kwargs.get("label_smoothing", 0.0) if loss.name == "cross_entropy" else 0.0
    if not smoothing:
        return 0.0
    from nnlint.dynamic import probes

    probs = probes.class_probabilities(loss, ctx.passes().output)
    classes = probs.shape[-1]
    high, low = 1 - smoothing + smoothing / classes, smoothing / classes
    return -(high * math.log(high) + (classes - 1) * low * math.log(low))

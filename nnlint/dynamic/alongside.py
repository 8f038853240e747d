"""The one long check (cannot-overfit trains a copy for up to a few hundred steps)
runs in a worker thread beside the others where that cannot change any result:
on the CPU, for small models, when the model's forward draws nothing from the
global RNG. Torch releases the GIL inside its kernels and autograd, so on two
cores the short checks then cost little wall time.

Not for the smallest models: where a forward and backward take a few
milliseconds, the ops are so short that the two threads mostly hand the GIL to
each other. On the benchmark's tiny transformer that cost 15-30% more CPU for
no wall time saved; serially, the whole phase takes a fraction of a second.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import torch

from nnlint.core.config import WALL_FACTOR
from nnlint.core.finding import Finding
from nnlint.dynamic.context import DynamicContext, enter_worker
from nnlint.dynamic.run import crashed, run_one, skipped

# The most parameter and buffer bytes of a model whose long check may run beside the others.
ALONGSIDE_MAX_BYTES = 64 * 2**20
# The least CPU seconds of the shared forward, loss and backward for it to be worth it.
ALONGSIDE_MIN_SECONDS = 0.02


class Alongside(threading.Thread):
    """One check running in a worker thread on its own view of the context."""

    def __init__(self, view: DynamicContext, rule: Any, verbose: bool, debug: bool) -> None:
        super().__init__(name=f"nnlint-{rule.name}", daemon=True)
        self.view, self.rule, self.verbose, self.debug = view, rule, verbose, debug
        self.findings: list[Finding] | None = None
        self.seconds = 0.0
        self.started = time.perf_counter()
        self.limit = time.monotonic() + view.budget * WALL_FACTOR + 1.0

    def run(self) -> None:
        enter_worker()
        try:
            self.findings = run_one(self.view, self.rule, self.verbose, self.debug)
        except BaseException as exc:  # noqa: BLE001 - nothing may escape a worker thread
            self.findings = [crashed(self.view, self.rule, exc, self.debug)]
        finally:
            self.seconds = time.perf_counter() - self.started

    def result(self) -> list[Finding]:
        """The check's findings, once it is done or past its budget (then left to stop at its next tick)."""
        self.join(max(0.0, self.limit - time.monotonic()))
        if self.is_alive() or self.findings is None:
            self.seconds = time.perf_counter() - self.started
            return [skipped(self.view, self.rule, f"ran past its {self.view.budget:g} s budget")]
        return self.findings


def start_alongside(
    ctx: DynamicContext, rules: list, verbose: bool, debug: bool
) -> dict[int, Alongside]:
    """Start the `alongside` rules in worker threads where `alongside_view` allows; index -> worker."""
    wanted = [i for i, rule in enumerate(rules) if getattr(rule, "alongside", False)]
    if not wanted or len(wanted) == len(rules):
        return {}
    view = alongside_view(ctx)
    if view is None:
        return {}
    ctx.passes()  # computed already (`passes_failure`): the RNG they draw from is not a worker's
    views = [view, *(ctx.alongside() for _ in wanted[1:])]
    workers = {
        i: Alongside(v, rules[i], verbose, debug) for i, v in zip(wanted, views, strict=True)
    }
    for worker in workers.values():
        worker.start()
    return workers


def alongside_view(ctx: DynamicContext) -> DynamicContext | None:
    """A view for a long check to run beside the others, where that changes no result,
    adds little memory and saves time: two cores, the CPU, a small model whose shared
    forward and backward take at least `ALONGSIDE_MIN_SECONDS`, and a train-mode forward
    (dropout off, as the long check trains) that draws nothing from the global RNG.
    The copy that forward ran on is kept in the view for the check."""
    if ctx.device != "cpu" or _cores() < 2:
        return None
    if any(type(m).__name__ == "OptimizedModule" for m in ctx.model.modules()):
        return None  # torch.compile'd code is not known to be safe to run in two threads
    tensors = [*ctx.model.parameters(), *ctx.model.buffers()]
    if any(t.device.type != "cpu" for t in tensors):
        return None
    if sum(t.numel() * t.element_size() for t in tensors) > ALONGSIDE_MAX_BYTES:
        return None
    if ctx.passes().seconds < ALONGSIDE_MIN_SECONDS:
        return None  # ops this short: two threads cost more CPU than they save in wall time
    view = ctx.alongside()
    try:
        model = view.fresh(train=True, dropout=False)
        before = torch.default_generator.get_state()
        with torch.no_grad():
            view.run(model)
        drew = not torch.equal(before, torch.default_generator.get_state())
    except Exception:
        return None  # the check itself will meet and report the error
    finally:
        view._copies.take_back()
    return None if drew else view


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1

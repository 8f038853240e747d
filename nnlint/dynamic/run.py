"""Running one dynamic check: its budget, and what a skip, a timeout or a crash becomes."""

from __future__ import annotations

import os
import signal
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from nnlint.core.config import WALL_FACTOR
from nnlint.core.diagnostics import CheckSkipped, InternalError, one_line
from nnlint.core.finding import Finding, Severity
from nnlint.dynamic.context import CheckTimeout, DynamicContext, Skip
from nnlint.setup.sites import is_user_file, raised_in, short_path


@contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    """Interrupt a check stuck inside one long call (main thread only; elsewhere `tick` does).

    `tick` bounds the check's CPU time; this wall-clock backstop stops one that
    waits without working, and allows `WALL_FACTOR` times the budget so that a
    busy machine does not change the verdict."""
    if (
        threading.current_thread() is not threading.main_thread()
        or not hasattr(signal, "setitimer")
        or signal.getitimer(signal.ITIMER_REAL)[0] > 0
    ):
        # Another thread, or a caller's pending timer (pytest-timeout's, say): leave it be.
        yield
        return

    def expire(_signum: int, _frame: Any) -> None:
        raise CheckTimeout()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_one(ctx: DynamicContext, rule: Any, verbose: bool, debug: bool) -> list[Finding]:
    ctx.begin(rule)
    try:
        with _alarm(ctx.budget * WALL_FACTOR + 1.0):
            return list(rule.check(ctx))
    except Skip as skip:
        return [skipped(ctx, rule, str(skip))] if verbose else []
    except CheckTimeout:
        return [skipped(ctx, rule, f"ran past its {ctx.budget:g} s budget")]
    except Exception as exc:
        return [raised(ctx, rule, exc, debug)]


def raised(ctx: DynamicContext, rule: Any, exc: BaseException, debug: bool) -> Finding:
    """What an exception in a check becomes: the user's when their code raised it
    (the model's forward or their loss, on the inputs the check built), reported
    at their line as NN007; nnlint's own (NN001) only when it never reached them."""
    site = raised_in(exc)
    if site is None:
        return crashed(ctx, rule, exc, debug)
    if is_user_file(site.path):
        path, line, where = site.path, site.line, "here"
    else:
        path, line, where = ctx.path, ctx.line, f"at {short_path(site.path)}:{site.line}"
    return CheckSkipped.make(
        path,
        line,
        1,
        rule=f"{rule.code} ({rule.name})",
        reason=f"the model's code raised {one_line(exc)} {where}, on the inputs the check builds from the batch",
        severity=Severity.INFO,
        note=traceback.format_exc() if debug else None,
    )


def crashed(ctx: DynamicContext, rule: Any, exc: BaseException, debug: bool) -> Finding:
    return InternalError.make(
        ctx.path,
        ctx.line,
        1,
        rule=f"{rule.code} ({rule.name})",
        error=f"{type(exc).__name__}: {exc}",
        note=traceback.format_exc() if debug else None,
    )


def skipped(ctx: DynamicContext, rule: Any, reason: str) -> Finding:
    return CheckSkipped.make(
        ctx.path,
        ctx.line,
        1,
        rule=f"{rule.code} ({rule.name})",
        reason=reason,
        severity=Severity.INFO,
    )


def passes_failure(ctx: DynamicContext) -> Finding | None:
    """One NN007 for all checks when the shared forward and loss on the batch fail.

    The error is the user's (their forward, their batch, their labels), so it is
    reported once, as theirs, at their line, instead of as a crash of every check that needs it.
    """
    path, line = ctx.path, ctx.line
    try:
        with _alarm(ctx.budget * WALL_FACTOR + 1.0):
            ctx.passes()
    except CheckTimeout:
        reason = f"the forward and backward on the batch ran past the {ctx.budget:g} s budget"
    except Exception as exc:
        reason = f"the forward and loss on the batch raised {one_line(exc)}"
        site = raised_in(exc)
        if site is not None and is_user_file(site.path):
            path, line = site.path, site.line
    else:
        return None
    return CheckSkipped.make(
        path, line, 1, rule="dynamic checks", reason=reason, severity=Severity.INFO
    )


def nonfinite_cause(ctx: DynamicContext) -> str | None:
    """What made NaN or Inf in the shared forward, in words; None when it stayed finite.
    Checks judging gradients, losses or outputs are skipped then: their verdicts
    would be consequences of that one bug (reported by non-finite)."""
    import math

    import torch

    from nnlint.dynamic import probes

    for tensor in probes.tensors((ctx.args, ctx.kwargs)):
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            return "the input batch holds NaN or Inf"
    base = ctx.passes()
    if base.finite:
        return None
    if base.nonfinite_op is not None:
        op = base.nonfinite_op
        return f"`{op.op}` at {os.path.basename(op.path)}:{op.line} makes NaN or Inf"
    if base.first_nonfinite is not None:
        name = base.first_nonfinite[0]
        return f"the output of `{name}` holds NaN or Inf" if name else "the output holds NaN or Inf"
    if base.loss is not None and not math.isfinite(base.loss):
        return "the loss is NaN or Inf"
    return None

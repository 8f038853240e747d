"""The dynamic phase: run every selected dynamic rule on the training setup.

The user's model, parameters and global RNG states are bit-identical
afterwards (`nnlint.setup.preserve.preserved`); checks run with a fixed
thread count, and the long one may run alongside the others
(`nnlint.dynamic.alongside`).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import torch

from nnlint.core.files import display_path
from nnlint.core.finding import Finding, Phase
from nnlint.dynamic.alongside import Alongside, start_alongside
from nnlint.dynamic.context import DynamicContext
from nnlint.dynamic.run import nonfinite_cause, passes_failure, run_one, skipped
from nnlint.dynamic.stats import collect
from nnlint.setup.preserve import preserved
from nnlint.setup.sites import Site
from nnlint.setup.specs import Setup

THREADS = 1


def _progress(rules: list, enabled: bool) -> Any:
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=len(rules), desc="dynamic checks", unit="check", file=sys.stderr, leave=False)


def progress_wanted(settings: Any) -> bool:
    """A progress bar, unless `-q` asked for findings only."""
    return not getattr(settings, "quiet", False)


def run_checks(
    ctx: DynamicContext,
    rules: list,
    *,
    verbose: bool = False,
    debug: bool = False,
    timings: dict[str, float] | None = None,
    progress: bool = True,
) -> list[Finding]:
    """Run each dynamic rule on `ctx`; skips become NN007, crashes NN001.

    Rules marked `alongside` start first in worker threads where `alongside_view`
    allows it; findings come back in rule order either way.
    """
    results: dict[int, list[Finding]] = {}
    notes: list[Finding] = []
    timings = timings if timings is not None else {}
    threads = torch.get_num_threads()
    bar = _progress(rules, progress)
    cuda = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
    workers: dict[int, Alongside] = {}
    with preserved(ctx.model), torch.random.fork_rng(devices=cuda):
        torch.set_num_threads(min(THREADS, threads))
        try:
            failure = passes_failure(ctx)
            if failure is not None:
                return explained(ctx, rules, failure, verbose, debug, timings)
            cause = nonfinite_cause(ctx)
            if cause is not None:  # one bug, one finding: non-finite reports it
                blocked = [r for r in rules if r.needs_finite]
                rules = [r for r in rules if not r.needs_finite]
                reason = f"{cause} (see non-finite), so its verdict would not be about the model"
                notes = [skipped(ctx, r, reason) for r in blocked] if verbose else []
            workers = start_alongside(ctx, rules, verbose, debug)
            for index, rule in enumerate(rules):
                if index in workers:
                    continue
                if bar is not None:
                    bar.set_postfix_str(rule.name)
                start = time.perf_counter()
                results[index] = run_one(ctx, rule, verbose, debug)
                timings[f"dynamic.{rule.name}"] = round(time.perf_counter() - start, 4)
                if bar is not None:
                    bar.update()
            for index, worker in workers.items():
                if bar is not None:
                    bar.set_postfix_str(worker.rule.name)
                results[index] = worker.result()
                timings[f"dynamic.{worker.rule.name}"] = round(worker.seconds, 4)
                if bar is not None:
                    bar.update()
        finally:
            for worker in workers.values():
                worker.view.deadline = float("-inf")  # left early: stop at its next tick
            torch.set_num_threads(threads)
            if bar is not None:
                bar.close()
    return notes + [f for index in sorted(results) for f in results[index]]


def explained(
    ctx: DynamicContext,
    rules: list,
    failure: Finding,
    verbose: bool,
    debug: bool,
    timings: dict[str, float],
) -> list[Finding]:
    """The findings of the checks that can say why the shared forward and loss raised
    (`explains_failure`), then the one NN007 of `failure` (the other checks did not run)."""
    found: list[Finding] = []
    for rule in (r for r in rules if r.explains_failure):
        start = time.perf_counter()
        found += [f for f in run_one(ctx, rule, verbose, debug) if f.code == rule.code]
        timings[f"dynamic.{rule.name}"] = round(time.perf_counter() - start, 4)
    return [*found, failure]


def dynamic_phase(
    setup: Setup,
    rules: list,
    settings: Any,
    site: Site,
    timings: dict[str, float] | None = None,
    insights: dict[str, Any] | None = None,
) -> list[Finding]:
    """Run the selected dynamic rules on `setup`, findings with paths as the user reads them.

    `site` is where findings about the model as a whole point (its class line).
    The entry point of the dynamic phase, in this process or in the capture child.
    With `--report` or `--stats`, `insights` receives what `nnlint.dynamic.stats`
    measures, after the checks.
    """
    dynamic = [r for r in rules if r.kind is Phase.DYNAMIC]
    if not dynamic:
        return []
    selected = frozenset({r.code for r in rules} | {r.name for r in rules})
    device = getattr(settings, "device", None) or "cpu"
    ctx = DynamicContext(setup, path=site.path, line=site.line, device=device, selected=selected)
    ctx.settings = settings
    found = run_checks(
        ctx,
        dynamic,
        verbose=getattr(settings, "verbose", False),
        debug=getattr(settings, "debug", False),
        timings=timings,
        progress=progress_wanted(settings),
    )
    if insights is not None and wants_stats(settings):
        start = time.perf_counter()
        torch_threads = torch.get_num_threads()
        torch.set_num_threads(min(THREADS, torch_threads))
        try:
            insights.update(collect(ctx))
        finally:
            torch.set_num_threads(torch_threads)
        if timings is not None:
            timings["stats"] = round(time.perf_counter() - start, 4)
    root = Path(settings.root)
    return [dataclasses.replace(f, path=display_path(Path(f.path), root)) for f in found]


def wants_stats(settings: Any) -> bool:
    return bool(getattr(settings, "report", None) or getattr(settings, "stats", False))

"""The dynamic phase: run the model, share passes between checks, report findings.

Checks share passes: one train-mode forward (loss, calibration, non-finite
values) and one backward with the real loss (gradient flow) serve many rules.
Each check runs on a fresh copy of the model under a seeded RNG, a fixed
thread count and a time budget; the user's model, parameters and global RNG
states are bit-identical afterwards (`nnlint.preserve.preserved`).

The one long check (cannot-overfit trains a copy for up to a few hundred
steps) runs in a worker thread beside the others where that cannot change any
result: on the CPU, for small models, when the model's forward draws nothing
from the global RNG. Torch releases the GIL inside its kernels and autograd,
so on two cores the short checks then cost little wall time.
"""

from __future__ import annotations

import copy
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from nnlint import probes
from nnlint.copies import Copies
from nnlint.diagnostics import CheckSkipped, InternalError
from nnlint.finding import Finding, Severity
from nnlint.preserve import preserved
from nnlint.training import LossSpec, OptimizerSpec, Setup

SEED = 1234
THREADS = 1
CHECK_BUDGET = 20.0  # seconds per check; the shared passes count against the first check using them
# The most parameter and buffer bytes of a model whose long check may run beside the others.
ALONGSIDE_MAX_BYTES = 64 * 2**20

_worker = threading.local()  # `active` in a worker thread running a check alongside the others


def reseed(seed: int = SEED) -> None:
    """Seed the global generators the checks draw from: the CPU's, and CUDA's once in use.

    `torch.manual_seed` also queues a seed for every lazily started backend
    (CUDA, XPU, MTIA) and records a stack trace for each, about 1.5 ms a call;
    the checks reseed often enough for that to count.
    """
    if getattr(_worker, "active", False):
        raise RuntimeError("a check running alongside the others cannot reseed the global RNG")
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)


class Skip(Exception):
    """A check does not apply (`applicable=False`, shown only with --verbose) or cannot run."""

    def __init__(self, reason: str, applicable: bool = False) -> None:
        super().__init__(reason)
        self.applicable = applicable


class CheckTimeout(Exception):
    """A check ran past its time budget."""


@dataclass
class Base:
    """The shared train-mode forward and backward of the batch with the real loss."""

    model: Any
    output: Any
    logits: Any
    loss: float | None
    first_nonfinite: tuple[str, str] | None
    grads: dict[str, Any] = field(default_factory=dict)


class DynamicContext:
    """What a dynamic rule gets: the setup, shared passes, helpers and a locator."""

    def __init__(
        self,
        setup: Setup,
        *,
        path: str,
        line: int,
        device: str = "cpu",
        active: frozenset[str] = frozenset(),
        budget: float | None = None,
    ) -> None:
        self.setup = setup
        self.model = setup.model
        self.args, self.kwargs = setup.args, setup.kwargs
        self.loss: LossSpec | None = setup.loss
        self.optimizer: OptimizerSpec | None = setup.optimizer
        self.task = setup.task
        self.path, self.line = path, line
        self.device = device
        self.active = active
        self.budget = CHECK_BUDGET if budget is None else budget
        self.deadline = float("inf")
        self.n = probes.batch_size(self.args, self.kwargs) or 1
        self.settings: Any = None
        self.rule: Any = None
        self._base: Base | None = None
        self._copies = Copies(self.model)

    def alongside(self) -> DynamicContext:
        """A view of this context for a check running in a worker thread: its own
        model copies, rule and deadline; the shared passes as computed so far."""
        view = copy.copy(self)
        view._copies = Copies(self.model)
        view.rule = None
        view.deadline = float("inf")
        return view

    # -- running the model -------------------------------------------------

    def begin(self, rule: Any) -> None:
        self._copies.take_back(keep=self._base.model if self._base is not None else None)
        if not getattr(_worker, "active", False):  # a check alongside draws no random numbers
            reseed()
        self.rule = rule
        self.deadline = time.monotonic() + self.budget

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise CheckTimeout()

    def generator(self, offset: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(SEED + offset)

    def fresh(self, train: bool = True, dropout: bool = True) -> Any:
        """A copy of the user's model (`nnlint.copies`), in train or eval mode, gradients cleared."""
        model = self._copies.get()
        model.train(train)
        for module in model.modules():
            if not dropout and isinstance(module, torch.nn.modules.dropout._DropoutNd):
                module.eval()
            if train and self.n == 1 and isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()  # train-mode BatchNorm cannot normalize a single sample
        for p in model.parameters():
            p.grad = None
        return model

    def run(
        self,
        model: Any,
        args: tuple | None = None,
        kwargs: dict | None = None,
        *,
        same_rng: bool = False,
    ) -> Any:
        """One forward; `same_rng` reseeds first, so that forwards compared with each
        other draw the same random numbers (dropout left on in eval mode, noise)."""
        self.tick()
        if same_rng:
            reseed()
        return model(
            *(self.args if args is None else args), **(self.kwargs if kwargs is None else kwargs)
        )

    def loss_of(self, out: Any, index: Any = None, times: int = 1) -> Any:
        if self.loss is None:
            raise Skip("no loss: pass loss_fn, --loss or --task")
        return probes.compute_loss(self.loss, out, self.n, index, times)

    def base(self) -> Base:
        """The shared forward/backward, computed on first use."""
        if self._base is None:
            self._base = self._forward_backward()
        return self._base

    def _forward_backward(self) -> Base:
        model = self.fresh(train=True)
        names = {m: n for n, m in model.named_modules()}
        first: list[tuple[str, str]] = []

        def watch(module: Any, _inputs: Any, output: Any) -> None:
            if not first and any(
                not torch.isfinite(t).all() for t in probes.tensors(output) if t.is_floating_point()
            ):
                first.append((names[module], "output"))

        handles = [m.register_forward_hook(watch) for m in model.modules()]
        reseed()
        try:
            out = self.run(model)
        finally:
            for h in handles:
                h.remove()
        loss = self.loss_of(out) if self.loss is not None else None
        grads: dict[str, Any] = {}
        if loss is not None and loss.requires_grad:
            loss.backward()
            grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        value = float(loss.detach()) if loss is not None else None
        return Base(model, out, probes.main_output(out), value, first[0] if first else None, grads)

    def optimizer_for(self, model: Any) -> tuple[Any, str, bool]:
        """An optimizer on `model` like the user's (Adam by default), its description, whether it is theirs."""
        from nnlint.replay import training_optimizer

        spec, users = training_optimizer(self.setup, self.settings)
        return spec.build(model), spec.describe(), users

    def head(self) -> str | None:
        """The last Linear or Conv layer: where the scale of the logits is set."""
        last = None
        for name, module in self.model.named_modules():
            if isinstance(module, torch.nn.Linear | torch.nn.modules.conv._ConvNd):
                last = name
        return last

    # -- where findings point ---------------------------------------------

    def locate(self, module_name: str | None = None) -> tuple[str, int]:
        """The construction line of a submodule (or parameter's module), else the model's class line."""
        from nnlint.sites import site_for

        if module_name is not None:
            site = site_for(self.model, module_name)
            if site is not None:
                return site.path, site.line
        return self.path, self.line

    def report(
        self, rule: Any, at: str | None = None, /, note: str | None = None, **fields: Any
    ) -> Finding:
        """`rule`'s finding at the construction line of module `at` (the model's line if None)."""
        path, line = self.locate(at)
        return rule.make(path, line, 1, note=note, **fields)


def owner(parameter_name: str) -> str:
    """The qualified name of the module holding a parameter."""
    return parameter_name.rpartition(".")[0]


def fmt(value: float) -> str:
    """A number rounded for messages, so the same model gives the same text."""
    if value == 0 or not (abs(value) < float("inf")):
        return str(value)
    if 1e-3 <= abs(value) < 1e4:
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return f"{value:.1e}"


@contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    """Interrupt a check stuck inside one long call (main thread only; elsewhere `tick` does)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(
        signal, "setitimer"
    ):
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


def _progress(rules: list, enabled: bool) -> Any:
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=len(rules), desc="dynamic checks", unit="check", file=sys.stderr, leave=False)


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

    Rules marked `alongside` start first in worker threads where `_overlap`
    allows it; findings come back in rule order either way.
    """
    results: dict[int, list[Finding]] = {}
    timings = timings if timings is not None else {}
    threads = torch.get_num_threads()
    bar = _progress(rules, progress)
    cuda = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
    workers: dict[int, _Alongside] = {}
    with preserved(ctx.model), torch.random.fork_rng(devices=cuda):
        torch.set_num_threads(min(THREADS, threads))
        try:
            workers = _start_alongside(ctx, rules, verbose, debug)
            for index, rule in enumerate(rules):
                if index in workers:
                    continue
                if bar is not None:
                    bar.set_postfix_str(rule.name)
                start = time.perf_counter()
                results[index] = _run_one(ctx, rule, verbose, debug)
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
    return [f for index in sorted(results) for f in results[index]]


class _Alongside(threading.Thread):
    """One check running in a worker thread on its own view of the context."""

    def __init__(self, view: DynamicContext, rule: Any, verbose: bool, debug: bool) -> None:
        super().__init__(name=f"nnlint-{rule.name}", daemon=True)
        self.view, self.rule, self.verbose, self.debug = view, rule, verbose, debug
        self.findings: list[Finding] | None = None
        self.seconds = 0.0
        self.started = time.perf_counter()
        self.limit = time.monotonic() + view.budget + 1.0

    def run(self) -> None:
        _worker.active = True
        try:
            self.findings = _run_one(self.view, self.rule, self.verbose, self.debug)
        except BaseException as exc:  # noqa: BLE001 - nothing may escape a worker thread
            self.findings = [_crashed(self.view, self.rule, exc, self.debug)]
        finally:
            self.seconds = time.perf_counter() - self.started

    def result(self) -> list[Finding]:
        """The check's findings, once it is done or past its budget (then left to stop at its next tick)."""
        self.join(max(0.0, self.limit - time.monotonic()))
        if self.is_alive() or self.findings is None:
            self.seconds = time.perf_counter() - self.started
            return [_skipped(self.view, self.rule, f"ran past its {self.view.budget:g} s budget")]
        return self.findings


def _start_alongside(
    ctx: DynamicContext, rules: list, verbose: bool, debug: bool
) -> dict[int, _Alongside]:
    """Start the `alongside` rules in worker threads where `_overlap` allows; index -> worker."""
    wanted = [i for i, rule in enumerate(rules) if getattr(rule, "alongside", False)]
    if not wanted or len(wanted) == len(rules):
        return {}
    view = _overlap(ctx)
    if view is None:
        return {}
    try:
        ctx.base()  # the shared passes draw from the RNG: compute them here, not in a worker
    except Exception:
        return {}  # whichever check needs them reports the error
    views = [view, *(ctx.alongside() for _ in wanted[1:])]
    workers = {
        i: _Alongside(v, rules[i], verbose, debug) for i, v in zip(wanted, views, strict=True)
    }
    for worker in workers.values():
        worker.start()
    return workers


def _overlap(ctx: DynamicContext) -> DynamicContext | None:
    """A view for a long check to run beside the others, where that changes no result
    and adds little memory: two cores, the CPU, a small model, and a train-mode forward
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


def _run_one(ctx: DynamicContext, rule: Any, verbose: bool, debug: bool) -> list[Finding]:
    ctx.begin(rule)
    try:
        with _alarm(ctx.budget + 1.0):
            return list(rule.check(ctx))
    except Skip as skip:
        if skip.applicable or verbose:
            return [_skipped(ctx, rule, str(skip))]
        return []
    except CheckTimeout:
        return [_skipped(ctx, rule, f"ran past its {ctx.budget:g} s budget")]
    except Exception as exc:
        return [_crashed(ctx, rule, exc, debug)]


def _crashed(ctx: DynamicContext, rule: Any, exc: BaseException, debug: bool) -> Finding:
    return InternalError.make(
        ctx.path,
        ctx.line,
        1,
        rule=f"{rule.code} ({rule.name})",
        error=f"{type(exc).__name__}: {exc}",
        note=traceback.format_exc() if debug else None,
    )


def _skipped(ctx: DynamicContext, rule: Any, reason: str) -> Finding:
    return CheckSkipped.make(
        ctx.path,
        ctx.line,
        1,
        rule=f"{rule.code} ({rule.name})",
        reason=reason,
        severity=Severity.INFO,
    )


def dynamic_phase(
    setup: Setup,
    rules: list,
    settings: Any,
    *,
    path: str,
    line: int,
    timings: dict[str, float] | None = None,
) -> list[Finding]:
    """Run the selected dynamic rules on `setup`; the entry point of `nnlint.check` and the CLI."""
    from nnlint.finding import Phase

    dynamic = [r for r in rules if r.kind is Phase.DYNAMIC]
    if not dynamic:
        return []
    active = frozenset({r.code for r in rules} | {r.name for r in rules})
    device = getattr(settings, "device", None) or "cpu"
    ctx = DynamicContext(setup, path=path, line=line, device=device, active=active)
    ctx.settings = settings
    return run_checks(
        ctx,
        dynamic,
        verbose=getattr(settings, "verbose", False),
        debug=getattr(settings, "debug", False),
        timings=timings,
    )

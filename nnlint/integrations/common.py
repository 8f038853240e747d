"""What the training-framework callbacks share: replay the first step on a copy,
check it, print the findings and fail when asked.

The framework's step runs once more on a deep copy of the model (and of its
optimizer, so the parameters the optimizer holds are the copy's), with the
copy's forward calls and the `torch.nn.functional` losses recorded as the
capture child records them (`nnlint.capture.intercept`). What the step called
the model with is the batch, the loss its result came from is the loss, and
`nnlint.check` runs on the copy with both. The user's model, optimizer and the
global RNGs (torch, NumPy, Python) are as they were afterwards.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnlint.api import Findings, check
from nnlint.capture.intercept import State, catch, patch_losses
from nnlint.core.config import Settings
from nnlint.core.diagnostics import CheckSkipped, one_line
from nnlint.core.files import display_path
from nnlint.core.finding import Finding, Severity
from nnlint.core.registry import load_registry
from nnlint.engine import Result
from nnlint.report import concise_line, format_text
from nnlint.setup.inputs import Batch
from nnlint.setup.load import definition_site
from nnlint.setup.preserve import global_rngs
from nnlint.setup.specs import LossSpec, OptimizerSpec
from nnlint.setup.tensors import map_tensors

_FAIL_ON = {"warning": Severity.WARNING, "error": Severity.ERROR}


class NNLintError(RuntimeError):
    """nnlint found problems at or above the callback's `fail_on` level; `findings` has them all."""

    def __init__(self, findings: Sequence[Finding], level: str) -> None:
        self.findings = list(findings)
        lines = "\n".join(concise_line(f) for f in self.findings)
        super().__init__(f"nnlint found problems at level {level!r} or above:\n{lines}")


@dataclass
class Options:
    """What the user gave the callback."""

    fail_on: str | None = None
    select: Sequence[str] | None = None
    ignore: Sequence[str] = ()
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.fail_on is not None and self.fail_on not in _FAIL_ON:
            raise ValueError(f"fail_on must be None, 'warning' or 'error', not {self.fail_on!r}")
        # unknown codes fail here, not in the middle of training
        self.codes = {r.code for r in load_registry().select(self.select, self.ignore)}
        unknown = sorted(set(self.settings) - {f.name for f in dataclasses.fields(Settings)})
        if unknown:
            raise TypeError(f"NNLintCallback got unknown settings: {', '.join(unknown)}")

    def kept(self, findings: Sequence[Finding]) -> list[Finding]:
        """The callback's own notes that the selection keeps (check() filters its own)."""
        return [f for f in findings if f.code in self.codes]


@dataclass
class Step:
    """What one replayed step showed: the model it called, its inputs and its loss."""

    model: Any
    batch: Batch | None
    loss: LossSpec | None
    optimizer: OptimizerSpec | None


@contextlib.contextmanager
def untouched_rngs() -> Iterator[None]:
    """torch's (CPU and CUDA), NumPy's and Python's global RNGs as they were, on exit."""
    import torch

    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with global_rngs(), torch.random.fork_rng(devices=devices):
        yield


def copies(model: Any, optimizer: Any, leave_out: Sequence[Any] = ()) -> tuple[Any, Any]:
    """Deep copies of the model and its optimizer, sharing the copied parameters.
    `leave_out` (a Trainer the module points back to) become None in the copy."""
    memo: dict[int, Any] = {id(obj): None for obj in leave_out}
    return copy.deepcopy((model, optimizer), memo)


def replay(model: Any, optimizer: Any, step: Callable[[Any], Any], origin: str) -> tuple[Step, Any]:
    """Run `step(model)` on `model` (a copy), recording what it called the model (or
    a direct submodule) with and the functional losses it computed; and its result."""
    import torch

    state = State()
    catch(model, state)
    for child in model.children():
        if any(True for _ in child.parameters()):  # a submodule `training_step` may call
            catch(child, state)
    patch_losses(state)
    try:
        model.train()
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # self.log without a trainer, and the like
            result = step(model)
    finally:
        for undo in reversed(state.undo):
            undo()
    called = [m for m in state.models if id(m) in state.training] or [
        m for m in state.models if id(m) in state.calls
    ]
    if not called:
        return Step(model, None, None, None), result
    chosen = called[0]
    args, kwargs = state.calls[id(chosen)]
    kwargs = {k: v for k, v in kwargs.items() if k != "num_items_in_batch"}
    loss = _loss(result, state, chosen, (tuple(args), kwargs), state.outputs.get(id(chosen)))
    target = loss.target if loss is not None else None
    spec = OptimizerSpec.from_optimizer(optimizer, chosen) if optimizer is not None else None
    return Step(chosen, Batch(tuple(args), kwargs, origin, target), loss, spec), result


def loss_tensor(result: Any) -> Any:
    """The loss a step returned: a tensor, a mapping's (or output's) `loss`, else None."""
    import torch

    if isinstance(result, torch.Tensor):
        return result
    if isinstance(result, Mapping):
        value = result.get("loss")
    else:
        value = getattr(result, "loss", None)
    return value if isinstance(value, torch.Tensor) else None


def _loss(
    result: Any, state: State, model: Any, inputs: tuple[tuple, dict], output: Any
) -> LossSpec | None:
    tensor = loss_tensor(result)
    if tensor is None:
        return None
    if getattr(output, "loss", None) is tensor:  # the step returned the model's own loss
        return own_loss(model, *inputs)
    if not state.losses:
        return None
    match = [c for c in state.losses if c[5] == id(tensor)] or state.losses
    name, extra, target, shape, site, _ = match[-1]
    return LossSpec(name, extra, target, input_shape=shape, site=site)


def own_loss(model: Any, args: tuple, kwargs: dict) -> LossSpec | None:
    """The model's own loss (HF style: `.loss` when given `labels`), with the functional
    loss it applies (read from one more forward on `model`, a copy), for graph rules."""
    import torch

    if "labels" not in kwargs:
        return None
    state = State()
    patch_losses(state)  # nothing caught: the losses inside the model are recorded too
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            output = model(*args, **kwargs)
    finally:
        for undo in reversed(state.undo):
            undo()
    loss = getattr(output, "loss", None)  # what the dynamic checks read back
    if not isinstance(loss, torch.Tensor):
        return None
    match = [c for c in state.losses if c[5] == id(loss)] or state.losses[-1:]
    computes = match[-1][0] if match else None
    return LossSpec("model", target=kwargs["labels"], computes=computes)


def skipped(model: Any, root: Path, reason: str, rule: str = "the dynamic checks") -> Finding:
    """NN007 at the model's class line: the loss-based checks did not run, and why."""
    site = definition_site(model, model)
    path = display_path(Path(site.path), root) if site else "<model>"
    return CheckSkipped.make(path, site.line if site else 1, rule=rule, reason=reason)


def checked(model: Any, options: Options, root: Path, work: Callable[[], Findings]) -> Findings:
    """`work()` with the global RNGs left as they were. What it raises (the step run
    on the copy, reading the Trainer it is not attached to, say) is an NN007:
    training goes on as without the callback."""
    try:
        with untouched_rngs():
            return work()
    except Exception as exc:
        reason = f"running the first step on a copy of the model raised {one_line(exc)}"
        note = skipped(model, root, reason, "the graph and dynamic checks")
        return Findings(options.kept([note]))


def run_checks(step: Step, options: Options, extra: Sequence[Finding] = ()) -> Findings:
    """`nnlint.check` on the step's model, batch, loss and optimizer."""
    dynamic = options.settings.get("dynamic", True) and step.loss is not None
    settings = {**options.settings, "dynamic": dynamic}
    found = check(
        step.model,
        batch=step.batch,
        loss_fn=step.loss,
        optimizer=step.optimizer,
        select=options.select,
        ignore=options.ignore,
        **settings,
    )
    return Findings([*options.kept(extra), *found])


def report(findings: Findings, root: Path) -> None:
    """The findings as `nnlint` prints them, with rich, on stderr."""
    result = Result(list(findings), [], [], root=root)
    color = sys.stderr.isatty()
    sys.stderr.write(format_text(result, color=color, width=100))


def counts(findings: Sequence[Finding]) -> dict[str, float]:
    """Metrics for a logger: the findings in all, and per severity."""
    metrics = {"nnlint/findings": float(len(findings))}
    for severity in Severity:
        metrics[f"nnlint/{severity}"] = float(sum(f.severity is severity for f in findings))
    return metrics


def fail(findings: Sequence[Finding], options: Options) -> None:
    """Raise `NNLintError` when a finding reaches `fail_on`."""
    if options.fail_on is None:
        return
    level = _FAIL_ON[options.fail_on]
    bad = [f for f in findings if f.severity >= level]
    if bad:
        raise NNLintError(bad, options.fail_on)


def detached(value: Any) -> Any:
    """Tensors in a batch, detached and cloned: the copy never shares the user's."""
    return map_tensors(value, lambda t: t.detach().clone())

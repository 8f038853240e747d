"""What a dynamic rule gets: the training setup, the shared passes, model copies, a locator.

Checks share passes: one train-mode forward (loss, calibration, non-finite
values) and one backward with the real loss (gradient flow) serve many rules.
Each check runs on a fresh copy of the model (`nnlint.dynamic.copies`) under
a seeded RNG and a time budget.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from nnlint.core.finding import Finding
from nnlint.dynamic import probes
from nnlint.dynamic.copies import Copies
from nnlint.dynamic.nonfinite import NonFiniteOp, first_nonfinite_op
from nnlint.dynamic.seeding import SEED, enter_worker, in_worker, reseed  # noqa: F401 (re-exported)
from nnlint.dynamic.training import TrainedPasses, Trainer
from nnlint.setup.resolve import training_optimizer
from nnlint.setup.sites import site_for
from nnlint.setup.specs import LossSpec, OptimizerSpec, Setup

CHECK_BUDGET = 20.0  # seconds per check; the shared passes count against the first check using them


class Skip(Exception):
    """A check does not apply or cannot run; reported as NN007 under --verbose."""


class CheckTimeout(Exception):
    """A check ran past its time budget."""


@dataclass
class SharedPasses:
    """The shared train-mode forward and backward of the batch with the real loss."""

    model: Any
    output: Any
    loss: float | None
    first_nonfinite: tuple[str, str] | None
    grads: dict[str, Any] = field(default_factory=dict)
    nonfinite_op: NonFiniteOp | None = None  # the op that made it, at the user's line
    seconds: float = 0.0  # CPU seconds of the forward, loss and backward (this thread's)

    @property
    def finite(self) -> bool:
        """Whether the forward and the loss stayed free of NaN and Inf."""
        return self.first_nonfinite is None and (self.loss is None or math.isfinite(self.loss))


class DynamicContext:
    """What a dynamic rule gets: the setup, shared passes, helpers and a locator."""

    def __init__(
        self,
        setup: Setup,
        *,
        path: str,
        line: int,
        device: str = "cpu",
        selected: frozenset[str] = frozenset(),
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
        self.selected = selected  # codes and names of the rules selected, of every phase
        self.budget = CHECK_BUDGET if budget is None else budget
        self.deadline = float("inf")
        self.batch_size = probes.batch_size(self.args, self.kwargs) or 1
        self.settings: Any = None
        self.rule: Any = None
        self._passes: SharedPasses | None = None
        self._trainer = Trainer(self)
        self._copies = Copies(self.model)
        # What checks measured that the report draws (`nnlint.dynamic.stats`), so it
        # need not measure it again; shared with the views of checks run alongside.
        self.measured: dict[str, Any] = {}

    def alongside(self) -> DynamicContext:
        """A view of this context for a check running in a worker thread: its own
        model copies, trained copy, rule and deadline; the shared passes as computed so far."""
        view = copy.copy(self)
        view._copies = Copies(self.model)
        view._trainer = Trainer(view)  # not shared across threads
        view.rule = None
        view.deadline = float("inf")
        return view

    # -- running the model -------------------------------------------------

    def begin(self, rule: Any) -> None:
        self._copies.take_back(keep=self._passes.model if self._passes is not None else None)
        if not in_worker():  # a check alongside draws no random numbers
            reseed()
        self.rule = rule
        self.deadline = time.thread_time() + self.budget  # CPU time: load-proof

    def tick(self) -> None:
        if time.thread_time() > self.deadline:
            raise CheckTimeout()

    def generator(self, offset: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(SEED + offset)

    def fresh(self, train: bool = True, dropout: bool = True) -> Any:
        """A copy of the user's model (`nnlint.dynamic.copies`), in train or eval mode, gradients cleared."""
        model = self.set_mode(self._copies.get(), train, dropout)
        for p in model.parameters():
            p.grad = None
        return model

    def set_mode(self, model: Any, train: bool = True, dropout: bool = True) -> Any:
        """`model` in train or eval mode, with dropout off if asked."""
        model.train(train)
        for module in model.modules():
            if not dropout and isinstance(module, torch.nn.modules.dropout._DropoutNd):
                module.eval()
            if (
                train
                and self.batch_size == 1
                and isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
            ):
                module.eval()  # train-mode BatchNorm cannot normalize a single sample
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
        return probes.compute_loss(self.loss, out, self.batch_size, index, times)

    def passes(self) -> SharedPasses:
        """The shared forward/backward, computed on first use."""
        if self._passes is None:
            self._passes = self._forward_backward()
        return self._passes

    def _forward_backward(self) -> SharedPasses:
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
        start = time.thread_time()
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
        passes = SharedPasses(model, out, value, first[0] if first else None, grads)
        passes.seconds = time.thread_time() - start
        if first:
            replay = self.fresh(train=True)
            reseed()
            passes.nonfinite_op = first_nonfinite_op(lambda: self.run(replay))
        return passes

    def trained(self, until: Callable[[TrainedPasses], bool] | None = None) -> TrainedPasses:
        """The copy after a few steps of the user's optimizer (Adam by default) with the
        real loss (`nnlint.dynamic.training`), fewer once `until(state)` holds; trained
        on first use (only checks with a suspect call it) and continued on demand."""
        return self._trainer.get(until)

    def optimizer_for(self, model: Any) -> tuple[Any, str, bool]:
        """An optimizer on `model` like the user's (Adam by default), its description, whether it is theirs."""

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


def guessed_loss(loss: LossSpec) -> str:
    """Why a check that judges the loss itself does not judge a guessed one."""
    return (
        f"the loss is a guess ({loss.describe()} on targets nnlint made up: nothing says what "
        "the model is trained for); pass --loss or --task, or let nnlint run the training script"
    )


def module_of(parameter_name: str) -> str:
    """The qualified name of the module holding a parameter."""
    return parameter_name.rpartition(".")[0]


def rounded(value: float) -> str:
    """A number rounded for messages, so the same model gives the same text."""
    if value == 0 or not (abs(value) < float("inf")):
        return str(value)
    if 1e-3 <= abs(value) < 1e4:
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return f"{value:.1e}"

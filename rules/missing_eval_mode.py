from __future__ import annotations

import re
from collections.abc import Iterator

import libcst as cst

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import ScriptRule
from nnlint.script.loops import BACKWARD, EVAL, TRAIN, analyze

_EVAL_NAME = re.compile(
    r"^(eval|evaluate|evaluation|validate|validation|val|valid|test)"
    r"(_(epoch|loop|model|one_epoch|accuracy|loss))?$"
    r"|^(eval|evaluate|validate|run_eval|run_validation)_\w+$"
    r"|_(eval|evaluate|evaluation|validate|validation)$"
)
# Models kept in eval mode on purpose: teachers, EMA copies, frozen references.
_FROZEN = re.compile(r"teacher|ema|target|frozen|ref|fixed|pretrained|clip|vae", re.IGNORECASE)


class MissingEvalMode(ScriptRule):
    """Evaluation runs in training mode, or training goes on in evaluation mode.

    ## What it does
    Flags an evaluation function (named like `evaluate`, `validate`,
    `eval_epoch`, ...) that runs the model under `torch.no_grad()` with no
    `backward()` but never calls `model.eval()`, neither itself nor where it
    is called; and a training loop that calls `model.eval()` for validation
    but never `model.train()` again, so every epoch after the first trains in
    evaluation mode.

    ## Why is this bad?
    Dropout stays active and BatchNorm uses (and updates) batch statistics
    during evaluation, so validation scores are noisy and pessimistic. The
    other way round, after `eval()` dropout is off and BatchNorm freezes
    its statistics for the rest of training.

    ## Example
    ```python
    for epoch in range(epochs):
        for x, y in train_loader:
            ...
            loss.backward()
            optimizer.step()
        model.eval()
        evaluate(model, val_loader)
    ```

    ## Use instead
    ```python
    for epoch in range(epochs):
        model.train()
        for x, y in train_loader:
            ...
            loss.backward()
            optimizer.step()
        model.eval()
        evaluate(model, val_loader)
    ```

    ## Known problems
    Models named like teachers, EMA copies or frozen references are expected
    to stay in eval mode and are not flagged.
    """

    needs = ("val", "test")
    needs_all = ("torch",)
    code = "NN205"
    name = "missing-eval-mode"
    message = "{problem}; {fix}"
    severity = Severity.WARNING

    invalid = (
        """
import torch

def evaluate(model, loader):
    correct = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
    return correct
""",
        """
import torch
model.train()
for epoch in range(10):
    for x, y in loader:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        acc = sum((model(x).argmax(1) == y).sum().item() for x, y in val_loader)
""",
    )
    valid = (
        """
import torch

@torch.no_grad()
def evaluate(model, loader):
    model.eval()
    return sum((model(x).argmax(1) == y).sum().item() for x, y in loader)

def validate(model, loader):
    with torch.no_grad():
        return sum(model(x).sum().item() for x, _ in loader)

for epoch in range(10):
    model.train()
    for x, y in loader:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    evaluate(model, val_loader)
    model.eval()
    validate(model, val_loader)
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        analysis = analyze(ctx)
        tracker = analysis.values
        for unit in analysis.units:
            if unit.is_loop:
                yield from self._never_back_to_train(ctx, unit)
                continue
            fn = unit.node
            if not _EVAL_NAME.search(fn.name.value) or unit.of(BACKWARD) or unit.of(EVAL):
                continue
            if not _runs_model_without_grad(tracker, fn):
                continue
            sites = tracker.callers(fn)
            if sites and any(_eval_around(analysis, site) for site in sites):
                continue
            yield ctx.report(
                self,
                fn.name,
                problem=f"`{fn.name.value}()` runs the model without `model.eval()`",
                fix="call `model.eval()` before evaluating and `model.train()` after",
            )

    def _never_back_to_train(self, ctx, unit) -> Iterator[Finding]:
        if not unit.of(BACKWARD) or unit.of(TRAIN):
            return
        for event in unit.of(EVAL):
            if event.target and not _FROZEN.search(event.target):
                yield ctx.report(
                    self,
                    event.node,
                    problem=f"`{event.target}.eval()` in a training loop that never calls "
                    f"`{event.target}.train()`",
                    fix="call `.train()` at the start of each epoch",
                )
                return


def _runs_model_without_grad(tracker, fn: cst.FunctionDef) -> bool:
    """Whether `fn` calls a model (a parameter, or something named like one) under no_grad."""
    for node in tracker.walk(fn.body):
        if isinstance(node, cst.Call) and tracker.grad_disabled(node, callers=False):
            func = node.func
            text = tracker.code(func).lower()
            if text.replace("self.", "").isidentifier() and ("model" in text or "net" in text):
                return True
            if isinstance(func, cst.Name) and any(
                isinstance(getattr(r, "node", None), cst.Param)
                for r in tracker.referents.get(func, ())
            ):
                return True
    return False


def _eval_around(analysis, site: cst.Call) -> bool:
    """Whether the code calling an evaluation function switches to eval mode itself."""
    tracker = analysis.values
    holder = tracker.enclosing(site, cst.FunctionDef)
    if holder is None:
        return any(e.kind == EVAL for e in analysis.module_events())
    return any(e.kind == EVAL for e in analysis.function_events(holder))

from __future__ import annotations

import re
from collections.abc import Iterator

import libcst as cst

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import ScriptRule
from nnlint.script import project
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
    A model that comes from another call (a loading helper, `from_pretrained`)
    may already be in eval mode, and an evaluation function called from
    another file after `model.eval()` is fine: both are left alone. An
    `eval()` that runs before every `backward()` of the loop trains in eval
    mode on purpose (a frozen backbone) and is not flagged.
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
        """
import torch

def batch_loss(model, x, y):
    return torch.nn.functional.cross_entropy(model(x), y)

def evaluate_model(model, loader):
    with torch.no_grad():
        total = sum(batch_loss(model, x, y).item() for x, y in loader)
    model.train()
    return total
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
        """
import torch
from helpers import load_model

@torch.no_grad()
def evaluate(path, loader):
    model = load_model(path)
    return sum(model(x).sum().item() for x, _ in loader)

def fit_head(backbone, head, loader, opt):
    backbone.eval()
    for x, y in loader:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(head(backbone(x)), y).backward()
        opt.step()

for epoch in range(5):
    fit_head(backbone, head, loader, opt)
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
            if not _runs_model_without_grad(analysis, fn):
                continue
            sites = tracker.callers(fn)
            if sites and any(_eval_around(analysis, site) for site in sites):
                continue
            if any(project.calls_elsewhere(fn.name.value, ctx.path, ctx.project_root)):
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
        # An eval() before every backward trains in eval mode on purpose (a frozen
        # backbone's BatchNorm); the bug is validating after the step and staying there.
        first = next(i for i, e in enumerate(unit.events) if e.kind == BACKWARD)
        frozen = {e.target for e in unit.events[:first] if e.kind == EVAL}
        for event in unit.events[first + 1 :]:
            if event.kind != EVAL or event.target in frozen:
                continue
            if event.target and not _FROZEN.search(event.target):
                yield ctx.report(
                    self,
                    event.node,
                    problem=f"`{event.target}.eval()` in a training loop that never calls "
                    f"`{event.target}.train()`",
                    fix="call `.train()` at the start of each epoch",
                )
                return


def _runs_model_without_grad(analysis, fn: cst.FunctionDef) -> bool:
    """Whether `fn` calls a model under no_grad, itself or through a helper of this file."""
    tracker = analysis.values
    for node in tracker.walk(fn.body):
        if not (isinstance(node, cst.Call) and tracker.grad_disabled(node, callers=False)):
            continue
        if _is_model(tracker, node.func):
            return True
        models = [a for a in node.args if _is_model(tracker, a.value)]
        if models and any(
            _calls_a_parameter(analysis, callee, depth=2)
            and not any(e.kind == EVAL for e in analysis.function_events(callee))
            for callee in analysis.callees(node)
        ):
            return True
    return False


def _is_model(tracker, expr: cst.BaseExpression) -> bool:
    """A model in training mode as far as the file tells: a parameter, `self.model`, or one
    built here. A model from any other call (a loading helper, `from_pretrained`) may
    already be in eval mode."""
    if isinstance(expr, cst.Attribute):
        text = tracker.code(expr).lower()
        return text.replace("self.", "").isidentifier() and ("model" in text or "net" in text)
    if not isinstance(expr, cst.Name):
        return False
    if tracker.names.bound_by(expr, cst.Param):
        return True
    return any(
        "module" in tracker.tags(value) or _built_by_zoo(tracker, value)
        for value in tracker.assigned_values(expr)
    )


def _built_by_zoo(tracker, value: cst.CSTNode) -> bool:
    while isinstance(value, cst.Call) and isinstance(value.func, cst.Attribute):
        if value.func.attr.value not in ("to", "cuda", "cpu", "half", "float"):
            break
        value = value.func.value
    if not isinstance(value, cst.Call):
        return False
    names = tracker.ctx.qualified_name_strings(value.func)
    return any(q.startswith(("torchvision.models.", "timm.create_model")) for q in names)


def _calls_a_parameter(analysis, fn: cst.FunctionDef, depth: int) -> bool:
    """Whether `fn` calls one of its parameters, itself or through helpers it passes it to."""
    tracker = analysis.values
    params = {p.name.value for p in fn.params.params}
    for node in tracker.walk(fn.body):
        if not isinstance(node, cst.Call):
            continue
        if isinstance(node.func, cst.Name) and node.func.value in params:
            return True
        passed = any(isinstance(a.value, cst.Name) and a.value.value in params for a in node.args)
        if (
            depth > 1
            and passed
            and any(
                callee is not fn and _calls_a_parameter(analysis, callee, depth - 1)
                for callee in analysis.callees(node)
            )
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

from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import ScriptRule
from nnlint.script import edits
from nnlint.script.loops import BACKWARD, analyze


class EvalWithoutNoGrad(ScriptRule):
    """An evaluation loop after `model.eval()` still records autograd graphs.

    ## What it does
    Flags a call of the model in a loop that follows `model.eval()` in the
    same function (or script), or in a function of the same file that the
    model is passed to after `model.eval()`, when nothing there calls
    `backward()` and the call is not under `torch.no_grad()`,
    `torch.inference_mode()` or `torch.set_grad_enabled(False)`, nor in a
    function that is only called under them.

    ## Why is this bad?
    `eval()` changes how layers behave, not whether autograd records: every
    batch still stores its activations for a backward that never comes.
    Evaluation then needs several times the memory and runs slower, and
    keeping any output alive keeps its whole graph.

    ## Example
    ```python
    model.eval()
    for x, y in val_loader:
        correct += (model(x).argmax(1) == y).sum().item()
    ```

    ## Use instead
    ```python
    model.eval()
    with torch.inference_mode():
        for x, y in val_loader:
            correct += (model(x).argmax(1) == y).sum().item()
    ```

    ## Known problems
    A function with a decorator nnlint cannot read (a project's wrapper it
    cannot find, a framework hook) may switch gradients off: it is left alone.
    Wrappers defined in the project (`@smart_inference_mode()` returning
    `torch.inference_mode()(fn)`) are followed and count as `no_grad`.
    Code that needs gradients of the inputs (saliency maps, adversarial
    examples) calls `requires_grad_` or `torch.autograd.grad`; such
    functions are left alone.

    ## Fix
    Unsafe: wraps the evaluation loop in `with torch.no_grad():` (in a file
    that has `import torch`). Code in the loop that needs gradients after all
    (a saliency map, an attack) would stop working.
    """

    needs = ("eval",)
    needs_all = ("torch",)
    code = "NN206"
    name = "eval-without-no-grad"
    message = "`{model}` is evaluated without `torch.no_grad()`, building graphs it never uses; wrap the loop in `torch.inference_mode()`"
    severity = Severity.WARNING

    invalid = (
        """
import torch

def evaluate(model, loader):
    model.eval()
    correct = 0
    for x, y in loader:
        correct += (model(x).argmax(1) == y).sum().item()
    return correct
""",
        """
import torch

def score(model, loader):
    total = 0
    for x, y in loader:
        total += (model(x).argmax(1) == y).sum().item()
    return total

model.eval()
print(score(model, val_loader))
""",
    )
    fixes = (
        (
            """
import torch

def evaluate(model, loader):
    model.eval()
    correct = 0
    for x, y in loader:
        # count the hits
        correct += (model(x).argmax(1) == y).sum().item()

    return correct
""",
            """
import torch

def evaluate(model, loader):
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in loader:
            # count the hits
            correct += (model(x).argmax(1) == y).sum().item()

    return correct
""",
        ),
    )
    valid = (
        """
import torch

def evaluate(model, loader):
    model.eval()
    correct = 0
    for x, y in loader:
        correct += (model(x).argmax(1) == y).sum().item()
    return correct

def saliency(model, x):
    model.eval()
    for sample in x:
        sample.requires_grad_(True)
        model(sample).max().backward()

with torch.inference_mode():
    evaluate(model, val_loader)
model.eval()
with torch.no_grad():
    for x, y in test_loader:
        model(x)
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        analysis = analyze(ctx)
        tracker = analysis.values
        reported: set[cst.CSTNode] = set()
        for call in tracker.calls:
            func = call.func
            if not (
                isinstance(func, cst.Attribute) and func.attr.value == "eval" and not call.args
            ):
                continue
            holder = tracker.enclosing(call, cst.FunctionDef)
            body = holder.body if holder is not None else ctx.module
            model = tracker.code(func.value)
            end = ctx.position(call).end
            start = (end.line, end.column)
            yield from self._in_callees(ctx, analysis, body, model, start, reported)
            events = analysis.function_events(holder) if holder else analysis.module_events()
            if any(e.kind == BACKWARD for e in events) or _needs_grad(tracker, body):
                continue
            if tracker.under_unknown_decorator(call):
                continue
            for node in tracker.walk(body, skip=(cst.FunctionDef, cst.ClassDef, cst.Lambda)):
                if (
                    isinstance(node, cst.Call)
                    and tracker.code(node.func) == model
                    and _after(ctx, node, start)
                    and tracker.enclosing(node, (cst.For, cst.While, cst.FunctionDef))
                    not in (None, holder)
                    and not tracker.grad_disabled(node)
                ):
                    if node not in reported:
                        reported.add(node)
                        yield ctx.report(
                            self, node, model=model, autofix=_no_grad(ctx, tracker, node)
                        )
                    break

    def _in_callees(self, ctx, analysis, body, model: str, start, reported) -> Iterator[Finding]:
        """`model.eval(); validate(model, loader)`: the loop is in the function called."""
        tracker = analysis.values
        for site in tracker.walk(body, skip=(cst.FunctionDef, cst.ClassDef, cst.Lambda)):
            if not isinstance(site, cst.Call) or not _after(ctx, site, start):
                continue
            if tracker.code(site.func) == f"{model}.train":
                break  # back in training mode: later calls are not evaluation
            for callee in analysis.callees(site):
                param = _bound_param(tracker, site, callee, model)
                if (
                    param is None
                    or any(e.kind == BACKWARD for e in analysis.function_events(callee))
                    or _needs_grad(tracker, callee.body)
                    or tracker.unknown_decorators(callee)
                ):
                    continue
                for node in tracker.walk(callee.body, skip=(cst.FunctionDef, cst.ClassDef)):
                    if (
                        isinstance(node, cst.Call)
                        and tracker.code(node.func) == param
                        and tracker.enclosing(node, (cst.For, cst.While, cst.FunctionDef))
                        is not callee
                        and not tracker.grad_disabled(node)
                    ):
                        if node not in reported:
                            reported.add(node)
                            autofix = _no_grad(ctx, tracker, node)
                            yield ctx.report(self, node, model=param, autofix=autofix)
                        break


def _no_grad(ctx, tracker, call: cst.Call):
    """The outermost loop around `call` (in its function) wrapped in `torch.no_grad()`."""
    if not edits.imports_plainly(ctx, "torch"):
        return None
    kinds = (cst.For, cst.While, cst.FunctionDef, cst.ClassDef)
    loop = tracker.enclosing(call, kinds)
    while isinstance(tracker.enclosing(loop, kinds), cst.For | cst.While):
        loop = tracker.enclosing(loop, kinds)
    if not isinstance(loop, cst.For | cst.While):
        return None
    wrap = edits.wrap_in_with(ctx, loop, "torch.no_grad()")
    return edits.fix("Wrap the loop in `torch.no_grad()`", wrap, safe=False)


def _bound_param(tracker, site: cst.Call, callee: cst.FunctionDef, model: str) -> str | None:
    """The parameter of `callee` that `site` passes `model` to."""
    params = [p.name.value for p in callee.params.params]
    for index, arg in enumerate(site.args):
        if tracker.code(arg.value) != model:
            continue
        if arg.keyword is not None:
            return arg.keyword.value if arg.keyword.value in params else None
        if index < len(params):
            return params[index]
    return None


def _after(ctx, node: cst.CSTNode, start: tuple[int, int]) -> bool:
    pos = ctx.position(node).start
    return (pos.line, pos.column) > start


def _needs_grad(tracker, body: cst.CSTNode) -> bool:
    for node in tracker.walk(body):
        if isinstance(node, cst.Name) and node.value in ("requires_grad_", "requires_grad"):
            return True
        if isinstance(node, cst.Call):
            names = tracker.ctx.qualified_name_strings(node.func)
            if "torch.autograd.grad" in names or any("set_grad_enabled" in q for q in names):
                return True
        if isinstance(node, cst.Attribute) and node.attr.value in (
            "requires_grad_",
            "requires_grad",
        ):
            return True
    return False

"""Whether code runs with autograd off: `torch.no_grad`, `inference_mode` and the project's wrappers.

A mixin of the value tracker (`Values`), kept apart because grad mode has its own
reach: `with` items and decorators, the project's own wrappers followed to their
definition in the file or in a local module (`nnlint.script.project`), and the
callers of a function up to two levels.
"""

from __future__ import annotations

import ast

import libcst as cst

from nnlint.script import project

_GRAD_OFF = (
    "torch.no_grad",
    "torch.inference_mode",
    "torch.autograd.no_grad",
    "torch.autograd.grad_mode.no_grad",
    "torch.autograd.grad_mode.inference_mode",
)

_GRAD_ON = (
    "torch.enable_grad",
    "torch.autograd.enable_grad",
    "torch.autograd.grad_mode.enable_grad",
)

_KNOWN_DECORATORS = (
    "builtins.",
    "functools.",
    "typing.",
    "abc.",
    "dataclasses.",
    "contextlib.",
    "torch.",
    "staticmethod",
    "classmethod",
    "property",
)


class GradMode:
    """Grad-mode questions about nodes of one file; mixed into `Values`."""

    def grad_disabled(self, node: cst.CSTNode, callers: bool | int = True) -> bool:
        """Whether `node` runs under `torch.no_grad()`/`inference_mode()`.

        A function whose every call in the file is under `no_grad` counts as
        under it too (two levels of callers: `evaluate` called by a benchmark
        helper that runs under `no_grad`).
        """
        depth = 2 if callers is True else int(callers)
        current = self.ctx.parent(node)
        while current is not None:
            if isinstance(current, cst.With) and any(
                self._disables_grad(item.item) for item in current.items
            ):
                return True
            if isinstance(current, cst.FunctionDef):
                if any(self._disables_grad(d.decorator) for d in current.decorators):
                    return True
                sites = self.callers(current) if depth else []
                if sites and all(self.grad_disabled(s, depth - 1) for s in sites):
                    return True
            current = self.ctx.parent(current)
        return False

    def grad_off_locally(self, node: cst.CSTNode) -> bool:
        """Whether the innermost grad-mode switch around `node` in its own function turns grad off.

        Unlike `grad_disabled` this stops at the function (callers are not asked) and
        honours `torch.enable_grad()` nested inside `no_grad`, so a yes is certain.
        """
        current = self.ctx.parent(node)
        while current is not None and not isinstance(current, cst.ClassDef | cst.Lambda):
            if isinstance(current, cst.With):
                items = [item.item for item in current.items]
            elif isinstance(current, cst.FunctionDef):
                items = [d.decorator for d in current.decorators]
            else:
                items = []
            if any(self._enables_grad(item) for item in items):
                return False
            if any(self._disables_grad(item) for item in items):
                return True
            if isinstance(current, cst.FunctionDef):
                return False
            current = self.ctx.parent(current)
        return False

    def _enables_grad(self, expr: cst.BaseExpression) -> bool:
        """Whether `expr` may turn grad on: `enable_grad()`, or a switch whose flag is not off."""
        func = expr.func if isinstance(expr, cst.Call) else expr
        names = self.ctx.qualified_name_strings(func)
        if any(q in _GRAD_ON for q in names):
            return True
        if not isinstance(expr, cst.Call) or not expr.args:
            return False
        first = expr.args[0].value
        if any(q.endswith("set_grad_enabled") for q in names):
            return not (isinstance(first, cst.Name) and first.value == "False")
        if any(q.endswith("inference_mode") for q in names):
            return not (isinstance(first, cst.Name) and first.value == "True")
        return False

    def callers(self, fn: cst.FunctionDef) -> list[cst.Call]:
        """Calls of `fn` in this file, by name (`fn(...)`, `self.fn(...)`)."""
        name = fn.name.value
        return [
            c
            for c in self.calls
            if (isinstance(c.func, cst.Name) and c.func.value == name)
            or (
                isinstance(c.func, cst.Attribute)
                and c.func.attr.value == name
                and self.code(c.func.value) in ("self", "cls")
            )
        ]

    def _disables_grad(self, expr: cst.BaseExpression) -> bool:
        func = expr.func if isinstance(expr, cst.Call) else expr
        names = self.ctx.qualified_name_strings(func)
        if not names and "import *" in self.ctx.source:
            # `torch` from a star import: its names do not resolve, the text still says it.
            names = {self.code(func)}
        if any(q in _GRAD_OFF for q in names):
            return True
        if isinstance(expr, cst.Call) and any(q.endswith("set_grad_enabled") for q in names):
            first = expr.args[0].value if expr.args else None
            return isinstance(first, cst.Name) and first.value == "False"
        return self._wraps_grad_off(func, names)

    def _wraps_grad_off(self, func: cst.BaseExpression, names: set[str]) -> bool:
        """A project's own decorator or context manager around `no_grad`/`inference_mode`.

        `@smart_inference_mode()` returns `torch.inference_mode()(fn)`: its definition,
        in this file or in a module this file imports from its project, names one of them.
        """
        if isinstance(func, cst.Name):
            for fn in self.functions.get(func.value, ()):
                if any(
                    isinstance(node, cst.Name | cst.Attribute)
                    and self.ctx.qualified_name_strings(node) & set(_GRAD_OFF)
                    for node in self.walk(fn.body)
                ):
                    return True
        for qname in names:
            if qname.startswith(("torch.", "builtins.")):
                continue
            fn = project.imported_function(qname, self.ctx.path, self.ctx.project_root)
            if fn is not None and any(
                project.dotted(node).endswith(("no_grad", "inference_mode"))
                for node in ast.walk(fn)
                if isinstance(node, ast.Attribute | ast.Name)
            ):
                return True
        return False

    def under_unknown_decorator(self, node: cst.CSTNode) -> bool:
        """Whether `node` runs inside a function whose decorators are not all known."""
        fn = self.enclosing(node, cst.FunctionDef)
        while fn is not None:
            if self.unknown_decorators(fn):
                return True
            fn = self.enclosing(fn, cst.FunctionDef)
        return False

    def unknown_decorators(self, fn: cst.FunctionDef) -> bool:
        """Whether a decorator of `fn` may change how it runs (grad mode included).

        Builtins, functools, typing, abc, dataclasses, contextlib and torch's own are known;
        anything else (a project wrapper we could not read, a framework hook) is not.
        """
        for decorator in fn.decorators:
            expr = decorator.decorator
            func = expr.func if isinstance(expr, cst.Call) else expr
            names = self.ctx.qualified_name_strings(func)
            if not names or not all(q.startswith(_KNOWN_DECORATORS) for q in names):
                return True
        return False


def only_in_training(tracker, node: cst.CSTNode, fn: cst.FunctionDef) -> bool:
    """Whether `node` sits, inside `fn`, under an `if`/ternary that tests `self.training`."""
    current = tracker.ctx.parent(node)
    while current is not None and current is not fn:
        if isinstance(current, cst.If | cst.IfExp) and "training" in tracker.code(current.test):
            return True
        current = tracker.ctx.parent(current)
    return False

"""Training-step events shared by the script rules.

For every `for`/`while` loop and every function of a file this lists, in
execution order, the calls that matter to a training step: `backward`,
optimizer `step`, gradient clearing, gradient clipping and unscaling, and
`train()`/`eval()` switches. Calls to functions defined in the same file are
followed, so `for batch in loader: train_step(model, batch, opt)` sees what
`train_step` does, and a closure passed to `optimizer.step(closure)` runs
before the step, as LBFGS runs it. Nested function bodies run only when called.

Each event records the branches it sits in (`if` bodies, `except` handlers),
so a rule can tell "always before the step" from "only when skipping a batch".
Optimizers are told apart from schedulers and other `.step()` receivers by the
value tracker (`torch.optim.*`), then by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import libcst as cst

from nnlint.script import project
from nnlint.script.context import ScriptContext
from nnlint.script.values import Values, values

BACKWARD, STEP, ZERO_GRAD = "backward", "step", "zero_grad"
GRAD_WRITE, CLIP, UNSCALE, EVAL, TRAIN = "grad_write", "clip", "unscale", "eval", "train"
SCHEDULER_STEP = "scheduler_step"
_CLIPS = ("clip_grad_norm_", "clip_grad_value_", "clip_grad_norm", "clip_grad_value")


@dataclass(frozen=True)
class Event:
    kind: str
    node: cst.CSTNode
    # Which optimizer a step or zero_grad acts on (its source text); None for a
    # clear that covers every parameter (`model.zero_grad()`, `p.grad = None`).
    target: str | None = None
    # The branches (if bodies, except handlers) between the unit and the event.
    conds: tuple[cst.CSTNode, ...] = ()
    # The loops between the unit and the event: they may run any number of times.
    loops: tuple[cst.CSTNode, ...] = ()
    # Whether a step runs a closure (LBFGS): the closure computes its own backward.
    closure: bool = False
    # A parameter updated by hand from its gradient (`p -= lr * p.grad`), no optimizer.
    manual: bool = False
    # Done inside a helper of another module: it may cover only some parameters.
    helper: bool = False

    def always_with(self, other: Event) -> bool:
        """Whether this event runs whenever `other` does (its branches are `other`'s or fewer)."""
        return other.conds[: len(self.conds)] == self.conds


@dataclass
class Loop:
    """A loop body or a function body: one training iteration, as far as the file tells."""

    node: cst.For | cst.While | cst.FunctionDef
    events: list[Event] = field(default_factory=list)

    def of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]

    @property
    def is_loop(self) -> bool:
        return isinstance(self.node, cst.For | cst.While)


class LoopAnalysis:
    """Loops and functions of one file and their events; build once per file with `analyze(ctx)`."""

    def __init__(self, ctx: ScriptContext) -> None:
        self.ctx = ctx
        self.values: Values = values(ctx)
        self._function_events: dict[cst.FunctionDef, list[Event]] = {}
        self._active: set[cst.FunctionDef] = set()
        self.units = [
            Loop(node, self._body_events(node))
            for node in self.values.walk(ctx.module)
            if isinstance(node, cst.For | cst.While | cst.FunctionDef)
        ]
        self.loops = [u for u in self.units if u.is_loop]

    def code(self, node: cst.CSTNode) -> str:
        return self.values.code(node)

    def _body_events(self, node: cst.For | cst.While | cst.FunctionDef) -> list[Event]:
        if isinstance(node, cst.FunctionDef):
            return self.function_events(node)
        return list(self._events(node.body, (), ()))

    def is_optimizer(self, expr: cst.BaseExpression) -> bool:
        tags = self.values.tags(expr)
        if "optimizer" in tags:
            return True
        if tags & {"scheduler", "scaler", "module"}:
            return False
        last = self.code(expr).rsplit(".", 1)[-1].lower()
        return "opt" in last and "sched" not in last

    def is_lr_scheduler(self, expr: cst.BaseExpression, call: cst.Call) -> bool:
        """A learning-rate scheduler: `torch.optim.lr_scheduler.*`, or named so and stepped bare.

        By name only `scheduler`/`lr_scheduler` stepped without arguments: a diffusion
        noise scheduler (`scheduler.step(noise_pred, t, x)`) is not one.
        """
        if "scheduler" in self.values.tags(expr):
            return True
        last = self.code(expr).rsplit(".", 1)[-1].lower()
        return not call.args and last in ("scheduler", "lr_scheduler", "lr_sched", "sched")

    def is_scaler(self, expr: cst.BaseExpression) -> bool:
        return (
            "scaler" in self.values.tags(expr)
            or "scaler" in self.code(expr).rsplit(".", 1)[-1].lower()
        )

    def _call_event(self, call: cst.Call) -> Event | None:
        func = call.func
        names = self.values.torch_names(func)
        if not names:
            helper = self._helper(func)
            if helper is not None and project.clears_grads(helper):
                return Event(ZERO_GRAD, call, helper=True)
            if helper is not None and project.clips_grads(helper):
                return Event(CLIP, call, helper=True)
            if helper is None and self._named_clear(func):
                return Event(ZERO_GRAD, call, helper=True)
        if _manual_update(call):
            return Event(STEP, call, manual=True)
        if any(q.endswith(_CLIPS) for q in names):
            return Event(CLIP, call)
        if "torch.autograd.backward" in names:
            return Event(BACKWARD, call)
        if not isinstance(func, cst.Attribute):
            return None
        attr, receiver = func.attr.value, func.value
        if attr in (BACKWARD, "manual_backward"):
            return Event(BACKWARD, call)
        if attr == "step":
            if self.is_scaler(receiver) and call.args:
                return Event(STEP, call, self.code(call.args[0].value))
            if self.is_optimizer(receiver):
                return Event(STEP, call, self.code(receiver), closure=bool(call.args))
            if self.is_lr_scheduler(receiver, call):
                return Event(SCHEDULER_STEP, call, self.code(receiver))
        if attr == "zero_grad":
            target = self.code(receiver) if self.is_optimizer(receiver) else None
            return Event(ZERO_GRAD, call, target)
        if attr in ("zero_", "detach_", "fill_") and _is_grad(receiver):
            return Event(ZERO_GRAD, call)
        if attr in _CLIPS:
            return Event(CLIP, call)
        if attr == "unscale_" and self.is_scaler(receiver):
            return Event(UNSCALE, call, self.code(call.args[0].value) if call.args else None)
        if attr == "eval" and not call.args:
            return Event(EVAL, call, self.values.receiver_root(receiver))
        if attr == "train":
            off = call.args and self.code(call.args[0].value) == "False"
            return Event(EVAL if off else TRAIN, call, self.values.receiver_root(receiver))
        if self.code(receiver) not in ("self", "cls") and any(
            e.kind == TRAIN
            for fn in self.values.functions.get(attr, ())
            for e in self.function_events(fn)
        ):
            # `probe.head_only_train()`, a method of this file that calls `.train()` inside.
            return Event(TRAIN, call, self.values.receiver_root(receiver))
        return None

    def _imported(self, func: cst.BaseExpression) -> bool:
        """Whether `func` is a name imported from another module (`zero_grad`, `utils.clip`)."""
        root = func
        while isinstance(root, cst.Attribute):
            root = root.value
        return self.ctx.names.bound_by(root, (cst.Import, cst.ImportFrom))

    def _helper(self, func: cst.BaseExpression):
        """The `def` in another module of the project that a call names, if it can be read."""
        if not self._imported(func):
            return None
        for qname in self.ctx.qualified_name_strings(func):
            fn = project.imported_function(qname, self.ctx.path, self.ctx.project_root)
            if fn is not None:
                return fn
        return None

    def _named_clear(self, func: cst.BaseExpression) -> bool:
        """An imported helper we cannot read whose name says it clears gradients."""
        if not self._imported(func):
            return False
        last = self.code(func).rsplit(".", 1)[-1].lower()
        named = "zero_grad" in last or last in ("clear_grad", "clear_grads")
        return named

    def callees(self, call: cst.Call) -> list[cst.FunctionDef]:
        func = call.func
        found: list[cst.FunctionDef] = []
        if isinstance(func, cst.Name):
            found = list(self.values.functions.get(func.value, ()))
        elif isinstance(func, cst.Attribute) and self.code(func.value) in ("self", "cls"):
            found = list(self.values.functions.get(func.attr.value, ()))
        # A function passed as an argument (an LBFGS closure) runs inside the call.
        for arg in call.args:
            if isinstance(arg.value, cst.Name):
                found.extend(self.values.functions.get(arg.value.value, ()))
        return found

    def function_events(self, fn: cst.FunctionDef) -> list[Event]:
        """A function's events, computed once; a recursive call contributes nothing."""
        if fn in self._function_events:
            return self._function_events[fn]
        if fn in self._active:
            return []
        self._active.add(fn)
        events = list(self._events(fn.body, (), ()))
        self._active.discard(fn)
        self._function_events[fn] = events
        return events

    def module_events(self) -> list[Event]:
        """Events of the module's top-level code (function bodies only where called)."""
        return self.ctx.shared("module-events", lambda _: self._events(self.ctx.module, (), ()))

    def _inline(self, fn: cst.FunctionDef, conds: tuple, loops: tuple) -> list[Event]:
        return [
            replace(e, conds=conds + e.conds, loops=loops + e.loops)
            for e in self.function_events(fn)
        ]

    def _events(self, node: cst.CSTNode, conds: tuple, loops: tuple) -> list[Event]:
        """Events under `node` in evaluation order: arguments before the call that uses them."""
        out: list[Event] = []
        if isinstance(node, cst.FunctionDef | cst.ClassDef | cst.Lambda):
            return out
        if isinstance(node, cst.ExceptHandler | cst.MatchCase):
            conds = (*conds, node)
        if isinstance(node, cst.For | cst.While):
            loops = (*loops, node)
        for child in self.values.children(node):
            branch = conds
            if isinstance(node, cst.If) and child is not node.test:
                branch = (*conds, child)
            elif isinstance(node, cst.Try) and child is node.orelse:
                branch = (*conds, child)
            out.extend(self._events(child, branch, loops))
        if (
            isinstance(node, cst.AugAssign)
            and isinstance(node.operator, cst.SubtractAssign | cst.AddAssign)
            and not _is_grad(node.target)
            and _reads_grad(node.value)
        ):
            out.append(Event(STEP, node, conds=conds, loops=loops, manual=True))
        if isinstance(node, cst.Assign) and any(_is_grad(t.target) for t in node.targets):
            cleared = isinstance(node.value, cst.Name) and node.value.value == "None"
            kind = ZERO_GRAD if cleared else GRAD_WRITE
            out.append(Event(kind, node, conds=conds, loops=loops))
        if isinstance(node, cst.Call):
            event = self._call_event(node)
            callees = self.callees(node)
            closures = [c for c in callees if _passed(node, c)]
            for fn in closures:
                out.extend(self._inline(fn, conds, loops))
            if event is not None:
                out.append(replace(event, conds=conds, loops=loops))
            for fn in callees:
                if fn not in closures:
                    out.extend(self._inline(fn, conds, loops))
        return out


def _passed(call: cst.Call, fn: cst.FunctionDef) -> bool:
    return any(isinstance(a.value, cst.Name) and a.value.value == fn.name.value for a in call.args)


def _reads_grad(expr: cst.CSTNode) -> bool:
    """Whether `expr` reads some tensor's `.grad`."""
    if isinstance(expr, cst.Attribute) and expr.attr.value == "grad":
        return True
    return any(_reads_grad(child) for child in expr.children)


def _manual_update(call: cst.Call) -> bool:
    """`p.data.add_(-lr * p.grad)`, `p.sub_(lr * p.grad)`: a parameter stepped by hand."""
    func = call.func
    return (
        isinstance(func, cst.Attribute)
        and func.attr.value in ("add_", "sub_")
        and not _is_grad(func.value)
        and not _reads_grad(func.value)
        and any(_reads_grad(arg.value) for arg in call.args)
    )


def _is_grad(expr: cst.BaseExpression) -> bool:
    if isinstance(expr, cst.Attribute) and expr.attr.value == "data":
        expr = expr.value
    return isinstance(expr, cst.Attribute) and expr.attr.value == "grad"


def analyze(ctx: ScriptContext) -> LoopAnalysis:
    """The loop analysis of `ctx`, computed once per file and shared by every rule."""
    return ctx.shared("loops", LoopAnalysis)

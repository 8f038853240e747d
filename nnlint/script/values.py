"""What a file's names and attributes hold, as far as its own assignments tell.

Qualified names (`nnlint.script.names`) resolve imports (`from torch import nn as tnn`)
but not values. This tracker follows assignments through the file's scopes so that
`crit = nn.CrossEntropyLoss()` then `crit(out, y)`, `probs = out.softmax(1)` then
`crit(probs, y)`, and `self.criterion = ...` set in `__init__` and used in another
method all resolve. A value is described by a set of tags:

* built objects: `optimizer`, `scheduler`, `scaler`, `module`, and loss or
  activation callables (`ce_fn`, `nll_fn`, `bce_logits_fn`, `loss_fn`,
  `softmax_fn`, `log_softmax_fn`, `sigmoid_fn`);
* tensors: `loss` (still carries its graph), `probs` (softmax output),
  `log_probs`, `sigmoid`.

Nothing here imports torch: everything is read from the source text.
"""

from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from nnlint.script.context import ScriptContext
from nnlint.script.gradmode import GradMode

TENSOR_TAGS = frozenset({"loss", "probs", "log_probs", "sigmoid"})
# Methods that keep what a tensor is (a loss stays a loss after `.mean()`).
_KEEPING = frozenset(
    "mean sum float double half to cuda view reshape squeeze unsqueeze clone contiguous "
    "flatten cpu type".split()
)
# Methods that return the module they are called on (`Net().to(device)` is still the net).
_MOVING = frozenset("to cuda cpu half float double bfloat16 train eval requires_grad_".split())
_MODULE_TAGS = frozenset({"module", "softmax_module", "sigmoid_module"})
# Tags that say what kind of output or loss a value is, on which rules claim a bug.
_KIND_TAGS = frozenset(
    {"probs", "log_probs", "sigmoid", "softmax_module", "sigmoid_module"}
    | {"ce_fn", "nll_fn", "bce_logits_fn", "softmax_fn", "log_softmax_fn", "sigmoid_fn"}
)
_FUNCTION_TAGS = {
    "softmax": "probs",
    "log_softmax": "log_probs",
    "sigmoid": "sigmoid",
    "expit": "sigmoid",
    "log": "log_probs",
}
_CLASS_TAGS = {
    "CrossEntropyLoss": "ce_fn",
    "NLLLoss": "nll_fn",
    "BCEWithLogitsLoss": "bce_logits_fn",
    "Softmax": "softmax_fn",
    "LogSoftmax": "log_softmax_fn",
    "Sigmoid": "sigmoid_fn",
}
_CALL_RESULT = {
    "ce_fn": "loss",
    "nll_fn": "loss",
    "bce_logits_fn": "loss",
    "loss_fn": "loss",
    "softmax_fn": "probs",
    "log_softmax_fn": "log_probs",
    "sigmoid_fn": "sigmoid",
}
LOSS_FUNCTIONS = {
    "cross_entropy": "ce_fn",
    "nll_loss": "nll_fn",
    "binary_cross_entropy_with_logits": "bce_logits_fn",
}


class Values(GradMode):
    """The value tracker of one file; get it with `values(ctx)`."""

    def __init__(self, ctx: ScriptContext) -> None:
        self.ctx = ctx
        self.names = ctx.names
        self.tree = ctx.tree
        self.functions: dict[str, list[cst.FunctionDef]] = {}
        self.classes: dict[str, cst.ClassDef] = {}
        self.calls: list[cst.Call] = []
        for node in self.walk(ctx.module):
            if isinstance(node, cst.FunctionDef):
                self.functions.setdefault(node.name.value, []).append(node)
            elif isinstance(node, cst.ClassDef):
                self.classes[node.name.value] = node
            elif isinstance(node, cst.Call):
                self.calls.append(node)
        self.backward_names = self._backward_names()
        self._memo: dict[cst.CSTNode, frozenset[str]] = {}
        self._attrs: dict[tuple[cst.ClassDef, str], list[cst.BaseExpression]] = {}
        self._feeds: set[str] | None = None

    def children(self, node: cst.CSTNode) -> list[cst.CSTNode]:
        """Syntax children in source order (no whitespace or punctuation)."""
        return self.tree.kids(node)

    def walk(self, node: cst.CSTNode, skip: tuple[type, ...] = ()) -> Iterator[cst.CSTNode]:
        """Every node under `node`, itself first, in source order; `skip` types are not entered."""
        return self.tree.walk(node, skip)

    def code(self, node: cst.CSTNode) -> str:
        return self.ctx.module.code_for_node(node).strip()

    def torch_names(self, node: cst.CSTNode) -> set[str]:
        """Qualified names of `node` inside torch (and the Lightning packages)."""
        return {
            q
            for q in self.ctx.qualified_name_strings(node)
            if q.startswith(("torch.", "lightning.", "pytorch_lightning."))
        }

    def tags(self, expr: cst.CSTNode) -> frozenset[str]:
        """What `expr` evaluates to; empty when unknown."""
        if expr in self._memo:
            return self._memo[expr]
        self._memo[expr] = frozenset()  # breaks cycles such as `x = x + 1`
        found = frozenset(self._tags(expr))
        self._memo[expr] = found
        return found

    def _tags(self, expr: cst.CSTNode) -> set[str]:
        if isinstance(expr, cst.Call):
            return self._call_tags(expr)
        if isinstance(expr, cst.Name):
            found: set[str] = set()
            for value in self.assigned_values(expr):
                found |= self.tags(value)
            if expr.value in self.backward_names:
                found.add("loss")
            return found
        if isinstance(expr, cst.Attribute):
            if isinstance(expr.value, cst.Name) and expr.value.value == "self":
                found = set()
                for value in self.self_attribute_values(expr):
                    found |= self.tags(value)
                return found
            return {"loss"} if expr.attr.value == "loss" else set()
        if isinstance(expr, cst.Subscript):  # `probs[mask]` is still probabilities
            return set(self.tags(expr.value) & TENSOR_TAGS)
        if isinstance(expr, cst.BinaryOperation):
            return (self.tags(expr.left) | self.tags(expr.right)) & {"loss"}
        if isinstance(expr, cst.UnaryOperation | cst.Await):
            return set(self.tags(expr.expression)) & {"loss"}
        if isinstance(expr, cst.IfExp):
            # What a value *is* (probabilities, a with-logits loss) holds only when both
            # branches agree: which one runs is not in the source.
            body, orelse = self.tags(expr.body), self.tags(expr.orelse)
            return set((body & orelse) | ((body | orelse) - _KIND_TAGS))
        if isinstance(expr, cst.AugAssign):
            return set(self.tags(expr.target) | self.tags(expr.value)) & {"loss"}
        return set()

    def _call_tags(self, call: cst.Call) -> set[str]:
        func = call.func
        names = self.torch_names(func)
        for qname in names:
            last = qname.rsplit(".", 1)[-1]
            if qname.startswith("torch.optim."):
                return {"scheduler" if ".lr_scheduler." in qname else "optimizer"}
            if last == "GradScaler":
                return {"scaler"}
            if last in _CLASS_TAGS:
                return {_CLASS_TAGS[last]}
            if last.endswith("Loss"):
                return {"loss_fn"}
            if last in LOSS_FUNCTIONS or last.endswith(("_loss", "_entropy")):
                return {"loss"}
            if last in _FUNCTION_TAGS:
                return {_FUNCTION_TAGS[last]}
            if last == "Sequential":
                return {"module", *self._sequential_tail(call)}
            if last[:1].isupper() and qname.startswith("torch.nn."):
                return {"module"}
        if isinstance(func, cst.Attribute) and not names:
            method = func.attr.value
            receiver = self.tags(func.value)
            if method in _FUNCTION_TAGS:
                return {_FUNCTION_TAGS[method]}
            if method in _KEEPING or method in _MOVING:
                keep = (TENSOR_TAGS if method in _KEEPING else set()) | (
                    _MODULE_TAGS if method in _MOVING else set()
                )
                return set(receiver & keep)
            if method in ("item", "tolist", "detach", "numpy"):
                return set()
        callee = self.tags(func)
        found = {_CALL_RESULT[t] for t in callee if t in _CALL_RESULT}
        if callee & _MODULE_TAGS:
            found.add("output")
            found |= {"probs"} if "softmax_module" in callee else set()
            found |= {"sigmoid"} if "sigmoid_module" in callee else set()
        if isinstance(func, cst.Name):
            for fn in self.functions.get(func.value, ()):
                found |= self._returned(fn)
            if func.value in self.classes and self._is_module_class(self.classes[func.value]):
                found |= {"module", *self._forward_tags(self.classes[func.value])}
        if not found and not names:
            last = self.code(func).rsplit(".", 1)[-1].lower()
            if "loss" in last or "criterion" in last:
                found.add("loss")
        return found

    def _sequential_tail(self, call: cst.Call) -> set[str]:
        positional = [a for a in call.args if a.keyword is None and a.star == ""]
        if positional and "softmax_fn" in self.tags(positional[-1].value):
            return {"softmax_module"}
        return set()

    def _is_module_class(self, cls: cst.ClassDef) -> bool:
        return any(
            any(
                q.startswith("torch.nn.") or q.startswith(("lightning.", "pytorch_lightning."))
                for q in self.ctx.qualified_name_strings(base.value)
            )
            for base in cls.bases
        )

    def _forward_tags(self, cls: cst.ClassDef) -> set[str]:
        """`softmax_module` when every `return` of the class's `forward` is a softmax."""
        forwards = [
            node
            for node in cls.body.body
            if isinstance(node, cst.FunctionDef) and node.name.value == "forward"
        ]
        returns = [
            self.tags(node.value)
            for fn in forwards
            for node in self.walk(fn.body, skip=(cst.FunctionDef, cst.ClassDef, cst.Lambda))
            if isinstance(node, cst.Return) and node.value is not None
        ]
        if not returns:
            return set()
        always = frozenset.intersection(*returns)
        return {
            tag
            for tensor, tag in (("probs", "softmax_module"), ("sigmoid", "sigmoid_module"))
            if tensor in always
        }

    def _returned(self, fn: cst.FunctionDef) -> set[str]:
        found: set[str] = set()
        for node in self.walk(fn.body):
            if isinstance(node, cst.Return) and node.value is not None:
                found |= self.tags(node.value)
        return found & TENSOR_TAGS

    def assigned_values(self, name: cst.Name) -> list[cst.CSTNode]:
        """The values last assigned to `name` before it is read (all of them when unsure)."""
        latest = self.names.latest(name)
        assignments = [latest] if latest is not None else self.names.referents(name)
        values = []
        for assignment in assignments:
            value = self._value_of(assignment.node)
            if value is not None:
                values.append(value)
        return values

    def _value_of(self, target: cst.CSTNode) -> cst.CSTNode | None:
        parent = self.ctx.parent(target)
        if isinstance(parent, cst.AssignTarget):
            return self.ctx.parent(parent).value
        if isinstance(parent, cst.AnnAssign | cst.NamedExpr) and parent.target is target:
            return parent.value
        if isinstance(parent, cst.AugAssign):
            return parent
        if isinstance(parent, cst.Element):
            seq = self.ctx.parent(parent)
            holder = self.ctx.parent(seq)
            if isinstance(holder, cst.AssignTarget):
                value = self.ctx.parent(holder).value
                if isinstance(value, cst.Tuple | cst.List) and len(value.elements) == len(
                    seq.elements
                ):
                    return value.elements[seq.elements.index(parent)].value
        return None

    def self_attribute_values(self, attr: cst.Attribute) -> list[cst.BaseExpression]:
        """Values assigned to `self.<attr>` anywhere in the class around `attr`."""
        cls = self.enclosing(attr, cst.ClassDef)
        if cls is None:
            return []
        key = (cls, attr.attr.value)
        if key not in self._attrs:
            self._attrs[key] = [
                node.value
                for node in self.walk(cls.body)
                if isinstance(node, cst.Assign)
                for target in node.targets
                if isinstance(target.target, cst.Attribute)
                and isinstance(target.target.value, cst.Name)
                and target.target.value.value == "self"
                and target.target.attr.value == attr.attr.value
            ]
        return self._attrs[key]

    def enclosing(self, node: cst.CSTNode, kind: type | tuple[type, ...]) -> cst.CSTNode | None:
        """The nearest ancestor of `node` of type `kind`."""
        current = self.ctx.parent(node)
        while current is not None and not isinstance(current, kind):
            current = self.ctx.parent(current)
        return current

    def _backward_names(self) -> set[str]:
        """Names whose value reaches a `.backward()`: they are known to carry a graph."""
        found: set[str] = set()
        for call in self.calls:
            func = call.func
            if isinstance(func, cst.Attribute) and func.attr.value == "backward":
                roots = [func.value, *(a.value for a in call.args[:1])]
                for root in roots:
                    for node in self.walk(root):
                        if isinstance(node, cst.Name) and node.value != "self":
                            found.add(node.value)
        return found

    def feeds_backward(self) -> set[str]:
        """Names whose value flows, through assignments, into a `.backward()`."""
        if self._feeds is None:
            found = set(self.backward_names)
            assigns = [n for n in self.walk(self.ctx.module) if isinstance(n, cst.Assign)]
            grew = True
            while grew:
                grew = False
                for node in assigns:
                    targets = {self.code(t.target) for t in node.targets}
                    if not targets & found:
                        continue
                    new = {
                        n.value for n in self.walk(node.value) if isinstance(n, cst.Name)
                    } - found
                    if new:
                        found |= new
                        grew = True
            self._feeds = found
        return self._feeds

    def receiver_root(self, expr: cst.BaseExpression) -> str:
        """`model` for `model`, `self.model` for `self.model.module`: the object, not its parts."""
        text = self.code(expr)
        return text if not text.startswith("self.") else ".".join(text.split(".")[:2])


def values(ctx: ScriptContext) -> Values:
    """The value tracker of `ctx`, built once per file and shared by every rule."""
    return ctx.shared("values", Values)

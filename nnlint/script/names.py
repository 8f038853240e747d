"""Which assignment or import each name of a file reads, in time linear in the file.

libcst's `ScopeProvider` answers the same questions, but it gives every read
of a name the set of all earlier assignments to it in its scope, and answers
`get_qualified_names_for` by going through that set: a name assigned once per
repeated block (`loss = ...` in a flat script of 3,000 training loops) costs
time and memory quadratic in the file. Here the assignments of each name in
each scope are kept once, sorted by source order, with running unions of what
they name and of their kinds, so a read needs one binary search.

The scoping is Python's (and libcst's): module, class, function, lambda and
comprehension scopes; class bodies invisible from the functions inside them;
`global` and `nonlocal`; decorators, defaults, annotations, base classes and a
comprehension's first iterable evaluated in the enclosing scope; the walrus
binding in the nearest scope that is not a comprehension. A read that no
earlier assignment of its own scope reaches sees every assignment of the
enclosing scope that holds the name, then the builtins. Qualified names follow
libcst's: `torch.nn.Linear` through `from torch import nn`, `.mod.fn` for a
relative import, `f.<locals>.x` for a local and `builtins.len`.
"""

from __future__ import annotations

import builtins
from bisect import bisect_right
from collections.abc import Iterator, Sequence

import libcst as cst
from libcst.metadata import QualifiedName, QualifiedNameSource

from nnlint.script.cstwalk import Tree

_BUILTINS = frozenset(dir(builtins))
_COMPREHENSIONS = (cst.ListComp, cst.SetComp, cst.GeneratorExp, cst.DictComp)
_SIMPLE = (cst.Assign, cst.AnnAssign, cst.AugAssign)
_NONE: frozenset = frozenset()
# The node types `Names._enter` handles.
_BINDERS = frozenset(
    {
        cst.FunctionDef,
        cst.Lambda,
        cst.ClassDef,
        *_COMPREHENSIONS,
        cst.Global,
        cst.Nonlocal,
        cst.Import,
        cst.ImportFrom,
        *_SIMPLE,
        cst.NamedExpr,
        cst.For,
        cst.CompFor,
        cst.WithItem,
        cst.ExceptHandler,
        cst.ExceptStarHandler,
        cst.MatchAs,
        cst.MatchStar,
        cst.MatchMapping,
    }
)


class Binding:
    """One assignment of a name: `node` is the target `Name`, or the `Param`,
    `def`, `class`, `import` or `from ... import` statement that binds it."""

    __slots__ = ("name", "scope", "node", "order", "effective", "qualified")

    def __init__(self, name: str, scope: Scope, node: cst.CSTNode, order: int, effective: int):
        self.name = name
        self.scope = scope
        self.node = node
        # Where the binding is: its node's pre-order number, and where it takes
        # effect (after the whole statement for `x = f(x)`, so that read sees the old x).
        self.order = order
        self.effective = effective
        self.qualified: QualifiedName = QualifiedName(scope.local(name), QualifiedNameSource.LOCAL)


class _Bound:
    """The bindings of one name in one scope, sorted, with running unions."""

    __slots__ = ("bindings", "orders", "qualified", "kinds")

    def __init__(self, bindings: list[Binding]) -> None:
        bindings.sort(key=lambda b: b.order)
        self.bindings = bindings
        self.orders = [b.order for b in bindings]
        # Running unions: a new frozenset only where the union grows, so memory stays linear.
        self.qualified: list[frozenset[QualifiedName]] = []
        self.kinds: list[frozenset[type]] = []
        names: frozenset[QualifiedName] = _NONE
        kinds: frozenset[type] = _NONE
        for binding in bindings:
            if binding.qualified not in names:
                names = names | {binding.qualified}
            if type(binding.node) not in kinds:
                kinds = kinds | {type(binding.node)}
            self.qualified.append(names)
            self.kinds.append(kinds)


class Scope:
    """A module, class, function, lambda or comprehension scope."""

    def __init__(self, kind: str, parent: Scope | None, prefix: str) -> None:
        self.kind = kind
        self.parent = parent
        self.prefix = prefix  # of the local qualified names: `C.f.<locals>`
        self.declared: dict[str, str] = {}  # name -> "global" or "nonlocal"
        self.names: set[str] = set()  # bound by code in this scope, before global/nonlocal
        self.pending: list[Binding] = []
        self.bound: dict[str, _Bound] = {}

    def local(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def visible(self) -> Iterator[Scope]:
        """The enclosing scopes a read here falls back to, innermost first (no class bodies)."""
        scope = self.parent
        while scope is not None:
            if scope.kind != "class":
                yield scope
            scope = scope.parent


class Names:
    """Scopes and bindings of one module; build once per file (`ScriptContext.names`)."""

    def __init__(self, module: cst.Module, tree: Tree) -> None:
        self.tree = tree
        self.module_scope = Scope("module", None, "")
        self.scopes: dict[cst.CSTNode, Scope] = {}
        self._targets: dict[cst.Name, Binding] = {}  # assignment targets: they name themselves
        self._all: list[Scope] = [self.module_scope]
        self._walk(module)
        grouped: dict[Scope, dict[str, list[Binding]]] = {scope: {} for scope in self._all}
        for scope in self._all:
            for binding in scope.pending:
                owner = self._owner(scope, binding.name)
                if owner is not scope:
                    binding.scope = owner
                    binding.qualified = QualifiedName(
                        owner.local(binding.name), binding.qualified.source
                    )
                grouped[owner].setdefault(binding.name, []).append(binding)
            scope.pending = []
        for scope, found in grouped.items():
            scope.bound = {name: _Bound(bindings) for name, bindings in found.items()}

    # Questions -----------------------------------------------------------

    def scope(self, node: cst.CSTNode) -> Scope | None:
        return self.scopes.get(node)

    def qualified(self, node: cst.CSTNode) -> frozenset[QualifiedName]:
        """What `node` (a name, attribute chain, call, subscript or decorator) names."""
        parts: list[str] = []
        root: cst.CSTNode | None = node
        while root is not None and not isinstance(root, cst.Name):
            if isinstance(root, cst.Attribute):
                parts.append(root.attr.value)
                root = root.value
            elif isinstance(root, cst.Call):
                root = root.func
            elif isinstance(root, cst.Subscript):
                root = root.value
            elif isinstance(root, cst.Decorator):
                root = root.decorator
            elif isinstance(root, cst.FunctionDef | cst.ClassDef):
                root = root.name
            else:
                root = None
        if root is None or root not in self.scopes:
            return _NONE
        found = self._name_qualified(root)
        if not parts or not found:
            return found
        rest = "." + ".".join(reversed(parts))
        return frozenset(QualifiedName(q.name + rest, q.source) for q in found)

    def latest(self, name: cst.Name) -> Binding | None:
        """The last assignment of `name`'s own scope to take effect before this read."""
        scope = self.scopes.get(name)
        bound = scope.bound.get(name.value) if scope is not None else None
        if bound is None or name.value in scope.declared:
            return None
        here = self.tree.order(name)
        index = bisect_right(bound.orders, here) - 1
        while index >= 0 and bound.bindings[index].effective >= here:
            index -= 1
        return bound.bindings[index] if index >= 0 else None

    def referents(self, name: cst.Name) -> Sequence[Binding]:
        """Every assignment this read may see (libcst's `Access.referents`, builtins left out)."""
        bound, count = self._reach(name)
        return bound.bindings[:count] if bound is not None else ()

    def bound_by(self, node: cst.CSTNode, kinds: type | tuple[type, ...]) -> bool:
        """Whether some assignment this read may see is a node of `kinds` (a `Param`, an import)."""
        if not isinstance(node, cst.Name):
            return False
        bound, count = self._reach(node)
        return bound is not None and any(issubclass(kind, kinds) for kind in bound.kinds[count - 1])

    def _name_qualified(self, name: cst.Name) -> frozenset[QualifiedName]:
        target = self._targets.get(name)
        if target is not None:
            return frozenset({target.qualified})
        bound, count = self._reach(name)
        if bound is not None:
            return bound.qualified[count - 1]
        if name.value in _BUILTINS:
            return frozenset({QualifiedName(f"builtins.{name.value}", QualifiedNameSource.BUILTIN)})
        return _NONE

    def _reach(self, name: cst.Name) -> tuple[_Bound | None, int]:
        """The bindings a read may see: the first `count` of `bound`, or none (a builtin)."""
        scope = self.scopes.get(name)
        if scope is None:
            return None, 0
        text = name.value
        owner = self._owner(scope, text)
        bound = owner.bound.get(text)
        if bound is not None and owner is scope and scope.kind != "comprehension":
            count = bisect_right(bound.orders, self.tree.order(name))
            if count:
                return bound, count
        elif bound is not None:
            # Another scope's names, or a comprehension's, whose element is
            # evaluated after its `for` although it comes first in the source.
            return bound, len(bound.bindings)
        for outer in scope.visible():
            bound = self._owner(outer, text).bound.get(text)
            if bound is not None:
                return bound, len(bound.bindings)
        return None, 0

    def _owner(self, scope: Scope, name: str) -> Scope:
        """The scope that holds `name` for code in `scope`, after `global`/`nonlocal`."""
        declared = scope.declared.get(name)
        if declared == "global":
            return self.module_scope
        if declared == "nonlocal":
            for outer in scope.visible():
                if outer.kind != "module" and (
                    name in outer.names or outer.declared.get(name) == "nonlocal"
                ):
                    return self._owner(outer, name)
        return scope

    # Building --------------------------------------------------------------

    def _new(self, kind: str, parent: Scope, name: str | None) -> Scope:
        if kind == "class":
            label = str(name)
        elif kind == "comprehension":
            label = "<comprehension>"
        else:
            label = f"{name}.<locals>" if name else "<locals>"
        scope = Scope(kind, parent, f"{parent.prefix}.{label}" if parent.prefix else label)
        self._all.append(scope)
        return scope

    def _bind(
        self, scope: Scope, name: str, node: cst.CSTNode, effective: int | None = None
    ) -> Binding:
        order = self.tree.orders.get(node, -1)
        binding = Binding(name, scope, node, order, order if effective is None else effective)
        scope.pending.append(binding)
        scope.names.add(name)
        if isinstance(node, cst.Name):
            self._targets[node] = binding
        return binding

    def _bind_targets(self, scope: Scope, target: cst.CSTNode, effective: int | None) -> None:
        stack = [target]
        while stack:
            node = stack.pop()
            if isinstance(node, cst.Name):
                self._bind(scope, node.value, node, effective)
            elif isinstance(node, cst.Tuple | cst.List):
                stack.extend(e.value for e in node.elements)
            elif isinstance(node, cst.StarredElement):
                stack.append(node.value)

    def _walk(self, module: cst.Module) -> None:
        # `moved` holds the nodes that run in another scope than their parent's
        # (a function's body, a comprehension's first iterable), set by `_enter`.
        self._moved: dict[cst.CSTNode, Scope] = {}
        self._unscoped: set[cst.CSTNode] = set()
        stack: list[tuple[cst.CSTNode, Scope]] = [(module, self.module_scope)]
        while stack:
            node, scope = stack.pop()
            scope = self._moved.pop(node, scope)
            if node in self._unscoped:
                continue
            self.scopes[node] = scope
            kind = type(node)
            # A lookup by exact type: isinstance against libcst's abstract bases is slow.
            if kind in _BINDERS:
                self._enter(node, scope)
                if kind is cst.Import or kind is cst.ImportFrom:
                    continue  # the names in an import statement are not reads (libcst agrees)
            elif kind is cst.Attribute:
                # `.attr` and `keyword=` are not names of any scope: `model.eval` reads no `eval`.
                self._unscoped.add(node.attr)
            elif kind is cst.Arg and node.keyword is not None:
                self._unscoped.add(node.keyword)
            stack.extend((kid, scope) for kid in reversed(self.tree.kids(node)))

    def _enter(self, node: cst.CSTNode, scope: Scope) -> None:
        """Record what `node` binds, and which of its parts run in a new scope."""
        if isinstance(node, cst.FunctionDef | cst.Lambda):
            name = node.name.value if isinstance(node, cst.FunctionDef) else None
            if name is not None:
                self._bind(scope, name, node)
            inner = self._new("function", scope, name)
            params = node.params
            every = [*params.posonly_params, *params.params, *params.kwonly_params]
            every += [p for p in (params.star_arg, params.star_kwarg) if isinstance(p, cst.Param)]
            for param in every:
                self._bind(inner, param.name.value, param)
                self._moved[param.name] = inner
            self._moved[node.body] = inner
        elif isinstance(node, cst.ClassDef):
            self._bind(scope, node.name.value, node)
            self._moved[node.body] = self._new("class", scope, node.name.value)
        elif isinstance(node, _COMPREHENSIONS):
            inner = self._new("comprehension", scope, None)
            for kid in self.tree.kids(node):
                self._moved[kid] = inner
            # The first iterable is evaluated before the comprehension's scope exists.
            self._moved[node.for_in.iter] = scope
        elif isinstance(node, cst.Global | cst.Nonlocal):
            kind = "global" if isinstance(node, cst.Global) else "nonlocal"
            for item in node.names:
                scope.declared[item.name.value] = kind
        elif isinstance(node, cst.Import):
            for alias in node.names:
                dotted = _dotted(alias.name)
                if alias.asname is not None:
                    self._import(scope, node, _dotted(alias.asname.name), dotted)
                else:
                    top = dotted.split(".")[0]
                    self._import(scope, node, top, top)
        elif isinstance(node, cst.ImportFrom) and not isinstance(node.names, cst.ImportStar):
            base = "." * len(node.relative) + (_dotted(node.module) if node.module else "")
            joint = base if base.endswith(".") else base + "."
            for alias in node.names:
                dotted = _dotted(alias.name)
                name = _dotted(alias.asname.name) if alias.asname is not None else dotted
                self._import(scope, node, name, joint + dotted)
        elif isinstance(node, _SIMPLE):
            end = self.tree.end(node)
            for target in node.targets if isinstance(node, cst.Assign) else (node,):
                self._bind_targets(scope, target.target, end)
        elif isinstance(node, cst.NamedExpr):
            owner = scope
            while owner.kind == "comprehension" and owner.parent is not None:
                owner = owner.parent
            self._bind_targets(owner, node.target, self.tree.end(node))
        elif isinstance(node, cst.For | cst.CompFor):
            self._bind_targets(scope, node.target, None)
        elif isinstance(node, cst.WithItem | cst.ExceptHandler | cst.ExceptStarHandler):
            asname = node.asname if isinstance(node, cst.WithItem) else node.name
            if asname is not None:
                self._bind_targets(scope, asname.name, None)
        elif isinstance(node, cst.MatchAs | cst.MatchStar) and node.name is not None:
            self._bind(scope, node.name.value, node.name)
        elif isinstance(node, cst.MatchMapping) and node.rest is not None:
            self._bind(scope, node.rest.value, node.rest)

    def _import(self, scope: Scope, node: cst.CSTNode, name: str, target: str) -> None:
        if name:
            binding = self._bind(scope, name, node)
            binding.qualified = QualifiedName(target, QualifiedNameSource.IMPORT)


def _dotted(node: cst.CSTNode) -> str:
    if isinstance(node, cst.Attribute):
        return f"{_dotted(node.value)}.{node.attr.value}"
    return node.value if isinstance(node, cst.Name) else ""

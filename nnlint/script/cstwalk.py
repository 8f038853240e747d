"""Children, parents and source order of a libcst tree, from one cheap pass.

libcst hands out children through its visitor protocol: `node.children`,
`ParentNodeProvider` and every `CSTVisitor` rebuild each node they pass through
(`_visit_and_replace_children`), which on a large file costs more than parsing
it. The script rules only read the tree, so this module reads the nodes' fields
directly: `FIELDS` (generated from the installed libcst, see `_cstfields.py`)
names, for every node class, the fields that hold syntax, in the order libcst
visits them, which is source order. Whitespace, comments and punctuation are
left out: no rule looks at them.

`Tree(module)` indexes one module: `children(node)`, `parent(node)`, and
`order(node)`/`end(node)`, the pre-order number of a node and of the last node
inside it, so "does `a` come before `b`" needs no positions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import libcst as cst

from nnlint.script._cstfields import FIELDS

# Field names that never hold syntax a rule reads; used for classes missing from FIELDS.
SKIPPED = frozenset(
    """leading_lines lines_after_decorators lpar rpar comma semicolon equal dot colon
    first_colon second_colon lbrace lbracket rbrace rbracket header footer
    trailing_whitespace trailing_comma newline empty_lines comment first_line last_line
    leading_whitespace asynchronous posonly_ind relative""".split()
)

_BY_TYPE: dict[type, tuple[str, ...]] = {}


def syntax_fields(kind: type) -> tuple[str, ...]:
    """The syntax-holding fields of a node class, in source order."""
    found = _BY_TYPE.get(kind)
    if found is None:
        found = FIELDS.get(kind.__name__) if getattr(cst, kind.__name__, None) is kind else None
        if found is None:  # a class this libcst version added: its dataclass order
            found = tuple(
                f.name
                for f in dataclasses.fields(kind)
                if f.name not in SKIPPED and not f.name.startswith("whitespace")
            )
        _BY_TYPE[kind] = found
    return found


def is_name(node: cst.CSTNode | None, value: str) -> bool:
    """Whether `node` is the bare name `value` (`True`, `shuffle`): `m.Name(value)` without
    importing `libcst.matchers`, which alone takes longer than parsing a small file."""
    return isinstance(node, cst.Name) and node.value == value


def node_children(node: cst.CSTNode) -> list[cst.CSTNode]:
    """The syntax children of `node`, in source order, without visiting it."""
    out: list[cst.CSTNode] = []
    for name in syntax_fields(type(node)):
        value = getattr(node, name, None)
        if isinstance(value, cst.CSTNode):
            out.append(value)
        elif isinstance(value, tuple | list):
            out.extend(v for v in value if isinstance(v, cst.CSTNode))
    return out


class Tree:
    """Children, parent and pre-order number of every syntax node of one module."""

    def __init__(self, module: cst.Module) -> None:
        self.children: dict[cst.CSTNode, list[cst.CSTNode]] = {}
        self.parents: dict[cst.CSTNode, cst.CSTNode] = {}
        self.orders: dict[cst.CSTNode, int] = {}
        nodes: list[cst.CSTNode] = []
        stack = [module]
        while stack:
            node = stack.pop()
            self.orders[node] = len(nodes)
            nodes.append(node)
            kids = node_children(node)
            self.children[node] = kids
            for kid in kids:
                self.parents[kid] = node
            stack.extend(reversed(kids))
        # The last pre-order number inside each node: its own when it is a leaf.
        ends = list(range(len(nodes)))
        parents = self.parents
        orders = self.orders
        for index in range(len(nodes) - 1, 0, -1):
            parent = orders[parents[nodes[index]]]
            if ends[index] > ends[parent]:
                ends[parent] = ends[index]
        self._ends = ends

    def parent(self, node: cst.CSTNode) -> cst.CSTNode | None:
        return self.parents.get(node)

    def order(self, node: cst.CSTNode) -> int:
        """Pre-order number: a node comes after everything before it in the source."""
        return self.orders[node]

    def end(self, node: cst.CSTNode) -> int:
        """Pre-order number of the last node inside `node`."""
        return self._ends[self.orders[node]]

    def kids(self, node: cst.CSTNode) -> list[cst.CSTNode]:
        found = self.children.get(node)
        return node_children(node) if found is None else found

    def walk(self, node: cst.CSTNode, skip: tuple[type, ...] = ()) -> Iterator[cst.CSTNode]:
        """Every node under `node`, itself first, in source order; `skip` types are not entered."""
        stack = [node]
        while stack:
            current = stack.pop()
            yield current
            if current is node or not isinstance(current, skip):
                stack.extend(reversed(self.kids(current)))

"""What a script rule gets: one parsed file, its tree, scopes and qualified names."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import libcst as cst
from libcst.metadata import CodeRange, MetadataWrapper, PositionProvider, QualifiedName

from nnlint.core.finding import Finding
from nnlint.core.notebook import Notebook
from nnlint.script.cstwalk import Tree
from nnlint.script.names import Names, Scope


class ScriptContext:
    """One parsed file, shared by all script rules.

    Everything is computed once, on first use, and cached, so ten rules cost one
    resolution: `tree` (children, parents and source order, from one cheap pass),
    `names` (scopes, assignments and qualified names, `nnlint.script.names`),
    and positions. Positions need a code
    generation pass over the whole file, so they are resolved only when asked
    for, which in practice is when a rule reports a finding. `project_root` is
    where the nearest config or pyproject lives.
    """

    def __init__(
        self,
        path: Path,
        display_path: str,
        source: str,
        module: cst.Module,
        project_root: Path | None = None,
        notebook: Notebook | None = None,
    ) -> None:
        self.path = path
        self.display_path = display_path
        self.source = source
        self.module = module
        self.project_root = project_root or path.parent
        self.notebook = notebook
        self._cache: dict[str, Any] = {}

    @cached_property
    def wrapper(self) -> MetadataWrapper:
        # unsafe_skip_copy: the module is ours alone, and copying costs a full tree walk.
        return MetadataWrapper(self.module, unsafe_skip_copy=True)

    @cached_property
    def tree(self) -> Tree:
        return Tree(self.module)

    @cached_property
    def names(self) -> Names:
        """Scopes and assignments of every name, resolved once in one pass."""
        return Names(self.module, self.tree)

    @cached_property
    def _positions(self) -> Any:
        return self.wrapper.resolve(PositionProvider)

    def position(self, node: cst.CSTNode) -> CodeRange:
        return self._positions[node]

    def parent(self, node: cst.CSTNode) -> cst.CSTNode | None:
        return self.tree.parent(node)

    def qualified_names(self, node: cst.CSTNode) -> set[QualifiedName]:
        """What `node` names, through the file's imports (`torch.nn.Linear` for `nn.Linear`)."""
        return set(self.names.qualified(node))

    def qualified_name_strings(self, node: cst.CSTNode) -> set[str]:
        return {q.name for q in self.names.qualified(node)}

    def scope(self, node: cst.CSTNode) -> Scope | None:
        return self.names.scope(node)

    def report(
        self, rule: Any, node: cst.CSTNode, /, note: str | None = None, **fields: Any
    ) -> Finding:
        """`rule`'s finding spanning `node`, its message filled with `fields`."""
        pos = self.position(node)
        return rule.make(
            self.display_path,
            pos.start.line,
            pos.start.column + 1,
            end_line=pos.end.line,
            end_column=pos.end.column + 1,
            note=note,
            **fields,
        )

    def line_label(self, line: int) -> str:
        """How a note names a line of this file: `line 12`, or `cell 3, line 2` in a notebook."""
        if self.notebook is None:
            return f"line {line}"
        cell, within = self.notebook.locate(line)
        return f"cell {cell}, line {within}"

    def shared(self, key: str, build: Any) -> Any:
        """A per-file analysis computed once and shared by every rule that asks for it."""
        if key not in self._cache:
            self._cache[key] = build(self)
        return self._cache[key]

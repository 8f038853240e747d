"""The script phase: read each file once, parse it once, run every script rule on it."""

from __future__ import annotations

import ast
import io
import tokenize
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import libcst as cst
from libcst.metadata import (
    CodeRange,
    MetadataWrapper,
    PositionProvider,
    QualifiedName,
    ScopeProvider,
)

from nnlint.cstwalk import Tree
from nnlint.diagnostics import SyntaxErrorFinding, UnreadableFile, run_rule
from nnlint.finding import Finding
from nnlint.rule import ScriptRule


class ScriptContext:
    """One parsed file, shared by all script rules.

    Everything is computed once, on first use, and cached, so ten rules cost one
    resolution: `tree` (children, parents and source order, from one cheap pass),
    libcst's scopes and qualified names, and positions. Positions need a code
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
    ) -> None:
        self.path = path
        self.display_path = display_path
        self.source = source
        self.module = module
        self.project_root = project_root or path.parent
        self._cache: dict[str, Any] = {}
        self._names: dict[cst.CSTNode, set[QualifiedName]] = {}

    @cached_property
    def wrapper(self) -> MetadataWrapper:
        # unsafe_skip_copy: the module is ours alone, and copying costs a full tree walk.
        return MetadataWrapper(self.module, unsafe_skip_copy=True)

    @cached_property
    def tree(self) -> Tree:
        return Tree(self.module)

    @cached_property
    def scopes(self) -> Any:
        """libcst's scope of every node (`ScopeProvider`), resolved once."""
        return self.wrapper.resolve(ScopeProvider)

    @cached_property
    def _positions(self) -> Any:
        return self.wrapper.resolve(PositionProvider)

    def position(self, node: cst.CSTNode) -> CodeRange:
        return self._positions[node]

    def parent(self, node: cst.CSTNode) -> cst.CSTNode | None:
        return self.tree.parent(node)

    def qualified_names(self, node: cst.CSTNode) -> set[QualifiedName]:
        """What `node` names, through the file's imports (libcst's scope analysis).

        The same answer as libcst's `QualifiedNameProvider`, which asks the same
        `Scope.get_qualified_names_for`, but only for the nodes a rule asks about:
        the provider walks the whole tree once more to prepare an answer for each.
        """
        found = self._names.get(node)
        if found is None:
            scope = self.scope(node)
            found = set(scope.get_qualified_names_for(node)) if scope is not None else set()
            self._names[node] = found
        return found

    def qualified_name_strings(self, node: cst.CSTNode) -> set[str]:
        return {q.name for q in self.qualified_names(node)}

    def scope(self, node: cst.CSTNode) -> Any:
        return self.scopes.get(node)

    def shared(self, key: str, build: Any) -> Any:
        """A per-file analysis computed once and shared by every rule that asks for it."""
        if key not in self._cache:
            self._cache[key] = build(self)
        return self._cache[key]


def read_source(path: Path) -> str:
    """Decode a file honouring PEP 263; raises ValueError/OSError with a readable reason."""
    data = path.read_bytes()
    if b"\x00" in data:
        raise ValueError("binary file (contains NUL bytes)")
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError:
        raise ValueError("not valid utf-8 and no PEP 263 coding declaration") from None
    try:
        return data.decode(encoding)
    except (UnicodeDecodeError, LookupError) as exc:
        raise ValueError(
            f"not valid {encoding}: {exc.reason if hasattr(exc, 'reason') else exc}"
        ) from None


def _syntax_error(display: str, source: str, exc: cst.ParserSyntaxError) -> Finding:
    """Python's own message and position where it has one; libcst's otherwise."""
    try:
        compile(source, display, "exec", ast.PyCF_ONLY_AST)
    except SyntaxError as err:
        return SyntaxErrorFinding.make(display, err.lineno or 1, err.offset or 1, error=err.msg)
    except (ValueError, RecursionError, MemoryError) as err:
        return SyntaxErrorFinding.make(display, 1, 1, error=str(err))
    first = exc.message.strip().splitlines()[0] if exc.message.strip() else "invalid syntax"
    return SyntaxErrorFinding.make(
        display, exc.raw_line, exc.raw_column + 1, error=f"libcst cannot parse this file: {first}"
    )


def lint_file(
    path: Path,
    display: str,
    rules: Sequence[ScriptRule],
    project_root: Path | None = None,
    debug: bool = False,
) -> list[Finding]:
    """All script findings for one file, engine diagnostics included."""
    try:
        source = read_source(path)
    except OSError as exc:
        return [UnreadableFile.make(display, 1, 1, error=exc.strerror or str(exc))]
    except ValueError as exc:
        return [UnreadableFile.make(display, 1, 1, error=str(exc))]
    try:
        module = cst.parse_module(source)
    except cst.ParserSyntaxError as exc:
        return [_syntax_error(display, source, exc)]
    except RecursionError:
        return [SyntaxErrorFinding.make(display, 1, 1, error="nesting too deep to parse")]
    active = [
        r
        for r in rules
        if (not r.needs or any(n in source for n in r.needs))
        and all(n in source for n in getattr(r, "needs_all", ()))
    ]
    if not active:
        return []
    ctx = ScriptContext(path, display, source, module, project_root)
    findings: list[Finding] = []
    for rule in active:
        findings.extend(run_rule(rule, ctx, display, debug))
    return findings

"""The script phase: read each file once, parse it once, run every script rule on it."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path

import libcst as cst

from nnlint.core.diagnostics import NotAnalysed, SyntaxErrorFinding, UnreadableFile, run_rule
from nnlint.core.files import read_source
from nnlint.core.finding import Finding
from nnlint.core.notebook import Notebook, is_notebook, read_notebook
from nnlint.core.rule import ScriptRule
from nnlint.script.context import ScriptContext
from nnlint.script.notebook import to_cells

# How deeply libcst's tree may nest before the file is left out. libcst nests
# `a or b or c` and `a < b < c` pairwise, so an n-way chain counts n levels; its
# parser and visitors recurse, and past a few hundred levels they crawl, exhaust
# the recursion limit or crash the process. Real code stays below 100.
MAX_DEPTH = 200


def nesting(tree: ast.AST) -> int:
    """How deeply the tree nests, counting n-ary boolean and comparison chains as libcst does."""
    deepest = 0
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(node, ast.BoolOp):
            depth += len(node.values)
        elif isinstance(node, ast.Compare):
            depth += len(node.ops)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


_TOO_DEEP = "too deeply nested for Python's parser"


def parse(
    display: str, source: str, analyse: bool = True
) -> tuple[cst.Module | None, Finding | None]:
    """The libcst module, or the finding that says why there is none.

    CPython parses first (it is fast and bounded). A file it cannot build a
    tree for is a syntax error. One it rejects may still be valid for a newer
    Python, which libcst reads, so its SyntaxError stands only if libcst
    rejects the file too. A file nested too deeply for libcst, or that libcst
    rejects although CPython accepts it, is left out with an info finding.
    Without `analyse` (no rule reads the file) only CPython's verdict is given.
    """
    rejected: Finding | None = None
    try:
        depth = nesting(ast.parse(source, display))
    except SyntaxError as err:
        line, column = err.lineno or 1, err.offset or 1
        rejected = SyntaxErrorFinding.make(display, line, column, error=err.msg)
    except (RecursionError, MemoryError):
        return None, SyntaxErrorFinding.make(display, 1, 1, error=_TOO_DEEP)
    else:
        if depth > MAX_DEPTH:
            reason = f"it nests {depth} levels deep, more than the {MAX_DEPTH} nnlint analyses"
            return None, NotAnalysed.make(display, 1, 1, reason=reason)
    if not analyse:
        return None, rejected
    try:
        return cst.parse_module(source), None
    except (cst.ParserSyntaxError, RecursionError) as exc:
        if rejected is not None:
            return None, rejected
        text = getattr(exc, "message", "") or str(exc)
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        reason = f"libcst cannot parse it, though Python can ({first})"
        return None, NotAnalysed.make(display, 1, 1, reason=reason)


def lint_file(
    path: Path,
    display: str,
    rules: Sequence[ScriptRule],
    project_root: Path | None = None,
    debug: bool = False,
    source: str | None = None,
) -> list[Finding]:
    """All script findings for one file (or `source` given for it, read as Python),
    engine diagnostics included.

    A notebook is linted as its code cells joined, and its findings are then
    moved to their cells.
    """
    notebook: Notebook | None = None
    try:
        if source is not None:
            pass
        elif is_notebook(path):
            notebook = read_notebook(path)
            source = notebook.source
        else:
            source = read_source(path)
    except OSError as exc:
        error = exc.strerror or str(exc)
        return [
            UnreadableFile.make(display, 1, 1, kind="file", error=error[:1].lower() + error[1:])
        ]
    except ValueError as exc:
        return [UnreadableFile.make(display, 1, 1, kind="file", error=str(exc))]
    findings = _lint_source(path, display, source, rules, project_root, debug, notebook)
    return findings if notebook is None else to_cells(notebook, display, findings)


def _lint_source(
    path: Path,
    display: str,
    source: str,
    rules: Sequence[ScriptRule],
    project_root: Path | None,
    debug: bool,
    notebook: Notebook | None,
) -> list[Finding]:
    active = [
        r
        for r in rules
        if (not r.needs or any(n in source for n in r.needs))
        and all(n in source for n in getattr(r, "needs_all", ()))
    ]
    # libcst's tree costs about 600 bytes of memory per byte of source: build it
    # only for a file some rule reads.
    module, problem = parse(display, source, analyse=bool(active))
    if module is None:
        return [problem] if problem is not None else []
    ctx = ScriptContext(path, display, source, module, project_root, notebook)
    findings: list[Finding] = []
    for rule in active:
        findings.extend(run_rule(rule, ctx, display, debug))
    return findings

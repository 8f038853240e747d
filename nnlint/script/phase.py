"""The script phase: read each file once, parse it once, run every script rule on it."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path

import libcst as cst

from nnlint.core.diagnostics import SyntaxErrorFinding, UnreadableFile, run_rule
from nnlint.core.files import read_source
from nnlint.core.finding import Finding
from nnlint.core.rule import ScriptRule
from nnlint.script.context import ScriptContext


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

"""Findings in a notebook, moved from its joined source to its cells."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

from nnlint.core.diagnostics import NotAnalysed, SyntaxErrorFinding
from nnlint.core.finding import Finding
from nnlint.core.notebook import Notebook, is_notebook, read_notebook


def _in_cell(notebook: Notebook, finding: Finding) -> Finding:
    cell, line = notebook.locate(finding.line)
    end_line = finding.end_line
    if end_line is not None:
        end_cell, end_line = notebook.locate(end_line)
        if end_cell != cell:  # statements never span cells; keep the start alone
            return dataclasses.replace(
                finding, cell=cell, line=line, end_line=None, end_column=None
            )
    return dataclasses.replace(finding, cell=cell, line=line, end_line=end_line)


def to_cells(notebook: Notebook, display: str, findings: Iterable[Finding]) -> list[Finding]:
    """The findings at (cell, line in cell), with a syntax error for each cell left out."""
    if notebook.language != "python":
        reason = f"it is a {notebook.language} notebook, and nnlint reads Python"
        return [NotAnalysed.make(display, 1, 1, reason=reason)]
    moved = [_in_cell(notebook, f) for f in findings]
    for cell, line, column, message in notebook.broken:
        error = SyntaxErrorFinding.make(display, line, column, error=message)
        moved.append(dataclasses.replace(error, cell=cell))
    return moved


def model_findings_to_cells(findings: Iterable[Finding], root: Path) -> list[Finding]:
    """Graph and dynamic findings that point into a notebook run as the training
    script (or holding the `--model`), moved from its joined code to its cells."""
    notebooks: dict[str, Notebook | None] = {}
    moved = []
    for finding in findings:
        if finding.cell is not None or not is_notebook(finding.path):
            moved.append(finding)
            continue
        if finding.path not in notebooks:
            try:
                notebooks[finding.path] = read_notebook(root / finding.path)
            except (OSError, ValueError):
                notebooks[finding.path] = None
        notebook = notebooks[finding.path]
        moved.append(finding if notebook is None else _in_cell(notebook, finding))
    return moved

"""A finding's identity that survives unrelated edits to its file.

CI services match findings across runs by a fingerprint (SARIF's
`partialFingerprints`, GitLab's `fingerprint`), and so does a baseline. A
line number moves whenever lines are added above, so the fingerprint is built
from the rule, the file and the flagged line with one neighbour on each side,
with whitespace collapsed (re-indenting does not change it) and the message
left out (numbers in it may change from run to run). In a notebook the lines
are the finding's cell's, and its number is left out: a cell added above
moves the finding to another cell, not to other code.
"""

from __future__ import annotations

from pathlib import Path, PurePath

from nnlint.core.finding import Finding
from nnlint.core.notebook import source_lines

CONTEXT = 1  # lines on each side of the flagged one


def normalised(line: str) -> str:
    return " ".join(line.split())


def context_window(lines: list[str], line: int) -> list[str]:
    """The flagged line and its neighbours, whitespace collapsed: what identifies a finding."""
    index = line - 1
    window = lines[max(index - CONTEXT, 0) : index + CONTEXT + 1] if index >= 0 else []
    return [normalised(text) for text in window]


def fingerprint(finding: Finding, lines: list[str], nth: int = 0) -> str:
    """A hex digest of the finding's code, path and surrounding source; `nth` tells twins apart."""
    import hashlib  # only reports that print fingerprints pay for it

    window = context_window(lines, finding.line)
    parts = [finding.code, PurePath(finding.path).as_posix(), *window, str(nth)]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def fingerprints(findings: list[Finding], root: Path) -> list[str]:
    """One fingerprint per finding, in order; equal findings on equal code get 0, 1, 2..."""
    sources: dict[str, list[str] | dict[int, list[str]]] = {}
    seen: dict[tuple[str, str], int] = {}
    out = []
    for f in findings:
        if f.path not in sources:
            sources[f.path] = source_lines(root / f.path)
        lines = sources[f.path]
        if isinstance(lines, dict):  # a notebook: the finding's cell
            lines = lines.get(f.cell, [])
        base = fingerprint(f, lines)
        nth = seen.get((base, f.code), 0)
        seen[(base, f.code)] = nth + 1
        out.append(base if nth == 0 else fingerprint(f, lines, nth))
    return out

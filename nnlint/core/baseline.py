"""A baseline: findings recorded once and ignored afterwards, to adopt nnlint on old code.

A finding is recorded by a fingerprint of its path, its code and the source of
the flagged line with a line on either side, each with its whitespace
normalised. Line numbers are left out on purpose: an edit elsewhere in the file
moves the finding but keeps its fingerprint, while an edit of the flagged code
itself makes it new. Fingerprints are counted, so two identical findings in
identical code are two entries, and a third one appearing is reported.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

from nnlint.core.errors import UsageError
from nnlint.core.finding import Finding
from nnlint.core.fingerprint import context_window
from nnlint.core.notebook import source_lines

VERSION = 1


class Fingerprints:
    """The fingerprints of findings, reading each file's source once."""

    def __init__(self, root: Path, base: Path, texts: Mapping[str, str] | None = None) -> None:
        self.root, self.base = root, base
        self._texts = dict(texts or {})
        self._lines: dict[str, list[str] | dict[int, list[str]]] = {}

    def relative(self, path: str) -> str:
        """The finding's path relative to the baseline's folder, so a baseline moves with it."""
        return Path(os.path.relpath((self.root / path).resolve(), self.base.resolve())).as_posix()

    def _source(self, finding: Finding) -> list[str]:
        """The lines the finding's line counts in: its file's, or its notebook cell's."""
        path = finding.path
        if path not in self._lines:
            text = self._texts.get(path)
            self._lines[path] = (
                source_lines(self.root / path) if text is None else text.splitlines()
            )
        lines = self._lines[path]
        return lines.get(finding.cell, []) if isinstance(lines, dict) else lines

    def of(self, finding: Finding) -> str:
        import hashlib  # only runs with a baseline pay for it

        lines = self._source(finding)
        window = context_window(lines, finding.line)
        key = json.dumps([self.relative(finding.path), finding.cell, finding.code, window])
        return hashlib.sha256(key.encode()).hexdigest()[:32]


def load(path: Path) -> Counter:
    """The recorded fingerprints, counted; a missing or malformed file is a UsageError."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = data["findings"]
        return Counter(str(e["fingerprint"]) for e in entries)
    except FileNotFoundError:
        raise UsageError(
            f"--baseline {path}: no such file (create it with --update-baseline)"
        ) from None
    except OSError as exc:
        raise UsageError(f"--baseline {path}: cannot read: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError):
        raise UsageError(f"--baseline {path}: not an nnlint baseline") from None


def without_recorded(
    findings: Iterable[Finding], recorded: Counter, prints: Fingerprints
) -> list[Finding]:
    """`findings` less those the baseline records (each recorded one ignores one finding)."""
    left = Counter(recorded)
    kept = []
    for finding in findings:
        key = prints.of(finding)
        if left[key] > 0:
            left[key] -= 1
        else:
            kept.append(finding)
    return kept


def write(path: Path, findings: Iterable[Finding], prints: Fingerprints) -> int:
    """Record `findings` in the baseline at `path`; returns how many."""
    entries = [
        {
            "fingerprint": prints.of(f),
            "path": prints.relative(f.path),
            "code": f.code,
            "line": f.line,
            "message": f.message,
        }
        for f in findings
    ]
    document = {"version": VERSION, "findings": entries}
    try:
        path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--baseline {path}: cannot write: {exc.strerror}") from None
    return len(entries)

"""Fixes: the text edits a finding may carry, and how to apply them to a source.

A fix is a set of edits to the finding's own file, applied together or not at
all, with ruff's two applicabilities: a safe fix keeps what the code means
(`--fix` applies it); an unsafe one may change behaviour the user relied on and
needs `--unsafe-fixes`. Positions are 1-based lines and columns, as findings.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Edit:
    """Replace the text from (line, column) up to (end_line, end_column) by `content`."""

    line: int
    column: int
    end_line: int
    end_column: int
    content: str

    @classmethod
    def insert(cls, line: int, column: int, content: str) -> Edit:
        return cls(line, column, line, column, content)

    def to_dict(self) -> dict:
        return {
            "content": self.content,
            "location": {"row": self.line, "column": self.column},
            "end_location": {"row": self.end_line, "column": self.end_column},
        }


@dataclass(frozen=True, order=True)
class Fix:
    """Edits that resolve one finding, how safe they are, and what they do."""

    edits: tuple[Edit, ...]
    safe: bool
    message: str

    def applicable(self, unsafe: bool) -> bool:
        return self.safe or unsafe

    def to_dict(self) -> dict:
        return {
            "applicability": "safe" if self.safe else "unsafe",
            "message": self.message,
            "edits": [e.to_dict() for e in self.edits],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Fix:
        edits = tuple(
            Edit(
                e["location"]["row"],
                e["location"]["column"],
                e["end_location"]["row"],
                e["end_location"]["column"],
                e["content"],
            )
            for e in data["edits"]
        )
        return cls(edits, data["applicability"] == "safe", data["message"])


def _line_starts(text: str) -> list[int]:
    starts, at = [0], 0
    for line in text.splitlines(keepends=True):
        at += len(line)
        starts.append(at)
    return starts


def _offset(starts: Sequence[int], line: int, column: int) -> int:
    if not 1 <= line <= len(starts):
        raise ValueError(f"line {line} is outside the file")
    return starts[line - 1] + column - 1


def _span(starts: Sequence[int], edit: Edit) -> tuple[int, int]:
    return _offset(starts, edit.line, edit.column), _offset(starts, edit.end_line, edit.end_column)


def overlap(first: Iterable[Edit], second: Iterable[Edit]) -> bool:
    """Whether two fixes touch the same text (two insertions at one point count)."""
    a = [(e.line, e.column, e.end_line, e.end_column) for e in first]
    b = [(e.line, e.column, e.end_line, e.end_column) for e in second]
    return any(x[:2] <= y[2:] and y[:2] <= x[2:] for x in a for y in b)


def apply_edits(text: str, edits: Iterable[Edit]) -> str:
    """`text` with non-overlapping `edits` applied (from the end, so offsets hold)."""
    starts = _line_starts(text)
    spans = sorted(((*_span(starts, e), e.content) for e in edits), reverse=True)
    for start, end, content in spans:
        text = text[:start] + content + text[end:]
    return text


def shift_line(line: int, edits: Iterable[Edit]) -> int:
    """Where `line` of the text before `edits` lies after them (for findings that stay)."""
    moved = line
    for e in edits:
        if e.end_line < line or (e.end_line == line and e.end_column == 1):
            moved += e.content.count("\n") - (e.end_line - e.line)
    return moved

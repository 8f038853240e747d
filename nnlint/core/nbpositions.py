"""Where a cell's line and column lie in the notebook file itself, its JSON text.

SARIF and GitHub annotations locate a finding in the file as stored, which a
code-scanning view or a diff shows line by line. For a notebook that file is
JSON, and the cell's code sits in the strings of its `source`, so the place a
reader can edit is the spot inside that string. JSON's parsers give no
positions, hence this scanner: it tokenizes the document and records the
string literals of `cells[i].source` (one string or a list of them), then maps
a position in the decoded cell source to one in the file through the escapes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from nnlint.core.files import read_source
from nnlint.core.finding import Finding

_TOKEN = re.compile(
    r'\s*(?:(?P<string>"(?:[^"\\]|\\.)*")|(?P<punct>[{}\[\]:,])|[^\s{}\[\]:,"]+)', re.S
)
_SURROGATE_PAIR = re.compile(r"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}")


def source_literals(text: str) -> dict[int, list[tuple[int, int]]]:
    """(start, end) offsets of each string literal of `cells[i].source`, by 1-based cell."""
    stack: list[list] = []  # [kind, key or index, expecting a key]
    found: dict[int, list[tuple[int, int]]] = {}
    for token in _TOKEN.finditer(text):
        punct, string = token.group("punct"), token.group("string")
        top = stack[-1] if stack else None
        if punct in ("{", "["):
            stack.append(["object", None, True] if punct == "{" else ["array", 0, False])
        elif punct in ("}", "]"):
            if stack:
                stack.pop()
        elif punct == ",":
            if top is not None and top[0] == "object":
                top[2] = True
            elif top is not None:
                top[1] += 1
        elif punct == ":":
            if top is not None:
                top[2] = False
        elif string is not None and top is not None:
            if top[0] == "object" and top[2]:
                top[1] = json.loads(string)
                continue
            path = [frame[1] for frame in stack]
            if (
                len(path) in (3, 4)
                and path[0] == "cells"
                and path[2] == "source"
                and isinstance(path[1], int)
            ):
                found.setdefault(path[1] + 1, []).append(token.span("string"))
    return found


def _raw_offset(literal: str, index: int) -> int | None:
    """The offset in a JSON string literal (quotes included) of decoded character `index`."""
    raw, decoded = 1, 0
    while raw < len(literal) - 1:
        if decoded == index:
            return raw
        if literal[raw] != "\\":
            step = 1
        elif _SURROGATE_PAIR.match(literal, raw):
            step = 12
        else:
            step = 6 if literal[raw + 1] == "u" else 2
        raw += step
        decoded += 1
    return raw if decoded == index else None


def file_position(
    text: str, literals: list[tuple[int, int]], line: int, column: int
) -> tuple[int, int] | None:
    """The 1-based (line, column) in the file of (line, column) of the cell's source."""
    pieces = [json.loads(text[start:end]) for start, end in literals]
    source = "".join(pieces)
    starts = [0] + [m.end() for m in re.finditer(r"\r\n|\r|\n", source)]
    if not 0 < line <= len(starts):
        return None
    index = starts[line - 1] + column - 1
    for number, ((start, end), piece) in enumerate(zip(literals, pieces, strict=True), 1):
        if index < len(piece) or (index == len(piece) and number == len(pieces)):
            offset = _raw_offset(text[start:end], index)
            if offset is None:
                return None
            at = start + offset
            return text.count("\n", 0, at) + 1, at - (text.rfind("\n", 0, at) + 1) + 1
        index -= len(piece)
    return None


class FilePositions:
    """Findings' places in the files as stored: a notebook's JSON lines, a script's own."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._files: dict[str, tuple[str, dict[int, list[tuple[int, int]]]] | None] = {}

    def _notebook(self, path: str) -> tuple[str, dict[int, list[tuple[int, int]]]] | None:
        if path not in self._files:
            try:
                text = read_source(self.root / path)
                self._files[path] = text, source_literals(text)
            except (OSError, ValueError):
                self._files[path] = None
        return self._files[path]

    def region(self, finding: Finding) -> tuple[int, int, int | None, int | None]:
        """(line, column, end line, end column) in the file. Where the spot cannot be
        found, the start of the cell's source (or of the file): a real place still."""
        f = finding
        if f.cell is None:
            return f.line, f.column, f.end_line, f.end_column
        stored = self._notebook(f.path)
        literals = stored[1].get(f.cell) if stored else None
        if not literals:
            return 1, 1, None, None
        start = file_position(stored[0], literals, f.line, f.column)
        if start is None:
            start = file_position(stored[0], literals, 1, 1) or (1, 1)
            return *start, None, None
        end = None
        if f.end_line is not None and f.end_column is not None:
            end = file_position(stored[0], literals, f.end_line, f.end_column)
        return (*start, *(end or (None, None)))

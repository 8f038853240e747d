"""Suppression comments, applied centrally to findings of every phase.

Per line: `# noqa` (everything), `# noqa: NN201,NN3` (flake8 prefix match),
`# nnlint: disable=missing-zero-grad,NN3` (names or codes).
Per file: `# nnlint: disable-file=NN2,...` and `# nnlint: noqa` (everything).
Comments are read with `tokenize`, so a `# noqa` inside a string does not count.
In a notebook they are read from the joined code cells, so a `disable-file`
comment in any cell covers the whole notebook and a line comment its own line.
"""

from __future__ import annotations

import dataclasses
import io
import re
import tokenize
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from nnlint.core.diagnostics import InvalidSuppression
from nnlint.core.files import read_source
from nnlint.core.finding import Finding
from nnlint.core.notebook import Notebook, is_notebook, read_notebook

ALL = None  # a suppression that covers every code

_NOQA = re.compile(r"#\s*noqa(?::\s*(?P<codes>[\w-]+(?:[,\s]+[\w-]+)*))?", re.IGNORECASE)
_DIRECTIVE = re.compile(
    r"#\s*nnlint:\s*(?P<kind>disable-file|disable|noqa)\s*(?:=\s*(?P<codes>[\w-]+(?:[,\s]+[\w-]+)*))?",
    re.IGNORECASE,
)
_NN_CODE = re.compile(r"^NN\d+$", re.IGNORECASE)
_CODE = re.compile(r"^[A-Z]{1,5}\d+$", re.IGNORECASE)  # ours, a plugin's (XX001) or another tool's


@dataclass
class Suppressions:
    """What one file silences: per line and for the whole file (None means everything)."""

    lines: dict[int, set[str] | None] = field(default_factory=dict)
    file: set[str] | None = field(default_factory=set)
    # (line, column, token) of every nnlint code or name mentioned, to validate them
    mentions: list[tuple[int, int, str]] = field(default_factory=list)

    def add_line(self, line: int, tokens: set[str] | None) -> None:
        if tokens is ALL or self.lines.get(line, set()) is ALL:
            self.lines[line] = ALL
        else:
            self.lines.setdefault(line, set()).update(tokens)

    def add_file(self, tokens: set[str] | None) -> None:
        if tokens is ALL or self.file is ALL:
            self.file = ALL
        else:
            self.file.update(tokens)

    def covers(self, finding: Finding) -> bool:
        if _matches(self.file, finding):
            return True
        return finding.line in self.lines and _matches(self.lines[finding.line], finding)


def _matches(tokens: set[str] | None, finding: Finding) -> bool:
    if tokens is ALL:
        return True
    return any(
        finding.code.startswith(t.upper()) if _CODE.match(t) else t.lower() == finding.name
        for t in tokens
    )


def _split(codes: str | None) -> list[str]:
    return [c for c in re.split(r"[,\s]+", codes or "") if c]


def _comments(source: str) -> Iterable[tuple[int, int, str]]:
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                yield tok.start[0], tok.start[1] + 1, tok.string
    except (tokenize.TokenError, SyntaxError, IndentationError):
        # An unparseable file still gets its line comments honoured, found by regex.
        for number, text in enumerate(source.splitlines(), start=1):
            hash_at = text.find("#")
            if hash_at >= 0:
                yield number, hash_at + 1, text[hash_at:]


def parse_suppressions(source: str) -> Suppressions:
    result = Suppressions()
    # Every directive holds `noqa` or `nnlint`: a file without either needs no
    # tokenizing, which on a large file costs as much as some rules.
    lowered = source.lower()
    if "noqa" not in lowered and "nnlint" not in lowered:
        return result
    for line, column, comment in _comments(source):
        for match in _DIRECTIVE.finditer(comment):
            tokens = _split(match.group("codes"))
            result.mentions.extend((line, column, t) for t in tokens)
            kind = match.group("kind").lower()
            if kind == "disable":
                result.add_line(line, set(tokens) or ALL)
            else:
                result.add_file(set(tokens) or ALL)
        if _DIRECTIVE.search(comment):
            continue
        match = _NOQA.search(comment)
        if match:
            tokens = _split(match.group("codes"))
            result.mentions.extend((line, column, t) for t in tokens if _NN_CODE.match(t))
            ours = {t for t in tokens if _CODE.match(t)}
            # A noqa naming only other tools' codes (E501) silences nothing of ours:
            # E501 is the prefix of none of our findings' codes.
            if not tokens:
                result.add_line(line, ALL)
            elif ours:
                result.add_line(line, ours)
    return result


class Suppressor:
    """Reads each file's comments once and filters findings by (path, line, code or name)."""

    def __init__(self, root: Path | None = None, texts: dict[str, str] | None = None) -> None:
        self.root = root or Path.cwd()
        self._files: dict[str, Suppressions | None] = {
            display: parse_suppressions(text) for display, text in (texts or {}).items()
        }
        self._notebooks: dict[str, Notebook] = {}

    def for_path(self, display_path: str) -> Suppressions | None:
        if display_path not in self._files:
            path = Path(display_path)
            if not path.is_absolute():
                path = self.root / path
            try:
                if is_notebook(path):
                    notebook = self._notebooks[display_path] = read_notebook(path)
                    source = notebook.source
                else:
                    source = read_source(path)
                self._files[display_path] = parse_suppressions(source)
            except (OSError, ValueError):
                self._files[display_path] = None
        return self._files[display_path]

    def apply(self, findings: Iterable[Finding]) -> list[Finding]:
        return [f for f in findings if not self._suppressed(f)]

    def _suppressed(self, finding: Finding) -> bool:
        sup = self.for_path(finding.path)
        notebook = self._notebooks.get(finding.path)
        if sup is not None and notebook is not None and finding.cell is not None:
            # Suppressions are read from the joined cells: find the finding's line there.
            line = notebook.source_line(finding.cell, finding.line)
            return sup.covers(dataclasses.replace(finding, line=line or 0))
        return sup is not None and sup.covers(finding)

    def invalid(self, paths: Iterable[str], is_known: Callable[[str], bool]) -> list[Finding]:
        """NN008 findings for suppression comments naming nnlint codes or rules that do not exist."""
        found = []
        for path in paths:
            sup = self.for_path(path)
            notebook = self._notebooks.get(path)
            for line, column, token in sup.mentions if sup else ():
                if is_known(token):
                    continue
                if notebook is None:
                    found.append(InvalidSuppression.make(path, line, column, token=token))
                else:
                    cell, within = notebook.locate(line)
                    invalid = InvalidSuppression.make(path, within, column, token=token)
                    found.append(dataclasses.replace(invalid, cell=cell))
        return found

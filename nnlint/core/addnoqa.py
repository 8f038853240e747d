"""`--add-noqa`: a `# noqa: CODE` comment on the line of each finding.

An existing `# noqa: E501` on the line gets the codes added (`# noqa: E501, NN201`);
a bare `# noqa` already silences everything and is left alone. A line that
ends inside a multi-line string, or continues with a backslash, cannot take a
comment and is skipped, so the text stays the same program.
"""

from __future__ import annotations

import io
import re
import tokenize
from collections.abc import Iterable

from nnlint.core.finding import Finding

_NOQA = re.compile(r"#\s*noqa(?P<colon>:\s*(?P<codes>[\w-]+(?:[,\s]+[\w-]+)*))?", re.IGNORECASE)


def _closed_lines(text: str) -> set[int] | None:
    """Lines that cannot take a comment (inside a string, or continued); None if untokenizable."""
    closed: set[int] = set()
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.start[0] != tok.end[0]:
                closed.update(range(tok.start[0], tok.end[0]))
    except (tokenize.TokenError, SyntaxError):
        return None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.rstrip().endswith("\\"):
            closed.add(number)
    return closed


def _comments(text: str) -> dict[int, tokenize.TokenInfo]:
    return {
        tok.start[0]: tok
        for tok in tokenize.generate_tokens(io.StringIO(text).readline)
        if tok.type == tokenize.COMMENT
    }


def _with_codes(line: str, comment: tokenize.TokenInfo | None, codes: list[str]) -> str | None:
    body = line.rstrip("\r\n")
    ending = line[len(body) :]
    if comment is not None:
        at = comment.start[1]
        match = _NOQA.search(comment.string)
        if match and not match.group("colon"):
            return None  # a noqa without codes covers every code
        if match:
            have = [c for c in re.split(r"[,\s]+", match.group("codes")) if c]
            new = have + [c for c in codes if c not in have]
            if new == have:
                return None
            merged = comment.string[: match.start()] + "# noqa: " + ", ".join(new)
            merged += comment.string[match.end() :]
            return body[:at] + merged + body[at + len(comment.string) :] + ending
    return body.rstrip() + "  # noqa: " + ", ".join(codes) + ending


def add_noqa(text: str, findings: Iterable[Finding]) -> tuple[str, int]:
    """`text` with the findings' codes added to each line's noqa; how many lines changed."""
    wanted: dict[int, list[str]] = {}
    for f in findings:
        codes = wanted.setdefault(f.line, [])
        if f.code not in codes:
            codes.append(f.code)
    closed = _closed_lines(text)
    if closed is None:
        return text, 0
    comments = _comments(text)
    lines = text.splitlines(keepends=True)
    changed = 0
    for number, codes in sorted(wanted.items()):
        if number in closed or not 1 <= number <= len(lines):
            continue
        new = _with_codes(lines[number - 1], comments.get(number), sorted(codes))
        if new is not None:
            lines[number - 1] = new
            changed += 1
    return "".join(lines), changed

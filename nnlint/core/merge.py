"""One finding per rule and source line for the model phases.

A helper or a loop that builds a conv and a BatchNorm per block builds them all
at one source line; a graph or dynamic rule that judges each module reports
that line once per module (NN101 on every block of a ResNet). Those findings
are one bug to fix at one place, so they become one finding, the first, whose
note lists the other modules. Script findings and nnlint's own diagnostics
(NN0xx, one per check or stage) are left as they are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from nnlint.core.finding import Finding, Phase

_LISTED = 6  # modules named in the note; the rest are counted


def _differing(first: str, other: str) -> str | None:
    """The first word of `other` that differs from `first`'s word at its place, with a
    type in parentheses after it (`blocks.1.0 (Conv2d)`): the module it names."""
    words, theirs = first.split(), other.split()
    for i, word in enumerate(theirs):
        if i < len(words) and words[i] == word:
            continue
        if i + 1 < len(theirs) and theirs[i + 1].startswith("("):
            word = f"{word} {theirs[i + 1]}"
        return word.rstrip(",;:.")
    return None


def _merged(code: str) -> bool:
    return not code.startswith("NN0")


def one_per_line(findings: Iterable[Finding]) -> list[Finding]:
    """`findings` with the graph and dynamic findings of one rule at one line merged, in order."""
    groups: dict[tuple, list[Finding]] = {}
    order: list[list[Finding]] = []
    for finding in findings:
        if finding.phase not in (Phase.GRAPH, Phase.DYNAMIC) or not _merged(finding.code):
            order.append([finding])
            continue
        key = (finding.path, finding.cell, finding.line, finding.code)
        group = groups.get(key)
        if group is None:
            groups[key] = group = []
            order.append(group)
        if all(f.message != finding.message for f in group):
            group.append(finding)
    return [_one(group) for group in order]


def _one(group: list[Finding]) -> Finding:
    """The first finding of `group`, its note naming what the others are about."""
    if len(group) == 1:
        return group[0]
    first = max(group, key=lambda f: f.severity)  # the first of the most severe
    others = [f for f in group if f is not first]
    names = [name for name in (_differing(first.message, o.message) for o in others) if name]
    count = len(others)
    what = f"{count} more module{'s' if count > 1 else ''} built at this line"
    if names:
        shown = ", ".join(names[:_LISTED])
        rest = len(names) - _LISTED
        what += f": {shown}" + (f" and {rest} more" if rest > 0 else "")
    note = f"the same for {what}"
    return dataclasses.replace(first, note=f"{first.note}; {note}" if first.note else note)

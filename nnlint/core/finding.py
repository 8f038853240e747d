"""The one result type that every phase produces."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass


class Severity(enum.IntEnum):
    """How bad a finding is; ordered so that `--fail-level` can compare."""

    INFO = 0
    WARNING = 1
    ERROR = 2

    def __str__(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(str(s) for s in cls)
            raise ValueError(f"unknown severity {text!r} (expected one of {names})") from None


class Phase(enum.StrEnum):
    """Which part of nnlint produced a finding."""

    ENGINE = "engine"
    SCRIPT = "script"
    GRAPH = "graph"
    DYNAMIC = "dynamic"


@dataclass(frozen=True, order=True)
class Finding:
    """A problem at a place the user can edit.

    `path` is as the user gave it (relative where possible); `line` and `column`
    are 1-based, as editors show them. `note` carries a second location or the
    measured number behind the message. In a notebook, `cell` is the 1-based
    cell and `line` the line within it.
    """

    path: str
    line: int
    column: int
    code: str
    name: str
    message: str
    severity: Severity = Severity.WARNING
    phase: Phase = Phase.SCRIPT
    end_line: int | None = None
    end_column: int | None = None
    note: str | None = None
    cell: int | None = None

    def location(self) -> str:
        """`path:line:column`, or `path:cell N:line:column` in a notebook (as ruff writes it)."""
        cell = f"cell {self.cell}:" if self.cell is not None else ""
        return f"{self.path}:{cell}{self.line}:{self.column}"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["severity"] = str(self.severity)
        data["phase"] = str(self.phase)
        return data

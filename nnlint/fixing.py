"""`--fix`, `--diff` and `--fix-only`: apply the findings' fixes until none is left.

As in ruff, fixing loops: one fix may enable another (or a fixed line may now
show a new finding), so after each round the changed files are linted again,
in memory, until a round applies nothing. Only the script rules run again:
the model phases (a minute of capture and training) run once, in the first
round, and their findings that stay have their lines moved with the edits.

Every round checks each file's new text with `compile` before accepting it, so
a fix can never leave code that does not parse; fixes to files outside the
linted set are never applied, whatever their findings say.
"""

from __future__ import annotations

import dataclasses
import difflib
import io
import tokenize
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nnlint.core.addnoqa import add_noqa
from nnlint.core.config import Settings
from nnlint.core.files import display_path, read_source
from nnlint.core.finding import Finding, Phase
from nnlint.core.fix import apply_edits, overlap, shift_line
from nnlint.core.registry import Registry
from nnlint.engine import Result, run

# ruff stops after 100; real files settle in two or three.
MAX_ROUNDS = 20


@dataclass
class FixOutcome:
    """The findings left after fixing, and the texts that changed."""

    result: Result
    originals: dict[Path, str] = field(default_factory=dict)
    texts: dict[Path, str] = field(default_factory=dict)
    fixed: Counter = field(default_factory=Counter)  # code -> findings fixed
    converged: bool = True

    @property
    def count(self) -> int:
        return sum(self.fixed.values())

    def changed(self) -> list[Path]:
        return [p for p, text in self.texts.items() if text != self.originals[p]]


def compiles(text: str, path: Path) -> bool:
    try:
        compile(text, str(path), "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def apply_fixes(text: str, path: Path, findings: Sequence[Finding]) -> tuple[str, list[Finding]]:
    """`text` with as many of the findings' fixes as can go together and still compile."""
    ordered = sorted(findings, key=lambda f: (min(f.fix.edits), f.line, f.code))
    accepted: list[Finding] = []
    for finding in ordered:
        if any(overlap(finding.fix.edits, a.fix.edits) for a in accepted):
            continue  # the next round gets it, on the text this round leaves
        try:
            candidate = apply_edits(text, [e for f in (*accepted, finding) for e in f.fix.edits])
        except ValueError:
            continue  # an edit outside the file: the finding is stale
        if compiles(candidate, path):
            accepted.append(finding)
    edits = [e for f in accepted for e in f.fix.edits]
    return (apply_edits(text, edits) if accepted else text), accepted


def _carried(old: Iterable[Finding], fresh: Sequence[Finding], used: list) -> list[Finding]:
    """The first round's model-phase findings of a changed file that its fixes left,
    moved with the edits.

    Script findings come fresh from linting the new text; so do the engine
    diagnostics of the script phase, which the fresh ones reproduce.
    """
    kept = []
    edits = [e for f in used for e in f.fix.edits]
    for f in old:
        if f.phase is Phase.SCRIPT or f in used:
            continue
        if f.phase is Phase.ENGINE and any(
            g.code == f.code and g.message == f.message for g in fresh
        ):
            continue
        line = shift_line(f.line, edits)
        end = shift_line(f.end_line, edits) if f.end_line else None
        kept.append(dataclasses.replace(f, line=line, end_line=end))
    return kept


def fix(
    settings: Settings,
    registry: Registry,
    unsafe: bool = False,
    progress: Callable[[str | None], None] | None = None,
) -> FixOutcome:
    """Lint, then fix and lint the changed files again until nothing more applies.

    Nothing is written: the new texts are in the outcome (`write` puts them on disk).
    `progress` is `engine.run`'s, for the first round (the only one with the model phases).
    """
    result = run(settings, registry, progress)
    linted = {(settings.root / p).resolve() for p in result.files}
    outcome = FixOutcome(result)
    findings = list(result.findings)
    for _ in range(MAX_ROUNDS):
        wanted: dict[Path, list[Finding]] = {}
        for f in findings:
            path = (settings.root / f.path).resolve()
            if f.fix is not None and f.fix.applicable(unsafe) and path in linted:
                wanted.setdefault(path, []).append(f)
        changed: dict[Path, list] = {}
        for path, candidates in wanted.items():
            before = outcome.texts.get(path)
            if before is None:
                before = settings.sources.get(path)
            if before is None:
                try:
                    before = read_source(path)
                except (OSError, ValueError):
                    continue
            after, used = apply_fixes(before, path, candidates)
            if used:
                outcome.originals.setdefault(path, before)
                outcome.texts[path] = after
                outcome.fixed.update(f.code for f in used)
                changed[path] = used
        if not changed:
            break
        again = dataclasses.replace(
            settings,
            paths=[str(p) for p in changed],
            sources={**settings.sources, **outcome.texts},
            model=None,
            static_only=True,
            cache=False,
        )
        fresh = run(again, registry)
        keep = [f for f in findings if (settings.root / f.path).resolve() not in changed]
        for path, used in changed.items():
            shown = display_path(path, settings.root)
            old = [f for f in findings if f.path == shown]
            keep += _carried(old, fresh.findings, used)
        findings = keep + fresh.findings
    else:
        outcome.converged = False
    findings.sort(key=lambda f: (f.path, f.line, f.column, f.code, f.message))
    result.findings = findings
    result.sources.update(
        {display_path(p, settings.root): text for p, text in outcome.texts.items()}
    )
    return outcome


def with_noqa(settings: Settings, registry: Registry) -> FixOutcome:
    """`--add-noqa`: each linted file with a `# noqa` for its findings (nothing written)."""
    result = run(settings, registry)
    outcome = FixOutcome(result)
    linted = {(settings.root / p).resolve() for p in result.files}
    by_path: dict[Path, list[Finding]] = {}
    for f in result.findings:
        path = (settings.root / f.path).resolve()
        if path in linted and f.cell is None:  # a notebook's comments live in its cells' JSON
            by_path.setdefault(path, []).append(f)
    for path, found in by_path.items():
        before = settings.sources.get(path)
        try:
            before = read_source(path) if before is None else before
        except (OSError, ValueError):
            continue
        after, lines = add_noqa(before, found)
        if lines and compiles(after, path):
            outcome.originals[path], outcome.texts[path] = before, after
            outcome.fixed["noqa"] += lines
    return outcome


def _encoding(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            return tokenize.detect_encoding(handle.readline)[0]
    except (OSError, SyntaxError):
        return "utf-8"


def write(outcome: FixOutcome) -> None:
    """Put the fixed texts on disk, in each file's own encoding."""
    for path in outcome.changed():
        data = outcome.texts[path].encode(_encoding(path))
        path.write_bytes(data)


def unified_diff(outcome: FixOutcome, root: Path) -> str:
    """What `write` would change, as one unified diff."""
    out = io.StringIO()
    for path in sorted(outcome.changed()):
        shown = display_path(path, root)
        for line in difflib.unified_diff(
            outcome.originals[path].splitlines(keepends=True),
            outcome.texts[path].splitlines(keepends=True),
            fromfile=shown,
            tofile=shown,
        ):
            out.write(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return out.getvalue()

"""Helpers for testing rules and models: run one rule's example, lint a snippet."""

from __future__ import annotations

import tempfile
import textwrap
from pathlib import Path

from nnlint.core.config import Settings
from nnlint.core.finding import Finding, Phase
from nnlint.core.rule import Rule
from nnlint.engine import run


def lint_source(
    source: str,
    select: list[str] | None = None,
    filename: str = "train.py",
    extra_files: dict[str, str] | None = None,
) -> list[Finding]:
    """Script findings for `source` written to a temporary file (nothing is executed)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, text in (extra_files or {}).items():
            (root / name).write_text(textwrap.dedent(text))
        path = root / filename
        path.write_text(textwrap.dedent(source))
        settings = Settings(paths=[str(path)], select=select, root=root, jobs=1, cache=False)
        return run(settings).findings


def run_example(rule: type[Rule], source: str) -> list[Finding]:
    """The findings of `rule` alone on one of its examples."""
    if rule.kind is Phase.SCRIPT:
        return [f for f in lint_source(source, select=[rule.code]) if f.code == rule.code]
    from nnlint.api import check_example

    return [f for f in check_example(source, select=[rule.code]) if f.code == rule.code]


def assert_clean(model_or_factory, batch=None, loss_fn=None, optimizer=None, **options) -> None:
    """Fail a test with the findings as text when `nnlint.check` finds anything.

    Takes the arguments of `nnlint.api.check`; info findings (skipped checks) do not fail.
    """
    __tracebackhide__ = True  # pytest shows the findings, not nnlint's frames or the batch
    from nnlint.api import check
    from nnlint.core.finding import Severity

    findings = check(model_or_factory, batch=batch, loss_fn=loss_fn, optimizer=optimizer, **options)
    problems = [f for f in findings if f.severity > Severity.INFO]
    if problems:
        lines = "\n".join(f"{f.path}:{f.line}: {f.code} {f.message}" for f in problems)
        raise AssertionError(f"nnlint found {len(problems)} problem(s):\n{lines}") from None

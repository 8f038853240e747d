"""Realistic training scripts: the clean ones are silent, each mutant reports exactly its mistake.

A mutant marks the line it expects a finding on with `# expect: NN2xx`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nnlint.core.config import Settings
from nnlint.engine import run

FIXTURES = Path(__file__).parent / "fixtures" / "scripts"
CLEAN = sorted((FIXTURES / "clean").glob("*.py"))
MUTANTS = sorted((FIXTURES / "mutants").glob("*.py"))
EXPECT = re.compile(r"#\s*expect:\s*(NN\d{3})")


@pytest.fixture(scope="module")
def findings():
    """All script findings of every fixture, from one run (every NN2 rule, default or not)."""
    settings = Settings(paths=[str(FIXTURES)], select=["NN2"], root=FIXTURES, jobs=1)
    by_file: dict[str, list] = {}
    for finding in run(settings).findings:
        by_file.setdefault(finding.path, []).append(finding)
    return by_file


def _rel(path: Path) -> str:
    return path.relative_to(FIXTURES).as_posix()


def test_fixture_set_is_large_enough():
    assert len(CLEAN) >= 12
    assert {m.name[:5] for m in MUTANTS} >= {f"nn2{n:02d}" for n in range(1, 14)}


@pytest.mark.parametrize("path", CLEAN, ids=lambda p: p.stem)
def test_clean_script_is_silent(findings, path):
    assert findings.get(_rel(path), []) == []


@pytest.mark.parametrize("path", MUTANTS, ids=lambda p: p.stem)
def test_mutant_reports_its_rule_at_its_line(findings, path):
    expected = {
        (match.group(1), number)
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        for match in [EXPECT.search(line)]
        if match
    }
    assert expected, f"{path.name} marks no `# expect:` line"
    got = {(f.code, f.line) for f in findings.get(_rel(path), [])}
    assert got == expected

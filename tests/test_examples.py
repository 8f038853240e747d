"""Golden tests: nnlint's concise output on every example matches `expected.txt` beside it.

Each `examples/<project>/<buggy|fixed>/` is linted from the repository root exactly as
its README says (`nnlint <dir>/train.py --model <dir>/model.py:Net`, plus `--isolated
--format concise`), and the output is compared line by line with `<dir>/expected.txt`:

* path, line, column and code are always compared exactly;
* messages of dynamic findings (NN3xx) and of the engine's notes about them
  (NN006/NN007) are compared with their numbers masked, since measured losses,
  ratios and step counts may differ in the last digits across machines and BLAS
  builds; every other message is compared verbatim, as is the summary line.

To regenerate the files after a rule changes or lands, run from the repository root:

    NNLINT_UPDATE=1 python -m pytest tests/test_examples.py

then read `git diff examples/` before committing: every new line must be a real bug
of the buggy example (the READMEs list them), and `fixed/` must stay silent.
"""

from __future__ import annotations

import difflib
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p.parent for p in (ROOT / "examples").glob("*/*/train.py"))
UPDATE = os.environ.get("NNLINT_UPDATE") == "1"

FINDING = re.compile(r"^(?P<where>[^\s:]+:\d+:\d+): (?P<code>NN\d{3}) (?P<message>.*)$")
# A number on its own (not part of a name such as `blocks.0.fc` or `conv1`).
NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![\w])")
MEASURED = re.compile(r"NN3\d\d|NN00[67]")


def _name(example: Path) -> str:
    return example.relative_to(ROOT / "examples").as_posix()


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "NO_COLOR": "1"}


def lint(example: Path) -> subprocess.CompletedProcess:
    rel = example.relative_to(ROOT).as_posix()
    command = [
        sys.executable,
        "-m",
        "nnlint",
        "--isolated",
        "--format",
        "concise",
        f"{rel}/train.py",
        "--model",
        f"{rel}/model.py:Net",
    ]
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=900, env=_env()
    )


def normalize(text: str) -> list[str]:
    """The comparable form of concise output: numbers masked where they are measured."""
    lines = []
    for line in text.splitlines():
        match = FINDING.match(line)
        if match and MEASURED.fullmatch(match["code"]):
            line = f"{match['where']}: {match['code']} {NUMBER.sub('<n>', match['message'])}"
        lines.append(line)
    return lines


@pytest.fixture(scope="module")
def runs() -> dict[Path, subprocess.CompletedProcess]:
    """Lint all examples at once: most of each run is waiting on a child or on torch."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(EXAMPLES, pool.map(lint, EXAMPLES), strict=True))


def test_every_project_has_buggy_and_fixed_versions():
    projects = {p.parent.name for p in EXAMPLES}
    assert projects == {"mnist_cnn", "cifar_resnet", "char_transformer", "tabular_regression"}
    assert {p.name for p in EXAMPLES} == {"buggy", "fixed"}
    assert len(EXAMPLES) == 8
    for example in EXAMPLES:
        assert (example / "model.py").is_file() and (example.parent / "README.md").is_file()


@pytest.mark.parametrize("example", EXAMPLES, ids=_name)
def test_output_matches_expected(example, runs):
    run = runs[example]
    assert run.stderr == "", run.stderr
    assert "Traceback" not in run.stdout
    expected_file = example / "expected.txt"
    if UPDATE:
        expected_file.write_text(run.stdout)
    assert expected_file.exists(), f"no {expected_file}; run with NNLINT_UPDATE=1"
    expected, actual = normalize(expected_file.read_text()), normalize(run.stdout)
    diff = "\n".join(difflib.unified_diff(expected, actual, "expected", "actual", lineterm=""))
    assert actual == expected, f"{_name(example)} differs from expected.txt:\n{diff}"
    findings = [line for line in actual if FINDING.match(line)]
    assert run.returncode == (1 if example.name == "buggy" else 0), run.stdout
    if example.name == "buggy":
        assert findings, "a buggy example must give findings"


@pytest.mark.parametrize("example", [e for e in EXAMPLES if e.name == "fixed"], ids=_name)
def test_fixed_examples_are_silent(example, runs):
    assert runs[example].stdout.strip() == "All checks passed!", runs[example].stdout


def test_buggy_examples_cover_every_default_rule(runs):
    """Together the buggy versions make every rule that is on by default fire (NN0xx aside)."""
    listing = subprocess.run(
        [sys.executable, "-m", "nnlint", "--isolated", "--list-rules"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    default = {
        line.split()[0]
        for line in listing.splitlines()
        if line.startswith("NN") and not line.startswith("NN0") and "(off by default)" not in line
    }
    fired = {
        match["code"]
        for example, run in runs.items()
        if example.name == "buggy"
        for match in map(FINDING.match, run.stdout.splitlines())
        if match
    }
    assert default - fired == set(), f"no buggy example triggers {sorted(default - fired)}"


@pytest.mark.parametrize("example", [e for e in EXAMPLES if e.name == "fixed"], ids=_name)
def test_fixed_training_script_runs(example):
    """The fixed examples are real code: each trains for its few steps and exits 0."""
    run = subprocess.run(
        [sys.executable, "train.py"],
        cwd=example,
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(),
    )
    assert run.returncode == 0, run.stderr
    assert "loss" in run.stdout
    assert "nan" not in run.stdout.lower()


def test_normalize_masks_measured_numbers_only():
    text = (
        "m.py:3:1: NN301 loss at init 22.3, expected 3.47 = ln(32) in `blocks.0.fc`\n"
        "t.py:4:5: NN209 the declared torch floor is 2.1\n"
        "Found 2 findings (2 warnings).\n"
    )
    assert normalize(text) == [
        "m.py:3:1: NN301 loss at init <n>, expected <n> = ln(<n>) in `blocks.0.fc`",
        "t.py:4:5: NN209 the declared torch floor is 2.1",
        "Found 2 findings (2 warnings).",
    ]

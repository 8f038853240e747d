"""`--fix`, `--unsafe-fixes`, `--diff` and `--fix-only` through the real command line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nnlint.core.finding import Finding
from nnlint.core.fix import Edit, Fix
from nnlint.fixing import apply_fixes

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

FORWARD = """\
import torch
model = torch.nn.Linear(4, 2)
out = model.forward(torch.randn(1, 4))
"""

UNSAFE = """\
import torch
model = torch.nn.Linear(4, 2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for x, y in loader:
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
"""

# Fixable by rules that touch different parts of one file.
FIXED_RULES = ("NN201", "NN204", "NN206", "NN207", "NN209", "NN210", "NN212", "NN217", "NN220")


def test_fixable_findings_are_marked_and_counted(cli, write):
    write("train.py", FORWARD + UNSAFE.split("\n", 1)[1])
    run = cli("--no-cache", "--format", "concise", "train.py")
    assert "NN210 [*] `model.forward" in run.out
    assert "NN201 `optimizer.step()`" in run.out  # unsafe: no marker without --unsafe-fixes
    assert "[*] 1 fixable with `--fix` (1 more with `--fix --unsafe-fixes`)." in run.out
    run = cli("--no-cache", "--format", "concise", "--unsafe-fixes", "train.py")
    assert "NN201 [*] `optimizer.step()`" in run.out
    assert "[*] 2 fixable with `--fix --unsafe-fixes`." in run.out


def test_fix_applies_safe_fixes_and_reports_what_is_left(cli, write):
    path = write("train.py", FORWARD + UNSAFE.split("\n", 1)[1])
    run = cli("--no-cache", "--format", "concise", "--fix", "train.py")
    text = path.read_text()
    assert "out = model(torch.randn(1, 4))" in text
    assert "zero_grad" not in text  # the unsafe fix waits for --unsafe-fixes
    assert "NN210" not in run.out and "NN201" in run.out
    assert "Found 2 findings (1 fixed, 1 remaining, 1 error)." in run.out
    assert run.code == 1
    run = cli("--no-cache", "--fix", "--unsafe-fixes", "train.py")
    assert "    optimizer.zero_grad()\n    loss = " in path.read_text()
    assert run.code == 0 and "(1 fixed, 0 remaining)" in run.out


def test_diff_prints_a_unified_diff_and_changes_nothing(cli, write):
    path = write("train.py", FORWARD)
    before = path.read_bytes()
    run = cli("--no-cache", "--diff", "train.py")
    assert path.read_bytes() == before
    assert run.out.startswith("--- train.py\n+++ train.py\n@@")
    assert "-out = model.forward(torch.randn(1, 4))\n+out = model(torch.randn(1, 4))\n" in run.out
    assert run.code == 1 and "Would fix 1 finding." in run.err
    path.write_text(FORWARD.replace(".forward", ""))
    run = cli("--no-cache", "--diff", "train.py")
    assert (run.code, run.out) == (0, "")


def test_fix_only_reports_nothing_and_exits_0(cli, write):
    path = write("train.py", FORWARD + UNSAFE.split("\n", 1)[1])
    run = cli("--no-cache", "--fix-only", "train.py")
    assert (run.code, run.out) == (0, "")
    assert "Fixed 1 finding." in run.err
    assert "model(torch.randn" in path.read_text()


def test_fixes_apply_until_stable(cli, write):
    path = write(
        "train.py",
        "import torch.nn.functional as F\n"
        "loss = F.cross_entropy(F.softmax(F.softmax(model(x), 1), 1), y)\n",
    )
    run = cli("--no-cache", "--fix", "--unsafe-fixes", "train.py")
    assert path.read_text().endswith("loss = F.cross_entropy(model(x), y)\n")
    assert "2 fixed, 0 remaining" in run.out


def test_json_carries_the_fix(cli, write):
    write("train.py", FORWARD)
    found = json.loads(cli("--no-cache", "--format", "json", "train.py").out)["findings"]
    assert found[0]["fix"] == {
        "applicability": "safe",
        "message": "Call the module",
        "edits": [
            {
                "content": "model",
                "location": {"row": 3, "column": 7},
                "end_location": {"row": 3, "column": 20},
            }
        ],
    }


def test_a_fix_that_would_not_compile_is_refused():
    text = "x = f(1)\ny = g(2)\n"
    broken = Fix((Edit(1, 5, 1, 9, "(("),), True, "break it")
    good = Fix((Edit(2, 5, 2, 6, "h"),), True, "rename")
    findings = [
        Finding("a.py", 1, 1, "NN210", "n", "m", fix=broken),
        Finding("a.py", 2, 1, "NN210", "n", "m", fix=good),
    ]
    fixed, used = apply_fixes(text, Path("a.py"), findings)
    assert fixed == "x = f(1)\ny = h(2)\n"
    assert [f.fix for f in used] == [good]


# tabular_regression's bugs are all found by the model phases, none by a script rule.
MODEL_BUGS_ONLY = ("tabular_regression",)
BUGGY_EXAMPLES = sorted(p.name for p in EXAMPLES.iterdir() if (p / "buggy" / "train.py").is_file())


@pytest.mark.parametrize("example", BUGGY_EXAMPLES)
def test_fix_on_each_buggy_example(cli, tmp_path, example):
    folder = tmp_path / example
    shutil.copytree(EXAMPLES / example / "buggy", folder, ignore=shutil.ignore_patterns(".*"))
    script = folder / "train.py"
    before = {p.name: p.read_bytes() for p in folder.glob("*.py")}
    diff = cli("--no-cache", "--static-only", "--diff", "--unsafe-fixes", "train.py", cwd=folder)
    assert {p.name: p.read_bytes() for p in folder.glob("*.py")} == before
    first = cli("--no-cache", "--static-only", "--format", "json", "train.py", cwd=folder)
    fixable = {f["code"] for f in json.loads(first.out)["findings"] if f["fix"]}
    assert fixable <= set(FIXED_RULES)
    if example in MODEL_BUGS_ONLY:
        assert not fixable and diff.code == 0 and diff.out == ""
    else:
        assert fixable and diff.code == 1 and diff.out.startswith("--- train.py")
    cli("--no-cache", "--static-only", "--fix", "--unsafe-fixes", "train.py", cwd=folder)
    compile(script.read_text(), str(script), "exec")
    after = cli("--no-cache", "--static-only", "--format", "json", "train.py", cwd=folder)
    assert not {f["code"] for f in json.loads(after.out)["findings"]} & fixable


MODEL = """\
import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        return self.bn(self.conv(x)).relu()
"""


def test_graph_fix_edits_the_model_source_only_when_it_is_linted(write, tmp_path):
    # In its own process: the model phases fork a contained child, which is
    # cleanest from a process that has not run other tests' models.
    def nnlint(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "nnlint", "--isolated", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )

    model = write("net.py", MODEL)
    write("train.py", "import torch\n")
    flags = ("--no-cache", "--no-dynamic", "--input-shape", "3,8,8", "--model", "net.py:Net")
    run = nnlint(*flags, "--format", "json", "train.py")
    found = json.loads(run.stdout)["findings"]
    assert [f["fix"] for f in found if f["code"] == "NN101"] == [None], run.stderr
    nnlint(*flags, "--fix", "--unsafe-fixes", "train.py")
    assert model.read_text() == MODEL
    run = nnlint(*flags, "--fix", "--unsafe-fixes", "net.py")
    assert "self.conv = nn.Conv2d(3, 8, 3, bias=False)" in model.read_text()
    assert "NN101" not in run.stdout

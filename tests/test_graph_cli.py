"""`nnlint train.py --model mymod:Net` end to end, and bad --model specs (exit 2, one line)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("torch")

MODEL = """
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3){noqa}
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, 10)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).relu().mean((2, 3)))


def factory(width=8):
    return Net(width)


class Exploding(nn.Module):
    def __init__(self):
        super().__init__()
        raise ValueError("width must be even")


NOT_A_MODEL = 42
"""

TRAIN = """
import torch
from torch import nn

from mymod import Net

model = Net()
criterion = nn.CrossEntropyLoss()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for x, y in loader:
    optimizer.zero_grad()
    criterion(model(x), y).backward()
    optimizer.step()
"""


def _nnlint(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": ""}
    return subprocess.run(
        [sys.executable, "-m", "nnlint", "--isolated", "--no-dynamic", *args],
        cwd=tmp,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "mymod.py").write_text(textwrap.dedent(MODEL).format(noqa=""))
    (tmp_path / "train.py").write_text(textwrap.dedent(TRAIN))
    return tmp_path


def test_findings_point_at_the_conv_construction_line(project: Path):
    result = _nnlint(project, "train.py", "--model", "mymod:Net", "--format", "json")
    assert result.returncode == 1, result.stderr
    findings = json.loads(result.stdout)["findings"]
    assert [(f["code"], f["path"], f["line"], f["column"]) for f in findings] == [
        ("NN101", "mymod.py", 8, 9)
    ]
    assert findings[0]["phase"] == "graph" and "mymod.py:13" in findings[0]["note"]


def test_noqa_on_the_construction_line_silences_it(project: Path):
    (project / "mymod.py").write_text(textwrap.dedent(MODEL).format(noqa="  # noqa: NN101"))
    result = _nnlint(
        project, "train.py", "--model", "mymod:factory", "--model-kwargs", '{"width": 4}'
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "NN101" not in result.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--model", "nosuchmod:Net"], "cannot import 'nosuchmod'"),
        (["--model", "mymod:Nope"], "has no attribute 'Nope'"),
        (["--model", "mymod:NOT_A_MODEL"], "not an nn.Module class, factory or instance"),
        (["--model", "mymod:Exploding"], "width must be even"),
        (["--model", "mymod:Net", "--model-kwargs", '{"depth": 3}'], "cannot be built with"),
    ],
    ids=[
        "module-missing",
        "attribute-missing",
        "not-a-model",
        "constructor-raises",
        "wrong-kwargs",
    ],
)
def test_bad_model_specs_exit_2_with_one_line(project: Path, args, expected):
    result = _nnlint(project, "train.py", *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_model_file_with_relative_imports_gets_the_dotted_spec_suggested(project: Path):
    package = project / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "layers.py").write_text("from torch import nn\nWIDTH = 4\n")
    (package / "unet.py").write_text(
        "from torch import nn\nfrom .layers import WIDTH\n\n"
        "class UNet(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(WIDTH, 2)\n\n"
        "    def forward(self, x):\n"
        "        return self.fc(x)\n"
    )
    result = _nnlint(project, "--model", "pkg/unet.py:UNet", "--input-shape", "4")
    assert result.returncode == 2
    assert "relative import" in result.stderr
    assert "name it as a module instead: --model pkg.unet:UNet" in result.stderr
    dotted = _nnlint(project, "--model", "pkg.unet:UNet", "--input-shape", "4")
    assert dotted.returncode in (0, 1), dotted.stderr


def test_loss_takes_a_file_path_like_model(project: Path):
    (project / "losses.py").write_text(
        "import torch.nn.functional as F\n\n"
        "def smooth_ce(logits, target):\n"
        "    return F.cross_entropy(logits, target, label_smoothing=0.1)\n"
    )
    ok = _nnlint(project, "--model", "mymod:Net", "--loss", "losses.py:smooth_ce")
    assert ok.returncode in (0, 1), ok.stderr
    missing = _nnlint(project, "--model", "mymod:Net", "--loss", "nolosses.py:smooth_ce")
    assert missing.returncode == 2
    assert "nolosses.py: no such file" in missing.stderr


def test_a_loss_in_a_package_is_found_without_running_the_package(project: Path):
    package = project / "lossy"
    package.mkdir()
    (package / "__init__.py").write_text(
        "import os\nopen('INIT_RAN', 'w').close()\nos.chdir(os.sep)\n"
    )
    (package / "ce.py").write_text(
        "import torch.nn.functional as F\n\ndef ce(logits, target):\n"
        "    return F.cross_entropy(logits, target)\n"
    )
    ok = _nnlint(project, "--model", "mymod:Net", "--loss", "lossy.ce:ce", "-o", "out.txt")
    assert ok.returncode in (0, 1), ok.stderr
    assert (project / "out.txt").is_file()  # nnlint's own folder did not move
    assert not (project / "INIT_RAN").exists()  # the package ran only in the contained child
    missing = _nnlint(project, "--model", "mymod:Net", "--loss", "lossy.nope:ce")
    assert missing.returncode == 2
    assert "cannot find module 'lossy.nope'" in missing.stderr
    assert not (project / "INIT_RAN").exists()

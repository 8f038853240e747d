"""`nnlint train.py --model model.py:Net` end to end: the script's run teaches the setup, safely."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("torch")

MODEL = """
import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self, classes=10, init_scale=1.0):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 4 * 4, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, classes)
        with torch.no_grad():
            self.fc3.weight.mul_(init_scale)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc3(F.relu(self.fc2(x)))


def make_model(classes=10):
    return Net(classes)
"""

LOOP = """
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
data = [(torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))) for _ in range(3)]
for x, y in data:
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
torch.save(model.state_dict(), "final.pt")
"""

HEADER = "import os, sys, time\nimport torch\nimport torch.nn.functional as F\nfrom model import Net, make_model\ntorch.manual_seed(0)\n"


OWN_CACHES = ("__pycache__", ".nnlint_cache")  # Python's and nnlint's, not the user's files


def lint(tmp_path, script, *flags, spec="model.py:Net"):
    (tmp_path / "model.py").write_text(MODEL)
    (tmp_path / "train.py").write_text(textwrap.dedent(script))
    (tmp_path / "keep.txt").write_text("user data\n")
    before = sorted(p.name for p in tmp_path.iterdir() if p.name not in OWN_CACHES)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nnlint",
            "train.py",
            "--model",
            spec,
            "--format",
            "json",
            "--extend-select",
            "NN006",
            *flags,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    after = sorted(p.name for p in tmp_path.iterdir() if p.name not in OWN_CACHES)
    assert before == after, "nnlint changed the user's files"
    assert (tmp_path / "keep.txt").read_text() == "user data\n"
    assert "Traceback" not in proc.stderr, proc.stderr
    report = json.loads(proc.stdout)
    return proc.returncode, report


def of(report, code):
    return [f for f in report["findings"] if f["code"] == code]


def test_healthy_script_gives_no_finding_and_times_each_check(tmp_path):
    rc, report = lint(tmp_path, HEADER + "model = Net()\n" + LOOP)
    assert rc == 0, report["findings"]
    assert report["findings"] == []
    timings = report["summary"]["timings"]
    assert "capture" in timings and "dynamic.cannot-overfit" in timings


def test_the_scripts_constructor_arguments_are_used(tmp_path):
    rc, report = lint(tmp_path, HEADER + "model = Net(init_scale=500.0)\n" + LOOP)
    found = of(report, "NN301")
    assert rc == 1 and found and not of(report, "NN006")
    assert found[0]["path"] == "model.py"
    assert "self.fc3 = nn.Linear" in MODEL.splitlines()[found[0]["line"] - 1]


def test_model_defined_in_the_script_and_its_summed_loss(tmp_path):
    script = HEADER + MODEL.replace("class Net", "class Small").replace(
        "return Net(", "return Small("
    )
    script += "\nmodel = Small()\n" + LOOP.replace(
        "F.cross_entropy(model(x), y)", 'F.cross_entropy(model(x), y, reduction="sum")'
    )
    rc, report = lint(tmp_path, script, spec="train.py:Small")
    found = of(report, "NN312")
    assert found and found[0]["path"] == "train.py", report["findings"]
    assert 'reduction="sum"' in script.splitlines()[found[0]["line"] - 1]


def test_factory_spec(tmp_path):
    rc, report = lint(
        tmp_path, HEADER + "model = make_model()\n" + LOOP, spec="model.py:make_model"
    )
    assert report["findings"] == [] and rc == 0


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("rows = open('data/train.csv').read()\nmodel = Net()\n" + LOOP, "FileNotFoundError"),
        ("model = Net()\nsys.exit(3)\n" + LOOP, "sys.exit(3)"),
        ("model = Net()\nwhile True:\n    time.sleep(0.1)\n", "within 2 s"),
    ],
    ids=[
        "needs-data",
        "exits",
        "hangs",
    ],
)
def test_unusable_script_is_one_nn006_and_falls_back(tmp_path, body, reason):
    rc, report = lint(tmp_path, HEADER + body, "--capture-timeout", "2")
    notes = of(report, "NN006")
    assert len(notes) == 1 and reason in notes[0]["message"], report["findings"]
    assert notes[0]["path"] == "train.py" and notes[0]["severity"] == "info"
    assert rc == 0
    assert "dynamic.init-loss" in report["summary"]["timings"]


@pytest.mark.parametrize(
    ("body", "refusal", "needs"),
    [
        ("open('log.txt', 'w').write('x')", "refused a write", "overlay"),
        ("os.makedirs('out/logs'); open('out/logs/run.log', 'w')", "refused os.mkdir", "overlay"),
        ("torch.save(model.state_dict(), 'init.pt')", "refused torch.save", "overlay"),
        ("os.remove('keep.txt')", "refused os.remove", "overlay"),
        ("os.rename('keep.txt', 'moved.txt')", "refused os.rename", "overlay"),
        ("os.system('touch made.txt')", "refused to start a process", "overlay + landlock"),
    ],
    ids=["writes", "makes-folders", "torch-save", "removes", "renames", "subprocess"],
)
def test_a_script_changing_files_changes_a_scratch_copy(tmp_path, body, refusal, needs):
    """Contained by the kernel, the script runs on; else its change is refused (NN006)."""
    rc, report = lint(tmp_path, HEADER + "model = Net()\n" + body + "\n" + LOOP)
    protection = report["summary"]["protection"] or ""
    if protection.startswith(needs):
        assert of(report, "NN006") == [], report["findings"]
        assert "dynamic.init-loss" in report["summary"]["timings"]
    else:
        notes = of(report, "NN006")
        assert len(notes) == 1 and refusal in notes[0]["message"], report["findings"]


def test_no_capture_does_not_run_the_script(tmp_path):
    rc, report = lint(tmp_path, HEADER + "model = Net()\nsys.exit(3)\n", "--no-capture")
    assert of(report, "NN006") == [] and "capture" not in report["summary"]["timings"]


def test_hf_style_model_loss_is_learned(tmp_path):
    pytest.importorskip("transformers")
    (tmp_path / "hf.py").write_text(
        textwrap.dedent("""
        import torch
        import transformers


        def tiny_gpt2():
            config = transformers.GPT2Config(vocab_size=96, n_positions=32, n_embd=32, n_layer=2, n_head=2)
            return transformers.GPT2LMHeadModel(config)
    """)
    )
    script = """
        import torch
        from hf import tiny_gpt2
        torch.manual_seed(0)
        model = tiny_gpt2()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x = torch.randint(0, 96, (4, 24))
        out = model(input_ids=x, labels=x)
        out.loss.backward()
        optimizer.step()
    """
    rc, report = lint(tmp_path, script, spec="hf.py:tiny_gpt2")
    assert of(report, "NN006") == [] and rc == 0, report["findings"]

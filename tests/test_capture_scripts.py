"""Real training scripts captured through the CLI: their arguments, CUDA, their own model,
module-level loops, and the Lightning, HF Trainer and Accelerate loops."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

NET = """
import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self, width, classes=10):
        super().__init__()
        self.fc1 = nn.Linear(20, width)
        self.fc2 = nn.Linear(width, classes)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))
"""

LOOP = """
optimizer = torch.optim.SGD(model.parameters(), lr=0.003)
for _ in range(3):
    x, y = torch.randn(16, 20), torch.randint(0, 10, (16,))
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y, reduction=REDUCTION)
    loss.backward()
    optimizer.step()
"""


def files_of(folder: Path) -> dict[str, str]:
    """Every file under `folder` and its sha256, leaving out Python's and nnlint's caches."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not {"__pycache__", ".nnlint_cache"} & set(p.parts)
    }


def lint(tmp_path: Path, files: dict[str, str], *flags: str) -> tuple[int, dict, str]:
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    before = files_of(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "nnlint", "train.py", "--format", "json"]
        + ["--extend-select", "NN006", *flags],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert files_of(tmp_path) == before, "nnlint changed the user's files"
    assert "Traceback" not in proc.stderr, proc.stderr
    report = json.loads(proc.stdout) if proc.stdout else {}
    return proc.returncode, report, proc.stderr


def codes(report: dict) -> list[str]:
    return sorted(f["code"] for f in report["findings"])


def of(report: dict, code: str) -> list[dict]:
    return [f for f in report["findings"] if f["code"] == code]


ARGPARSE = (
    NET
    + """
import argparse

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, required=True)
parser.add_argument("--reduction", default="mean")
args = parser.parse_args()
REDUCTION = args.reduction
model = Net(32)
"""
    + LOOP
)


@pytest.mark.parametrize("where", ["flag", "config"])
def test_script_args_reach_the_script(tmp_path, where):
    flags = ["--model", "train.py:Net"]
    if where == "flag":
        flags.append("--script-args=--epochs 1 --reduction sum")
    else:
        config = '[tool.nnlint]\nscript-args = ["--epochs", "1", "--reduction", "sum"]\n'
        (tmp_path / "pyproject.toml").write_text(config)
    rc, report, _ = lint(tmp_path, {"train.py": ARGPARSE}, *flags)
    assert not of(report, "NN006"), report["findings"]
    assert of(report, "NN312"), report["findings"]  # the summed loss: argv was read


@pytest.mark.parametrize(
    ("flags", "config", "message"),
    [
        (["--script-args", "--epochs '1"], None, "--script-args: cannot split"),
        ([], "script-args = 3", "'script-args' must be a string or a list of strings"),
        ([], 'script-args = "--epochs \'1"', "config key 'script-args': cannot split"),
    ],
    ids=["unbalanced-quote", "config-number", "config-unbalanced"],
)
def test_bad_script_args_are_a_usage_error(tmp_path, flags, config, message):
    (tmp_path / "train.py").write_text("import torch\n")
    if config:
        (tmp_path / "nnlint.toml").write_text(config + "\n")
    proc = subprocess.run(
        [sys.executable, "-m", "nnlint", "train.py", "--model", "train.py:Net", *flags],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_script_that_needs_cuda_runs_on_the_cpu_and_says_where(tmp_path):
    script = (
        NET
        + "REDUCTION = 'sum'\ndevice = torch.device('cuda')\nmodel = Net(32).cuda()\n"
        + LOOP.replace("torch.randn(16, 20)", "torch.randn(16, 20, device='cuda')").replace(
            "(16,))", "(16,)).to(device)"
        )
    )
    rc, report, _ = lint(tmp_path, {"train.py": script}, "--model", "train.py:Net")
    notes = of(report, "NN006")
    assert len(notes) == 1, report["findings"]
    assert "run on the CPU" in notes[0]["message"] and "CUDA" in notes[0]["message"]
    line = script.splitlines()[notes[0]["line"] - 1]
    assert line == "model = Net(32).cuda()"
    assert of(report, "NN312"), report["findings"]  # and the first batch was still captured


def test_the_model_the_script_builds_is_used_and_its_writes_stay_in_scratch(tmp_path):
    """A class that cannot be built without arguments, a module-level loop that makes
    folders and reads back what it wrote, and a user file it overwrites: the run goes on,
    on the model the script built, and the user's files stay byte-identical."""
    script = (
        NET
        + """
import os

os.makedirs("out/logs", exist_ok=True)
with open("out/logs/config.txt", "w") as fh:
    fh.write("sum")
with open("notes.txt", "w") as fh:
    fh.write("overwritten")
REDUCTION = open("out/logs/config.txt").read()
model = Net(width=48)
"""
        + LOOP
    )
    files = {"train.py": script, "notes.txt": "the user's notes\n"}
    rc, report, _ = lint(tmp_path, files, "--model", "train.py:Net")
    protection = report["summary"].get("protection") or ""
    if not protection.startswith("overlay"):
        pytest.skip(f"the kernel offers no overlay here ({protection})")
    assert not of(report, "NN006"), report["findings"]
    assert of(report, "NN312"), report["findings"]  # the loss as read back from out/
    assert (tmp_path / "notes.txt").read_text() == "the user's notes\n"
    assert not (tmp_path / "out").exists()


LIGHTNING = """
import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset


class LitNet(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 10), nn.Softmax(-1))
        self.example_input_array = torch.randn(2, 20)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(CALL(x), y, reduction="sum")
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


torch.manual_seed(0)
data = TensorDataset(torch.randn(64, 20), torch.randint(0, 10, (64,)))
trainer = L.Trainer(max_epochs=1, accelerator="cpu", enable_progress_bar=False)
trainer.fit(LitNet(), DataLoader(data, batch_size=16))
"""


@pytest.mark.parametrize("call", ["self", "self.net"])
def test_lightning_fit_gives_its_batch_loss_and_optimizer(tmp_path, call):
    """`training_step` runs inside `optimizer.step(closure)`; Lightning's own summary
    forward of `example_input_array` (2 samples, eval, no_grad) is not the batch."""
    pytest.importorskip("lightning")
    script = LIGHTNING.replace("CALL", call)
    rc, report, _ = lint(tmp_path, {"train.py": script}, "--model", "train.py:LitNet")
    assert not of(report, "NN006"), report["findings"]
    assert of(report, "NN102"), report["findings"]
    summed = of(report, "NN312")  # only the loss training_step computes is summed
    assert summed and 'reduction="sum"' in script.splitlines()[summed[0]["line"] - 1]


HF_TRAINER = """
import torch
import transformers
from torch.utils.data import Dataset


class Tokens(Dataset):
    def __init__(self):
        self.ids = torch.randint(0, 96, (32, 16), generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def tiny_gpt2():
    config = transformers.GPT2Config(vocab_size=96, n_positions=32, n_embd=32, n_layer=2, n_head=2)
    return transformers.GPT2LMHeadModel(config)


torch.manual_seed(0)
args = transformers.TrainingArguments(
    output_dir="out", per_device_train_batch_size=8, max_steps=2, report_to=[], use_cpu=True,
    save_strategy="no", logging_strategy="no", learning_rate=1e-3,
)
transformers.Trainer(model=tiny_gpt2(), args=args, train_dataset=Tokens()).train()
"""


def test_hf_trainer_with_a_factory_defined_in_the_script(tmp_path):
    """The model the factory returns, the Trainer's batch and the model's own loss
    (which the Trainer normalises by the batch's token count: not a summed loss)."""
    pytest.importorskip("transformers")
    rc, report, _ = lint(tmp_path, {"train.py": HF_TRAINER}, "--model", "train.py:tiny_gpt2")
    assert report["findings"] == [] and rc == 0
    assert "dynamic.cannot-overfit" in report["summary"]["timings"]


ACCELERATE = (
    NET.replace("return self.fc2(", "return F.softmax(self.fc2(").replace("(x)))", "(x))), -1)")
    + """
from accelerate import Accelerator
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(0)
accelerator = Accelerator(cpu=True)
model = Net(32)
optimizer = torch.optim.AdamW(model.fc2.parameters(), lr=1e-3)
loader = DataLoader(TensorDataset(torch.randn(64, 20), torch.randint(0, 10, (64,))), batch_size=16)
model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
for x, y in loader:
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    accelerator.backward(loss)
    optimizer.step()
"""
)


def test_accelerate_gives_the_unwrapped_optimizer(tmp_path):
    pytest.importorskip("accelerate")
    rc, report, _ = lint(tmp_path, {"train.py": ACCELERATE}, "--model", "train.py:Net")
    assert not of(report, "NN006"), report["findings"]
    assert of(report, "NN102") and of(report, "NN308"), report["findings"]


SWITCHED_LOSS = """
import argparse

import torch
from torch import nn

parser = argparse.ArgumentParser()
parser.add_argument("--loss", default="logits", choices=["logits", "probs"])
args = parser.parse_args()
torch.manual_seed(0)
x = torch.randn(64, 8)
y = (x[:, 0] > 0).float()


class Clf(nn.Module):
    def __init__(self, probs=False):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
        self.probs = probs

    def forward(self, x):
        out = self.body(x).squeeze(-1)
        return torch.sigmoid(out) if self.probs else out


model = Clf(probs=args.loss == "probs")
crit = nn.BCEWithLogitsLoss() if args.loss == "logits" else nn.BCELoss()
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
for i in range(0, 64, 16):
    loss = crit(model(x[i : i + 16]), y[i : i + 16])
    opt.zero_grad()
    loss.backward()
    opt.step()
"""


@pytest.mark.parametrize("mode", ["logits", "probs"])
def test_a_loss_chosen_by_a_flag_is_judged_as_the_script_ran(tmp_path, mode):
    # The graph rule takes the loss the script was seen calling, the script rule
    # stays silent on `A() if flag else B()`: neither knows the other branch runs.
    flags = ["--model", "train.py:Clf", f"--script-args=--loss {mode}"]
    rc, report, stderr = lint(tmp_path, {"train.py": SWITCHED_LOSS}, *flags)
    assert rc == 0, (report.get("findings"), stderr)
    assert codes(report) == [], report["findings"]


def test_an_unseeded_script_draws_the_same_numbers_on_every_run(tmp_path):
    script = """
    import random
    import sys

    import numpy
    import torch

    drawn = (torch.rand(1).item(), random.random(), numpy.random.rand())
    sys.exit(f"drew {drawn}")
    """
    files = {"models.py": "import torch\nNet = lambda: torch.nn.Linear(4, 2)\n", "train.py": script}
    messages = []
    for _ in range(2):
        rc, report, _ = lint(tmp_path, files, "--model", "models.py:Net")
        messages += [f["message"] for f in of(report, "NN006")]
    assert len(messages) == 2 and "drew (" in messages[0], messages
    assert messages[0] == messages[1]


def test_model_kwargs_the_script_does_not_use_are_reported_where_it_builds_the_model(tmp_path):
    # The checks run on the model the script built; a flag that changed nothing says so.
    train = "import torch\nimport torch.nn.functional as F\nfrom models import Net\n"
    train += "model = Net(width=16)\n" + LOOP.replace("REDUCTION", '"mean"')
    files = {"models.py": NET, "train.py": train}
    rc, report, stderr = lint(tmp_path, files, "--model", "models.py:Net")
    assert rc == 0 and of(report, "NN006") == [], (report.get("findings"), stderr)
    flags = ("--model", "models.py:Net", "--model-kwargs", '{"width": 64}')
    rc, report, stderr = lint(tmp_path, files, *flags)
    assert rc == 0, (report.get("findings"), stderr)
    (note,) = of(report, "NN006")
    assert (note["path"], note["line"], note["column"]) == ("train.py", 4, 9), note
    assert "it calls Net(...) itself, so --model-kwargs was not applied" in note["message"]

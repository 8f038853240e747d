"""Bad input, end to end: the real CLI, driven as a user would, on broken projects.

Each case writes a small project to a temporary directory, runs `python -m nnlint`
there in a subprocess and checks the outcome against the exit-code table of the
README:

* "usage": nnlint cannot start, so exit 2, exactly one line on stderr that starts
  with `nnlint: error:` and says what is wrong, and nothing on stdout (with
  `--format json`/`sarif` too: no half-written document);
* "finding": the input is valid but a phase cannot use it, so an NN0xx finding
  says why, nnlint falls back and goes on, and the other findings decide the exit.

Every case also checks that no traceback is printed, that a JSON or SARIF report
is a whole document when there is one, and that no file of the user's project was
changed, deleted or created (bytecode caches aside).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

MODEL = """\
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class NeedsArgs(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc = nn.Linear(dim, 3)

    def forward(self, x):
        return self.fc(x)


class Raises(nn.Module):
    def forward(self, x):
        raise RuntimeError("forward is not implemented for this input")


class Text(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return "logits"


class Plain:
    pass


def build_raising():
    raise ValueError("unknown backbone 'resnet9000'")


def build_string():
    return "resnet18"


def batch_raising():
    raise RuntimeError("the dataset server is down")


def batch_text():
    return "not a batch"


def batch_bad_labels():
    return torch.randn(4, 8), torch.randint(5, 9, (4,))


def batch_wrong_nesting():
    return {"a": [{"b": torch.randn(2)}]}


def loss_sum(out, y):
    return out.sum()


LAYERS = 3
"""

# A clean script: the whole pipeline (script, graph, dynamic) reports nothing on it.
TRAIN = """\
import torch
from model import Net

torch.manual_seed(0)
model = Net()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
{prelude}
for step in range(3):
    x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
    optimizer.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
"""

BUGGY = """\
import torch
from model import Net

model = Net()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(3):
    x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
"""

FULL = ("train.py", "--model", "model.py:Net")
NO_DYNAMIC = (*FULL, "--no-dynamic")
# The GPU cases expect a machine without one; elsewhere they are expected to fail.
GPU = "this machine has a GPU" if shutil.which("nvidia-smi") else ""


def train(prelude: str = "") -> str:
    return TRAIN.format(prelude=textwrap.dedent(prelude))


@dataclass
class Case:
    id: str
    args: tuple[str, ...]
    outcome: str  # "usage" or "finding"
    needle: str = ""  # in the stderr line (usage) or in the stdout (finding)
    code: str = ""  # the NN0xx code a "finding" case must report
    exit: int = 0  # the exit code of a "finding" case
    files: dict[str, str | bytes] = field(default_factory=dict)
    fmt: str = "concise"
    xfail: str = ""


def project(**extra: str | bytes) -> dict[str, str | bytes]:
    return {"model.py": MODEL, "train.py": train(), **extra}


CASES = [
    # -- nnlint cannot start: exit 2, one line -------------------------------------
    Case("missing-script", ("missing.py",), "usage", "missing.py: no such file"),
    Case(
        "missing-script-with-model",
        ("missing.py", "--model", "model.py:Net"),
        "usage",
        "missing.py: no such file",
    ),
    Case("unknown-flag", ("--frobnicate", "train.py"), "usage", "--frobnicate"),
    Case("unknown-rule-code", ("--select", "NN999", "train.py"), "usage", "NN999"),
    Case("unknown-rule-name", ("--ignore", "no-such-rule", "train.py"), "usage", "no-such-rule"),
    Case("unknown-rule-json", ("--extend-select", "NN9", "train.py"), "usage", "NN9", fmt="json"),
    Case("bad-fail-level", ("--fail-level", "fatal", "train.py"), "usage", "fatal"),
    Case(
        "malformed-config",
        ("train.py",),
        "usage",
        "pyproject.toml",
        files=project(**{"pyproject.toml": "[tool.nnlint\nselect = ['NN2']\n"}),
    ),
    Case(
        "unknown-config-key",
        ("train.py",),
        "usage",
        "colour",
        files=project(**{"pyproject.toml": "[tool.nnlint]\ncolour = 'red'\n"}),
    ),
    Case(
        "unknown-rule-in-config",
        ("train.py",),
        "usage",
        "NN999",
        files=project(**{"pyproject.toml": "[tool.nnlint]\nignore = ['NN999']\n"}),
    ),
    Case(
        "unknown-rule-option",
        ("train.py",),
        "usage",
        "nope",
        files=project(**{"pyproject.toml": "[tool.nnlint.rules.init-loss]\nnope = 1\n"}),
    ),
    Case(
        "bad-model-in-config",
        ("train.py",),
        "usage",
        "no_such_pkg",
        files=project(**{"pyproject.toml": "[tool.nnlint]\nmodel = 'no_such_pkg:Net'\n"}),
    ),
    Case("missing-config-file", ("--config", "nope.toml", "train.py"), "usage", "nope.toml"),
    Case("model-spec-without-colon", ("train.py", "--model", "model.py"), "usage", "model.py"),
    Case(
        "model-module-missing",
        ("train.py", "--model", "no_such_pkg.models:Net"),
        "usage",
        "no_such_pkg",
    ),
    Case(
        "model-file-missing", ("train.py", "--model", "models/net.py:Net"), "usage", "models/net.py"
    ),
    Case(
        "model-attribute-missing", ("train.py", "--model", "model.py:Missing"), "usage", "Missing"
    ),
    Case("model-not-callable", ("train.py", "--model", "model.py:LAYERS"), "usage", "int"),
    Case("model-class-not-module", ("train.py", "--model", "model.py:Plain"), "usage", "Plain"),
    Case(
        "factory-raising",
        ("train.py", "--model", "model.py:build_raising"),
        "usage",
        "unknown backbone 'resnet9000'",
    ),
    Case(
        "factory-returns-string", ("train.py", "--model", "model.py:build_string"), "usage", "str"
    ),
    Case(
        "model-needs-arguments",
        ("train.py", "--model", "model.py:NeedsArgs"),
        "usage",
        "--model-kwargs",
    ),
    Case(
        "model-wrong-kwargs",
        ("train.py", "--model", "model.py:NeedsArgs", "--model-kwargs", '{"width": 4}'),
        "usage",
        "width",
    ),
    Case(
        "model-kwargs-not-json",
        ("train.py", "--model", "model.py:Net", "--model-kwargs", "{dim"),
        "usage",
        "JSON",
    ),
    Case(
        "model-file-syntax-error",
        ("train.py", "--model", "broken.py:Net"),
        "usage",
        "SyntaxError",
        files=project(**{"broken.py": "class Net(:\n    pass\n"}),
    ),
    Case(
        "model-import-exits",
        ("train.py", "--model", "quits.py:Net"),
        "usage",
        "sys.exit",
        files=project(**{"quits.py": "import sys\nsys.exit('no GPU, bye')\n"}),
    ),
    Case(
        "model-usage-error-sarif",
        ("train.py", "--model", "model.py:Missing"),
        "usage",
        "Missing",
        fmt="sarif",
    ),
    Case(
        "model-usage-error-json",
        ("train.py", "--model", "model.py:build_raising"),
        "usage",
        "resnet9000",
        fmt="json",
    ),
    Case("bad-input-shape", (*NO_DYNAMIC, "--input-shape", "8,x"), "usage", "8,x"),
    Case(
        "data-module-missing",
        (*NO_DYNAMIC, "--data", "no_such_data:batch"),
        "usage",
        "no_such_data",
    ),
    Case("data-spec-without-colon", (*NO_DYNAMIC, "--data", "model.py"), "usage", "--data"),
    Case("device-cuda-without-gpu", (*NO_DYNAMIC, "--device", "cuda"), "usage", "cuda", xfail=GPU),
    Case("unknown-rule-explain", ("rule", "NN999"), "usage", "NN999"),
    Case("unknown-optimizer", (*NO_DYNAMIC, "--optimizer", "Adamm"), "usage", "Adamm"),
    Case(
        "unknown-loss-module", (*NO_DYNAMIC, "--loss", "no_such_loss:fn"), "usage", "no_such_loss"
    ),
    Case("unknown-loss-name", (*NO_DYNAMIC, "--loss", "hinge"), "usage", "hinge"),
    Case("bad-input-dtype", (*NO_DYNAMIC, "--input-dtype", "floaty"), "usage", "floaty"),
    Case("negative-capture-timeout", (*FULL, "--capture-timeout", "-1"), "usage", "-1"),
    Case(
        "empty-select-in-config",
        ("train.py",),
        "usage",
        "'select' names no rule",
        files=project(**{"pyproject.toml": "[tool.nnlint]\nselect = []\n"}),
    ),
    Case(
        "empty-model-in-config",
        ("train.py",),
        "usage",
        "'model' is empty",
        files=project(**{"pyproject.toml": "[tool.nnlint]\nmodel = ''\n"}),
    ),
    Case("empty-model-flag", ("train.py", "--model="), "usage", "--model '': needs a value"),
    Case("empty-loss-flag", (*NO_DYNAMIC, "--loss="), "usage", "--loss '': needs a value"),
    Case("empty-output-path", ("train.py", "-o", ""), "usage", "-o '': needs a path"),
    Case(
        "optimizer-option-says-a-number-is-expected",
        (*NO_DYNAMIC, "--optimizer", "AdamW:lr=abc"),
        "usage",
        "lr=abc: expected a number",
    ),
    # -- a phase cannot use valid input: an NN0xx finding, then fall back ----------
    Case(
        "script-syntax-error",
        ("train.py",),
        "finding",
        "syntax error",
        "NN002",
        1,
        files=project(**{"train.py": "for x in loader\n    pass\n"}),
    ),
    Case(
        "script-syntax-error-full",
        NO_DYNAMIC,
        "finding",
        "syntax error",
        "NN002",
        1,
        files=project(**{"train.py": "for x in loader\n    pass\n"}),
    ),
    Case(
        "binary-file",
        ("train.py", "blob.py"),
        "finding",
        "binary",
        "NN003",
        1,
        files=project(**{"blob.py": b"\x00\x01\x02\xff torch \x00"}),
    ),
    Case(
        "not-utf8",
        ("latin.py",),
        "finding",
        "utf-8",
        "NN003",
        1,
        files=project(**{"latin.py": "x = 'caf\xe9'\n".encode("latin-1")}),
    ),
    Case(
        "syntax-error-json",
        ("train.py",),
        "finding",
        "NN002",
        "NN002",
        1,
        fmt="json",
        files=project(**{"train.py": "def f(:\n"}),
    ),
    Case(
        "script-hangs",
        (*FULL, "--capture-timeout", "5"),
        "finding",
        "5 s",
        "NN006",
        0,
        files=project(**{"train.py": train("import time\nwhile True:\n    time.sleep(0.1)\n")}),
    ),
    Case(
        "script-hangs-sarif",
        (*FULL, "--capture-timeout", "5"),
        "finding",
        "NN006",
        "NN006",
        0,
        fmt="sarif",
        files=project(**{"train.py": train("import time\nwhile True:\n    time.sleep(0.1)\n")}),
    ),
    Case(
        "script-calls-sys-exit",
        FULL,
        "finding",
        "exit",
        "NN006",
        0,
        files=project(**{"train.py": train("import sys\nsys.exit(3)\n")}),
    ),
    Case(
        "script-needs-dataset",
        FULL,
        "finding",
        "data/train.csv",
        "NN006",
        0,
        files=project(**{"train.py": train("rows = open('data/train.csv').read()\n")}),
    ),
    Case(
        "script-needs-gpu",
        FULL,
        "finding",
        "NN006",
        "NN006",
        0,
        files=project(**{"train.py": train("model = model.cuda()\n")}),
        xfail=GPU,
    ),
    Case(
        "script-raises",
        FULL,
        "finding",
        "KeyError",
        "NN006",
        0,
        files=project(**{"train.py": train("config = {}\nepochs = config['epochs']\n")}),
    ),
    # A script that changes files runs on a scratch copy where the kernel allows
    # it, and is refused (NN006) elsewhere: either way the project stays as it
    # was, and the script rule's finding decides the exit.
    Case(
        "script-writes-file",
        FULL,
        "finding",
        "NN201",
        "NN201",
        1,
        files=project(**{"train.py": "open('run.log', 'w').write('started')\n" + BUGGY}),
    ),
    Case(
        "script-deletes-file",
        FULL,
        "finding",
        "NN201",
        "NN201",
        1,
        files=project(
            **{
                "train.py": "import os\nos.remove('precious.txt')\n" + BUGGY,
                "precious.txt": "the only copy\n",
            }
        ),
    ),
    Case(
        "script-torch-save",
        FULL,
        "finding",
        "NN201",
        "NN201",
        1,
        files=project(
            **{
                "train.py": BUGGY.replace(
                    "model = Net()\n", "model = Net()\ntorch.save(model.state_dict(), 'init.pt')\n"
                )
            }
        ),
    ),
    Case(
        "script-prints-json-output",
        FULL,
        "finding",
        "NN201",
        "NN201",
        1,
        fmt="json",
        files=project(
            **{
                "train.py": "print('epoch 0 loss 2.3')\n" + BUGGY,
                "model.py": "print('building the model')\n" + MODEL,
            }
        ),
    ),
    Case(
        "forward-raises",
        ("train.py", "--model", "model.py:Raises", "--no-capture"),
        "finding",
        "NN00",
        "NN00",
        0,
    ),
    Case(
        "forward-returns-string",
        ("train.py", "--model", "model.py:Text", "--no-capture"),
        "finding",
        "NN00",
        "NN00",
        0,
    ),
    Case(
        "wrong-input-shape",
        (*NO_DYNAMIC, "--no-capture", "--input-shape", "3,28,28"),
        "finding",
        "NN00",
        "NN00",
        0,
    ),
    Case(
        "data-function-raises",
        (*NO_DYNAMIC, "--data", "model.py:batch_raising"),
        "finding",
        "dataset server is down",
        "NN005",
        0,
    ),
    Case(
        "data-not-a-batch",
        (*NO_DYNAMIC, "--data", "model.py:batch_text"),
        "finding",
        "NN005",
        "NN005",
        0,
    ),
    Case("nothing-to-lint", (".",), "finding", "", "", 0, files={"README.md": "no python\n"}),
    # -- model-phase input that cannot work: usage errors or NN005/NN007, never a crash
    Case(
        "wrong-input-shape-dynamic",
        (*FULL, "--no-capture", "--input-shape", "3,28,28"),
        "finding",
        "the model's forward on --input-shape 3,28,28 raised RuntimeError",
        "NN005",
        0,
    ),
    Case(
        "huge-input-shape",
        (*FULL, "--input-shape", "100000,100000"),
        "usage",
        "more than nnlint synthesizes",
    ),
    Case("overflowing-input-shape", (*FULL, "--input-shape", str(2**62)), "usage", "values a"),
    Case(
        "config-input-shape-not-positive",
        FULL,
        "usage",
        "expected positive integers",
        files=project(**{"pyproject.toml": "[tool.nnlint]\ninput-shape = [0, -3]\n"}),
    ),
    # A pyproject.toml whose `tool` is not a table holds no [tool.nnlint]: not ours to judge...
    Case(
        "pyproject-tool-not-a-table",
        ("train.py",),
        "finding",
        "NN201",
        "NN201",
        1,
        files=project(**{"pyproject.toml": 'tool = "nnlint"\n', "train.py": BUGGY}),
    ),
    # ...unless it is named as nnlint's config.
    Case(
        "config-tool-not-a-table",
        ("--config", "pyproject.toml", "train.py"),
        "usage",
        "`tool` must be a table",
        files=project(**{"pyproject.toml": 'tool = "nnlint"\n'}),
    ),
    Case("capture-timeout-nan", (*FULL, "--capture-timeout", "nan"), "usage", "nan"),
    Case("capture-timeout-inf", (*FULL, "--capture-timeout", "inf"), "usage", "inf"),
    Case(
        "loss-attribute-missing",
        (*FULL, "--no-capture", "--loss", "model:no_such_loss"),
        "usage",
        "has no attribute 'no_such_loss'",
    ),
    # ...and also where the training script runs, whose own loss would be used.
    Case(
        "loss-attribute-missing-with-script",
        (*FULL, "--loss", "model:no_such_loss"),
        "usage",
        "has no attribute 'no_such_loss'",
    ),
    Case(
        "loss-class-raising",
        (*FULL, "--loss", "losses.py:Strict"),
        "usage",
        "--loss 'losses.py:Strict': building it raised TypeError",
        files=project(
            **{"losses.py": "class Strict:\n    def __init__(self, weight):\n        pass\n"}
        ),
    ),
    Case("device-meta", (*FULL, "--device", "meta"), "usage", "needs cpu, cuda or mps"),
    Case("optimizer-option-not-a-number", (*FULL, "--optimizer", "AdamW:lr=abc"), "usage", "abc"),
    Case("empty-select", ("--select", "", "train.py"), "usage", "names no rule"),
    Case("script-missing", (*FULL, "--script", "missing.py"), "usage", "missing.py: no such"),
    Case(
        "data-labels-out-of-range",
        (*FULL, "--no-capture", "--data", "model.py:batch_bad_labels"),
        "finding",
        "dynamic checks skipped: the forward and loss on the batch raised IndexError",
        "NN007",
        1,  # and suspicious-inputs (a warning) says the labels are beyond the outputs
    ),
    Case(
        "data-wrong-nesting",
        (*FULL, "--no-capture", "--data", "model.py:batch_wrong_nesting"),
        "finding",
        "the model's forward on --data model.py:batch_wrong_nesting raised TypeError",
        "NN005",
        0,
    ),
]


def digest(root: Path) -> dict[str, str]:
    """Content hashes of the project's files, bytecode caches and nnlint's own cache aside."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not {"__pycache__", ".nnlint_cache"} & set(p.parts)
    }


@dataclass
class Outcome:
    code: int
    out: str
    err: str
    before: dict[str, str]
    after: dict[str, str]


def execute(case: Case, root: Path) -> Outcome:
    root.mkdir(parents=True)
    for name, content in (case.files or project()).items():
        path = root / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    before = digest(root)
    env = {**os.environ, "NO_COLOR": "1"}
    try:
        run = subprocess.run(
            [sys.executable, "-m", "nnlint", "--isolated", "--format", case.fmt, *case.args]
            if not any(a.endswith("pyproject.toml") or a == "--config" for a in case.args)
            and "pyproject.toml" not in case.files
            else [sys.executable, "-m", "nnlint", "--format", case.fmt, *case.args],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
        code, out, err = run.returncode, run.stdout, run.stderr
    except subprocess.TimeoutExpired as exc:
        code, out, err = -1, str(exc.stdout or ""), f"timed out: {exc}"
    return Outcome(code, out, err, before, digest(root))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, Outcome]:
    """Run every case once, a few at a time: most of the wall time is torch starting up."""
    base = tmp_path_factory.mktemp("bad_input")
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = pool.map(lambda c: execute(c, base / c.id), CASES)
        return {case.id: result for case, result in zip(CASES, results, strict=True)}


def _params() -> list:
    return [
        pytest.param(
            case,
            id=case.id,
            marks=[pytest.mark.xfail(strict=False, reason=case.xfail)] if case.xfail else [],
        )
        for case in CASES
    ]


def test_the_matrix_is_wide_enough():
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)
    assert sum(c.outcome == "usage" for c in CASES) >= 15
    assert sum(c.outcome == "finding" for c in CASES) >= 15


@pytest.mark.parametrize("case", _params())
def test_bad_input(case: Case, outcomes: dict[str, Outcome]):
    result = outcomes[case.id]
    shown = f"exit {result.code}\n--- stdout\n{result.out}\n--- stderr\n{result.err}"
    assert "Traceback" not in result.out + result.err, shown
    assert result.after == result.before, f"the project changed\n{shown}"
    if case.outcome == "usage":
        assert result.code == 2, shown
        assert result.out == "", shown
        assert result.err.endswith("\n") and result.err.count("\n") == 1, shown
        assert result.err.startswith("nnlint: error: "), shown
        assert case.needle in result.err, shown
        return
    assert result.code == case.exit, shown
    if case.fmt == "json":
        document = json.loads(result.out)
        codes = {f["code"] for f in document["findings"]}
        assert case.code in codes and "NN001" not in codes, shown
    elif case.fmt == "sarif":
        document = json.loads(result.out)
        assert document["version"] == "2.1.0", shown
        rules = {r["ruleId"] for run in document["runs"] for r in run["results"]}
        assert case.code in rules and "NN001" not in rules, shown
    else:
        assert "NN001" not in result.out, shown
        assert case.code in result.out, shown
        assert case.needle in result.out, shown
    if not case.code:
        assert result.err.strip() and result.err.count("\n") == 1, shown

"""Hostile model code through the real CLI: `nnlint --model model.py:Name`, no training script.

The model's import, constructor and forwards run in a contained child
(`nnlint.capture.isolated`). Whatever the model code does there (exit the
process, crash, print to file descriptor 1, leave threads, atexit handlers or
daemons behind, loop or sleep forever, allocate without bound, fill the temp
folder), nnlint's own run ends normally: a whole JSON report on stdout, an
NN007 finding saying what stopped the model phases, the exit code the other
findings decide, and every file of the project as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")

NET = """\
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x):
{forward}
        return self.fc2(torch.relu(self.fc1(x)))
"""


def model_source(top: str = "", forward: str = "pass") -> str:
    """A small clean model whose module runs `top` and whose forward runs `forward` first."""
    body = "\n".join(f"        {line}" for line in forward.splitlines())
    return f"{top}\n{NET.format(forward=body)}"


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under `root`: kind, mode and, for files, a hash of the bytes."""
    seen = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            info = path.lstat()
            digest = ""
            if stat.S_ISREG(info.st_mode):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            seen[str(path.relative_to(root))] = (stat.S_IFMT(info.st_mode), info.st_mode, digest)
    return seen


def lint(tmp_path: Path, model: str, *flags: str, files: dict[str, str] | None = None):
    """Run the CLI on a project holding `model` as model.py; (process, report, changes, left).

    `changes` lists what differs in the project afterwards, `left` what is left
    in the run's temp folder.
    """
    project, tmp = tmp_path / "project", tmp_path / "tmp"
    project.mkdir()
    tmp.mkdir()
    (project / "model.py").write_text(model)
    (project / "notes.txt").write_text("the user's own notes\n")
    for name, text in (files or {}).items():
        (project / name).write_text(text)
    before = snapshot(project)
    env = {**os.environ, "TMPDIR": str(tmp), "NO_COLOR": "1"}
    command = [sys.executable, "-m", "nnlint", "--isolated", "--no-cache", "--format", "json"]
    selected = ["--select", "NN0,NN1", "--input-shape", "8"]
    proc = subprocess.run(
        [*command, *selected, *flags],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    after = snapshot(project)
    changes = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    left = sorted(p.name for p in tmp.iterdir())
    report = json.loads(proc.stdout) if proc.stdout.strip() else None
    return proc, report, changes, left


def stopped(report: dict) -> list[str]:
    """The messages of the NN007 findings that say the model phases stopped."""
    return [
        f["message"]
        for f in report["findings"]
        if f["code"] == "NN007" and f["message"].startswith("graph and dynamic checks skipped")
    ]


def check_clean_end(proc, report, changes, left) -> list[str]:
    shown = f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert report is not None, shown  # stdout holds one whole JSON document
    assert proc.returncode == 0, shown  # an info finding: the other findings decide
    assert "Traceback" not in proc.stderr, shown
    assert changes == [], shown
    assert left == [], shown
    return stopped(report)


@pytest.mark.parametrize(
    ("where", "code", "needle"),
    [
        ("forward", "import os\nos._exit(7)", "exit status 7) while running the model's forward"),
        ("top", "import os\nos._exit(7)", "exit status 7) while importing the model"),
        ("forward", "import ctypes\nctypes.string_at(0)", "SIGSEGV while running the model's"),
    ],
    ids=["exit-in-forward", "exit-at-import", "segfault-in-forward"],
)
def test_model_code_that_ends_the_process_gives_a_finding(tmp_path, where, code, needle):
    model = model_source(top=code) if where == "top" else model_source(forward=code)
    messages = check_clean_end(*lint(tmp_path, model, "--model", "model.py:Net"))
    assert len(messages) == 1 and needle in messages[0], messages


WRITES_STDOUT = """\
import os
import sys

os.write(1, b"fd one at import\\n")
sys.__stdout__.write("dunder stdout at import\\n")
sys.__stdout__.flush()
"""


def test_model_output_on_fd_1_never_reaches_the_json_report(tmp_path):
    forward = 'os.write(1, b"{not json")\nsys.__stdout__.write("]]")\nsys.__stdout__.flush()'
    model = model_source(top=WRITES_STDOUT, forward=forward)
    messages = check_clean_end(*lint(tmp_path, model, "--model", "model.py:Net"))
    assert messages == []


LEAVES_THINGS_BEHIND = """\
import atexit
import os
import threading
import time
from pathlib import Path

PROJECT = Path.cwd()
MARKER = {marker!r}


def late_write(name):
    time.sleep(2)
    (PROJECT / name).write_text("written after nnlint's guard ended")


atexit.register(lambda: (PROJECT / "atexit.txt").write_text("atexit ran"))
threading.Thread(target=late_write, args=("thread.txt",)).start()  # not a daemon
if os.fork() == 0:  # a grandchild in its own session, holding stderr open
    os.setsid()
    try:
        os.execvp("sleep", ["sleep", MARKER])
    except BaseException:
        time.sleep(600)
    os._exit(0)
"""


def running(marker: str) -> bool:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
        except OSError:
            pass
    return False


def test_nothing_the_model_code_starts_outlives_the_run(tmp_path):
    marker = f"{600 + os.getpid() % 1000}.{time.monotonic_ns() % 10**6}"
    top = LEAVES_THINGS_BEHIND.format(marker=marker)
    model = model_source(top=top, forward='os.chdir("/")')
    proc, report, changes, left = lint(tmp_path, model, "--model", "model.py:Net")
    time.sleep(3)  # past the thread's late write
    changes = sorted(set(changes) | _changed(tmp_path))
    assert check_clean_end(proc, report, changes, left) == []
    assert [f["path"] for f in report["findings"] if f["path"].startswith("/")] == []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and running(marker):
        time.sleep(0.1)
    assert not running(marker)


def _changed(tmp_path: Path) -> set[str]:
    """Files the model code's leftovers would have written into the project."""
    return {n for n in ("atexit.txt", "thread.txt") if (tmp_path / "project" / n).exists()}


@pytest.mark.parametrize(
    ("model", "needle"),
    [
        (model_source(top="while True:\n    pass"), "importing the model"),
        (model_source(forward="import time\ntime.sleep(10**6)"), "running the model's forward"),
    ],
    ids=["import-loops", "forward-sleeps"],
)
def test_model_code_that_never_ends_is_stopped_by_the_time_bound(tmp_path, model, needle):
    flags = ("--model", "model.py:Net", "--capture-timeout", "2")
    proc, report, changes, left = lint(tmp_path, model, *flags)
    messages = check_clean_end(proc, report, changes, left)
    assert messages == [f"graph and dynamic checks skipped: {needle} did not finish within 2 s"]
    # in the model's file, even where its import never finished to say which line
    assert {f["path"] for f in report["findings"] if f["code"] == "NN007"} == {"model.py"}


RAISES_IN_INIT = """\
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 3)
        widths = {"small": 8}
        self.width = widths["huge"]
"""


@pytest.mark.parametrize(
    ("model", "needle"),
    [
        (RAISES_IN_INIT, "building it raised KeyError: 'huge' (at model.py:10)"),
        (
            "import torch\n\nLAYERS = [1, 2]\nWIDTH = LAYERS[5]\n",
            "IndexError: list index out of range (at model.py:4)",
        ),
    ],
    ids=["constructor", "import"],
)
def test_an_exception_in_the_model_code_names_the_users_line(tmp_path, model, needle):
    proc, report, changes, _ = lint(tmp_path, model, "--model", "model.py:Net")
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("nnlint: error: ")
    assert needle in proc.stderr, proc.stderr
    assert "internal error" not in proc.stderr
    assert changes == []


GREEDY = """\
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 3)
        # 256 GiB of address space, never touched: no memory is used unless a limit stops it
        self.hoard = [torch.empty(2**30, dtype=torch.uint8) for _ in range(256)]

    def forward(self, x):
        return self.fc(x)
"""


@pytest.mark.parametrize("flags", [("--memory-limit", "2G"), ()], ids=["flag", "default"])
def test_a_model_that_allocates_without_bound_gives_a_finding(tmp_path, flags):
    messages = check_clean_end(*lint(tmp_path, GREEDY, "--model", "model.py:Net", *flags))
    assert len(messages) == 1, messages
    assert "importing and building the model ran out of memory (the limit is" in messages[0]


@pytest.mark.parametrize(
    ("flags", "config", "needle"),
    [
        (("--memory-limit", "lots"), "", "--memory-limit 'lots'"),
        (("--memory-limit", "100M"), "", "at least 1G"),
        ((), "[tool.nnlint]\nmemory-limit = -1\n", "memory-limit"),
        ((), "[tool.nnlint]\nmemory-limit = true\n", "memory-limit"),
    ],
    ids=["not-a-size", "too-small", "config-negative", "config-bool"],
)
def test_a_bad_memory_limit_is_a_usage_error(tmp_path, flags, config, needle):
    extra = {"nnlint.toml": config.replace("[tool.nnlint]\n", "")} if config else {}
    args = ["--model", "model.py:Net", *flags]
    if config:
        args = ["--config", "nnlint.toml", *args]
    proc, _, _, _ = lint(tmp_path, model_source(), *args, files=extra)
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr.count("\n") == 1 and needle in proc.stderr, proc.stderr


FILLS_TEMP = """\
import os
import tempfile

folder = tempfile.mkdtemp(prefix="nnlint-model-")
with open(os.path.join(folder, "cache.bin"), "wb") as f:
    f.write(b"x" * 1024)
locked = os.path.join(folder, "locked")
os.mkdir(locked)
open(os.path.join(locked, "inside.txt"), "w").close()
os.chmod(locked, 0)
"""

TRAIN = """\
import torch
from model import Net

model = Net()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(3):
    x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
    optimizer.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
"""


@pytest.mark.parametrize("script", [False, True], ids=["model-only", "with-script"])
def test_no_temporary_folder_is_left_behind(tmp_path, script):
    model = model_source(top=FILLS_TEMP)
    files = {"train.py": FILLS_TEMP + TRAIN} if script else {}
    # the dynamic rules make nnlint run the script
    flags = ["--model", "model.py:Net", *(["train.py", "--extend-select", "NN3"] if script else [])]
    proc, report, changes, left = lint(tmp_path, model, *flags, files=files)
    assert report is not None, proc.stderr
    assert changes == [] and left == [], (changes, left, proc.stderr)
    if script:
        assert not [f for f in report["findings"] if f["code"] == "NN006"], report["findings"]


def test_sigterm_during_the_capture_ends_quietly_and_leaves_no_temp_folder(tmp_path):
    project, tmp = tmp_path / "project", tmp_path / "tmp"
    project.mkdir()
    tmp.mkdir()
    (project / "model.py").write_text(NET.format(forward="        return self.fc2(self.fc1(x))\n"))
    (project / "train.py").write_text("import time\n\nwhile True:\n    time.sleep(0.1)\n")
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nnlint", "--isolated", "train.py", "--model", "model.py:Net"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 600
    # the capture child's scratch, inside the model child's, inside nnlint's own
    while not list(tmp.glob("nnlint-run-*/tmp/nnlint-run-*")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.5)  # the script is running
    proc.terminate()
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 143, err
    assert err == "nnlint: terminated\n" and out == ""
    assert list(tmp.iterdir()) == []


def test_a_scratch_folder_left_by_a_killed_run_is_removed_by_the_next(tmp_path):
    # SIGKILL leaves nnlint no chance to clean up; the next run removes what a process
    # that no longer exists left, once it has not changed for a while, and nothing else.
    project, tmp = tmp_path / "project", tmp_path / "tmp"
    project.mkdir()
    tmp.mkdir()
    (project / "model.py").write_text(model_source())
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    old = time.time() - 3600
    names = {
        "dead": f"nnlint-run-{done.pid}-abc123",  # its process is gone: removed
        "recent": f"nnlint-run-{done.pid}-def456",  # gone too, but changed just now: kept
        "alive": f"nnlint-run-{os.getpid()}-ghi789",  # this test's process: kept
        "other": "someone-else-1234",  # not nnlint's: kept
    }
    for key, name in names.items():
        (tmp / name / "upper").mkdir(parents=True)
        (tmp / name / "upper" / "written.txt").write_text("left by a run\n")
        if key != "recent":
            os.utime(tmp / name, (old, old))
    env = {**os.environ, "TMPDIR": str(tmp), "NO_COLOR": "1"}
    command = [sys.executable, "-m", "nnlint", "--isolated", "--no-cache", "--format", "json"]
    proc = subprocess.run(
        [*command, "--select", "NN0,NN1", "--input-shape", "8", "--model", "model.py:Net"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    left = sorted(p.name for p in tmp.iterdir())
    assert left == sorted(names[k] for k in ("recent", "alive", "other")), left

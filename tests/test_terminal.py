"""Terminal manners: NO_COLOR/FORCE_COLOR, --output-format, -q and --debug."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys

from conftest import BUGGY

ESC = "\x1b["
SNIPPET = "    8 |     optimizer.step()"


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text).replace("\r\n", "\n")


def _run(args, cwd, env=None, tty=False):
    """nnlint in a subprocess; with `tty`, stdout and stderr are a pseudo-terminal."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    full_env.update(env or {})
    command = [sys.executable, "-m", "nnlint", *args]
    if not tty:
        done = subprocess.run(command, cwd=cwd, env=full_env, capture_output=True, text=True)
        return done.stdout, done.stderr
    leader, follower = pty.openpty()
    proc = subprocess.Popen(command, cwd=cwd, env=full_env, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=600)
    os.close(leader)
    return b"".join(chunks).decode(), ""


def test_no_color_keeps_the_source_lines_and_drops_the_colour(tmp_path):
    (tmp_path / "train.py").write_text(BUGGY)
    plain, _ = _run(["--no-cache", "train.py"], tmp_path, tty=True)
    assert ESC in plain and SNIPPET in _plain(plain)
    out, _ = _run(["--no-cache", "train.py"], tmp_path, env={"NO_COLOR": "1"}, tty=True)
    assert ESC not in out and SNIPPET in out


def test_force_color_shows_the_full_form_in_a_pipe(tmp_path):
    (tmp_path / "train.py").write_text(BUGGY)
    piped, _ = _run(["--no-cache", "train.py"], tmp_path)
    assert piped.startswith("train.py:8:5: NN201") and " | " not in piped
    out, _ = _run(["--no-cache", "train.py"], tmp_path, env={"FORCE_COLOR": "1"})
    assert ESC in out and SNIPPET in _plain(out)
    both = {"FORCE_COLOR": "1", "NO_COLOR": "1"}
    out, _ = _run(["--no-cache", "train.py"], tmp_path, env=both)
    assert ESC not in out and SNIPPET in out


def test_output_format_is_rufs_name_for_format(cli, write):
    write("train.py", BUGGY)
    doc = json.loads(cli("--no-cache", "--output-format", "json", "train.py").out)
    assert doc["findings"][0]["code"] == "NN201"


def test_quiet_turns_the_progress_bar_off(cli):
    from nnlint.core.config import Settings
    from nnlint.dynamic.phase import progress_wanted

    assert progress_wanted(Settings()) and not progress_wanted(Settings(quiet=True))


CRASHING = '''
from nnlint.core.rule import ScriptRule


class Crashes(ScriptRule):
    """Crashes on every file.

    ## What it does
    x
    ## Why is this bad?
    x
    ## Example
    x
    ## Use instead
    x
    """

    code = "XX001"
    name = "xx-crashes"
    message = "never shown"
    needs = ()

    def check(self, ctx):
        raise RuntimeError("the plugin broke")
        yield
'''


def test_debug_shows_tracebacks_in_every_format(tmp_path):
    (tmp_path / "xxcrash.py").write_text(CRASHING)
    dist = tmp_path / "xxcrash-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: xxcrash\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[nnlint.rules]\nxx = xxcrash:Crashes\n")
    (tmp_path / "t.py").write_text("x = 1\n")
    env = {"PYTHONPATH": str(tmp_path)}
    args = ["--no-cache", "--select", "XX,NN001", "t.py"]
    for fmt in ("concise", "json", "github", "sarif"):
        out, err = _run([*args, "--debug", "--format", fmt], tmp_path, env=env)
        assert "NN001" in out, fmt
        assert "Traceback (most recent call last)" in out + err, fmt
        assert "the plugin broke" in out + err, fmt
    out, err = _run([*args, "--format", "concise"], tmp_path, env=env)
    assert "NN001" in out and "Traceback" not in out + err


NET = """
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x)
"""
STATUS = "nnlint: importing the model"


def _status_run(args, cwd, tty=True):
    """(stdout, stderr) of nnlint with stderr on a pseudo-terminal (or a pipe) and stdout piped."""
    command = [sys.executable, "-m", "nnlint", "--no-cache", *args]
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    if not tty:
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
        return done.stdout, done.stderr
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=follower, stdin=subprocess.DEVNULL
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    out = proc.stdout.read().decode()
    proc.wait(timeout=600)
    os.close(leader)
    return out, b"".join(chunks).decode()


def test_a_status_line_shows_the_model_import_on_a_terminal(tmp_path):
    (tmp_path / "net.py").write_text(NET)
    flags = ["--model", "net:Net", "--input-shape", "4", "--no-dynamic"]
    out, err = _status_run(flags, tmp_path)
    assert STATUS in err and "nnlint: importing torch" in err
    assert out == "All checks passed!\n"  # stdout untouched
    _, quiet = _status_run([*flags, "-q"], tmp_path)
    assert "nnlint:" not in quiet
    doc, machine = _status_run([*flags, "--format", "json"], tmp_path)
    assert "nnlint:" not in machine and json.loads(doc)["findings"] == []
    _, piped = _status_run(flags, tmp_path, tty=False)
    assert "nnlint:" not in piped

"""`nnlint -` and `--stdin-filename`: lint source from stdin, as editors do."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

from conftest import BUGGY


@dataclass
class Run:
    code: int
    out: str
    err: str


def run_subprocess(args: list[str], cwd, stdin: str) -> Run:
    done = subprocess.run(
        [sys.executable, "-m", "nnlint", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return Run(done.returncode, done.stdout, done.stderr)


def test_dash_lints_stdin(tmp_path):
    run = run_subprocess(["-", "--format", "concise"], cwd=tmp_path, stdin=BUGGY)
    assert run.code == 1
    assert run.out.startswith("-:8:5: NN201 ")


def test_stdin_filename_names_the_file_and_finds_its_config(tmp_path):
    project = tmp_path / "proj"
    (project / "src").mkdir(parents=True)
    (project / "pyproject.toml").write_text('[tool.nnlint]\nignore = ["NN210"]\n')
    source = BUGGY + "out = model.forward(x)\n"
    args = ["--stdin-filename", "proj/src/train.py", "--format", "concise", "--no-cache"]
    run = run_subprocess(args, cwd=tmp_path, stdin=source)
    assert "proj/src/train.py:8:5: NN201" in run.out
    assert "NN210" not in run.out  # ignored by the config found from the file's folder
    assert not (project / "src" / "train.py").exists()


def test_stdin_fix_prints_the_fixed_source(tmp_path):
    source = "import torch\nmodel = torch.nn.Linear(2, 2)\nout = model.forward(x)\n"
    run = run_subprocess(["--fix", "--stdin-filename", "t.py", "-"], cwd=tmp_path, stdin=source)
    assert run.out == source.replace(".forward", "")
    assert "1 fixed, 0 remaining" in run.err
    assert not (tmp_path / "t.py").exists()


def test_stdin_add_noqa_prints_the_source_and_writes_no_file(tmp_path):
    run = run_subprocess(["--add-noqa", "--stdin-filename", "t.py"], cwd=tmp_path, stdin=BUGGY)
    assert "    optimizer.step()  # noqa: NN201\n" in run.out
    assert not (tmp_path / "t.py").exists()

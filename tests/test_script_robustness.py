"""The script phase on input built to break it: deep nesting, odd files, broken pipes.

A file nnlint cannot analyse is one finding for that file; the others' findings
always come out, in bounded time, and nnlint never crashes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BUGGY

from nnlint.core.registry import load_registry
from nnlint.core.rule import Phase
from nnlint.script.phase import lint_file

DEEP = {
    "additions": "x = " + " + ".join(["a"] * 10_000),
    "attributes": "x = a" + ".b" * 20_000,
    "calls": "x = f" + "()" * 20_000,
    "subscripts": "x = a" + "[0]" * 20_000,
    "conditionals": "x = " + " if c else ".join(["a"] * 5_000),
    "or-chain": "x = " + " or ".join(["a"] * 20_000),
    "comparisons": "x = " + " < ".join(["a"] * 5_000),
}


def nnlint(*args: str, cwd, timeout: float = 600) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "nnlint", "--isolated", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("shape", sorted(DEEP))
def test_deeply_nested_file_is_one_finding_and_the_others_still_come_out(tmp_path, shape):
    (tmp_path / "a_deep.py").write_text("import torch\n" + DEEP[shape] + "\n")
    (tmp_path / "b_train.py").write_text(BUGGY)
    run = nnlint("--format", "concise", "-j", "1", ".", cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    assert "b_train.py:8:5: NN201" in run.stdout
    deep = [line for line in run.stdout.splitlines() if line.startswith("a_deep.py")]
    assert len(deep) == 1, run.stdout
    assert " NN002 " in deep[0] or " NN009 " in deep[0]
    assert "nest" in deep[0], deep[0]


def test_depth_counts_chains_as_libcst_nests_them():
    import ast

    from nnlint.script.phase import MAX_DEPTH, nesting

    assert nesting(ast.parse("x = a or b or c")) < nesting(
        ast.parse("x = " + " or ".join("a" * 50))
    )
    assert nesting(ast.parse("x = " + " or ".join(["a"] * (MAX_DEPTH + 1)))) > MAX_DEPTH
    real = open(ast.__file__, encoding="utf-8").read()  # a big real module stays far below
    assert nesting(ast.parse(real)) < MAX_DEPTH // 2


def test_valid_python_that_libcst_rejects_is_an_info_finding(tmp_path):
    strings = " ".join(['"a"'] * 6_000)
    (tmp_path / "joined.py").write_text(f"{BUGGY}x = ({strings})\n")
    compile((tmp_path / "joined.py").read_text(), "joined.py", "exec")  # Python accepts it
    run = nnlint("--format", "concise", "joined.py", cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr  # info does not fail the run
    assert "joined.py:1:1: NN009 script rules skipped: libcst cannot parse it" in run.stdout


def script_rules() -> list:
    return [r() for r in load_registry().rules if r.kind is Phase.SCRIPT]


# Each shape ends a training script, so that the script rules want to read it.
_SCRIPT = BUGGY.encode()
LIBCST_REJECTS = {
    # CPython's tokenizer measures the dedent in columns, libcst's by the indent string.
    "tab-after-spaces": _SCRIPT + b"if x:\n if y:\n\t z = 1\nw = 2\n",
    "joined-strings": _SCRIPT + b"x = (\n" + b'    "a"\n' * 6_000 + b")\n",
    "final-backslash-crlf": _SCRIPT.replace(b"\n", b"\r\n") + b"\\\r\n",
}


@pytest.mark.parametrize("shape", sorted(LIBCST_REJECTS))
def test_each_shape_libcst_rejects_is_nn009_not_a_syntax_error(tmp_path, shape):
    path = tmp_path / f"{shape}.py"
    path.write_bytes(LIBCST_REJECTS[shape])
    compile(path.read_bytes(), path.name, "exec")  # valid Python
    findings = lint_file(path, path.name, script_rules(), tmp_path)
    assert [(f.code, f.severity.name) for f in findings] == [("NN009", "INFO")], findings
    assert "libcst cannot parse it, though Python can" in findings[0].message


def test_a_file_no_rule_reads_is_never_handed_to_libcst(tmp_path):
    rules = script_rules()
    # No rule needs a file that never mentions torch; libcst would reject this one.
    path = tmp_path / "strings.py"
    path.write_bytes(b"import os\nx = (\n" + b'    "a"\n' * 6_000 + b")\n")
    assert lint_file(path, path.name, rules, tmp_path) == []
    path.write_text("import os\ndef f(:\n    pass\n")
    assert [f.code for f in lint_file(path, path.name, rules, tmp_path)] == ["NN002"]


def test_a_real_syntax_error_is_still_nn002(tmp_path):
    (tmp_path / "bad.py").write_text("def f(:\n    pass\n")
    run = nnlint("--format", "concise", "bad.py", cwd=tmp_path)
    assert "bad.py:1:7: NN002 syntax error: invalid syntax" in run.stdout


def test_walks_survive_symlink_loops_dangling_links_and_fifos(tmp_path):
    (tmp_path / "train.py").write_text(BUGGY)
    (tmp_path / "loop.py").symlink_to("loop.py")
    (tmp_path / "gone.py").symlink_to("nowhere.py")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "up").symlink_to("..")
    os.mkfifo(tmp_path / "sub" / "pipe.py")
    run = nnlint("--format", "concise", ".", cwd=tmp_path, timeout=600)
    assert run.returncode == 1, run.stderr
    assert run.stdout.splitlines()[0].startswith("train.py:8:5: NN201")
    assert "internal error" not in run.stderr and run.stderr == ""


def test_a_fifo_named_on_the_command_line_is_unreadable_not_a_hang(tmp_path):
    os.mkfifo(tmp_path / "pipe.py")
    run = nnlint("--format", "concise", "pipe.py", cwd=tmp_path, timeout=600)
    assert "pipe.py:1:1: NN003 cannot read file: not a regular file (a FIFO)" in run.stdout


def test_a_symlink_loop_named_on_the_command_line_is_a_usage_error(tmp_path):
    (tmp_path / "loop.py").symlink_to("loop.py")
    run = nnlint("loop.py", cwd=tmp_path, timeout=600)
    assert run.returncode == 2
    assert run.stderr == "nnlint: error: loop.py: a symbolic link to nothing, or a loop of links\n"


def test_a_path_through_a_loop_of_links_is_a_usage_error(tmp_path):
    (tmp_path / "self").symlink_to("self")
    for flags in ((), ("--static-only",)):
        run = nnlint(*flags, "self/x.py", cwd=tmp_path, timeout=600)
        assert run.returncode == 2, run.stderr
        assert run.stderr == "nnlint: error: self/x.py: a loop of symbolic links\n"


def _unprivileged() -> list[str] | None:
    """A command prefix that drops root's power to read any folder (a new user
    namespace, where this process is nobody), or None where neither is needed nor works."""
    if os.geteuid() != 0:
        return []
    try:
        done = subprocess.run(["unshare", "-U", "true"], capture_output=True, timeout=600)
    except OSError:
        return None
    return ["unshare", "-U"] if done.returncode == 0 else None


def _locked_project(tmp_path: Path) -> tuple[list[str], Path]:
    """`ok.py` beside `locked/train.py` in a folder nobody may search; the command
    prefix that makes that hold for this process (the test skips where none does)."""
    prefix = _unprivileged()
    if prefix is None:
        pytest.skip("runs as root and cannot leave root's permissions behind")
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "train.py").write_text(BUGGY)
    (locked / "nnlint.toml").write_text("")
    (tmp_path / "ok.py").write_text(BUGGY)
    locked.chmod(0)
    return prefix, locked


def test_a_path_in_a_folder_that_cannot_be_searched_is_a_finding_and_the_rest_is_linted(tmp_path):
    # As for a file that cannot be read: trouble met while linting, not a bad command.
    prefix, locked = _locked_project(tmp_path)
    try:
        for flags in ((), ("--static-only",)):
            command = [*prefix, sys.executable, "-m", "nnlint", "--isolated", "--format", "json"]
            run = subprocess.run(
                [*command, *flags, "locked/train.py", "ok.py"],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert run.returncode == 1 and run.stderr == "", run.stderr
            found = json.loads(run.stdout)["findings"]
            (note,) = [f for f in found if f["code"] == "NN003"]
            assert note["path"] == "locked/train.py", note
            assert note["message"] == "cannot read file: permission denied", note
            assert {f["path"] for f in found} == {"locked/train.py", "ok.py"}, found
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize(
    "args",
    [
        ("--format", "concise", "."),
        ("--format", "json", "."),
        ("--format", "sarif", "."),
        ("--format", "github", "."),
        ("--list-rules",),
        ("rule", "NN201"),
    ],
)
def test_a_closed_pipe_ends_quietly(tmp_path, args):
    for i in range(40):
        (tmp_path / f"train{i}.py").write_text(BUGGY)
    command = [sys.executable, "-m", "nnlint", "--isolated", *args]
    nnlint_proc = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    nnlint_proc.stdout.close()  # the reader is gone before nnlint writes
    _, err = nnlint_proc.communicate(timeout=600)
    assert err.decode() == ""
    assert nnlint_proc.returncode in (0, 1)


def test_a_folder_the_walk_cannot_list_is_a_finding_and_the_rest_is_linted(tmp_path):
    prefix = _unprivileged()
    if prefix is None:
        pytest.skip("runs as root and cannot leave root's permissions behind")
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "train.py").write_text(BUGGY)
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "hidden.py").write_text(BUGGY)
    locked.chmod(0)
    try:
        command = [*prefix, sys.executable, "-m", "nnlint", "--isolated", "--format", "json", "."]
        run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    finally:
        locked.chmod(0o755)
    assert run.returncode == 1 and run.stderr == "", run.stderr
    found = json.loads(run.stdout)["findings"]
    (note,) = [f for f in found if f["code"] == "NN003"]
    assert note["path"] == "locked", note
    assert note["message"] == "cannot read folder: permission denied, so nothing in it was linted"
    assert {f["path"] for f in found} == {"locked", "ok/train.py"}, found


def test_a_folder_that_lists_but_cannot_be_searched_is_a_finding_too(tmp_path):
    # Read but no search permission: the names show, yet no file in it can be opened.
    prefix = _unprivileged()
    if prefix is None:
        pytest.skip("runs as root and cannot leave root's permissions behind")
    inner = tmp_path / "pkg" / "inner"
    inner.mkdir(parents=True)
    (inner / "c.py").write_text(BUGGY)
    (tmp_path / "pkg" / "b.py").write_text(BUGGY)
    inner.chmod(0o644)
    try:
        command = [*prefix, sys.executable, "-m", "nnlint", "--isolated"]
        run = subprocess.run(
            [*command, "--format", "json", "."],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        shown = subprocess.run(
            [*command, "--show-files", "."],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        inner.chmod(0o755)
    assert run.returncode == 1, run.stderr
    found = json.loads(run.stdout)["findings"]
    assert [f["path"] for f in found if f["code"] == "NN003"] == ["pkg/inner"], found
    assert "pkg/b.py" in {f["path"] for f in found}, found
    assert (shown.returncode, shown.stdout) == (0, "pkg/b.py\n"), shown
    assert shown.stderr == "nnlint: pkg/inner: cannot read folder (permission denied), not listed\n"


def test_a_script_or_config_named_in_a_folder_that_cannot_be_searched_says_so(tmp_path):
    prefix, locked = _locked_project(tmp_path)
    runs = {}
    try:
        for flag in ("--script", "--config"):
            name = "locked/train.py" if flag == "--script" else "locked/nnlint.toml"
            command = [*prefix, sys.executable, "-m", "nnlint", flag, name, "ok.py"]
            runs[flag] = subprocess.run(
                command, cwd=tmp_path, capture_output=True, text=True, timeout=600
            )
    finally:
        locked.chmod(0o755)
    assert runs["--script"].returncode == 2, runs["--script"].stderr
    assert runs["--script"].stderr == "nnlint: error: --script locked/train.py: permission denied\n"
    assert runs["--config"].returncode == 2, runs["--config"].stderr
    assert runs["--config"].stderr == (
        "nnlint: error: --config locked/nnlint.toml: permission denied\n"
    )

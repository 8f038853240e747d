"""The command line as a user drives it: exit codes, errors, formats, selection."""

from __future__ import annotations

import json

import pytest
from conftest import BUGGY, CLEAN, run_subprocess


def test_buggy_script_reports_and_exits_1(cli, write):
    write("train.py", BUGGY)
    run = cli("train.py")
    assert run.code == 1
    assert "train.py:8:5: NN201 " in run.out
    assert "Found 1 finding (1 error)." in run.out


def test_clean_script_exits_0(cli, write):
    write("train.py", CLEAN)
    run = cli("train.py")
    assert run.code == 0, run.out
    assert "All checks passed!" in run.out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("missing.py",), "missing.py: no such file or directory"),
        (("--frobnicate",), "unrecognized arguments: --frobnicate"),
        (("--select", "NN999", "."), "unknown rule selector 'NN999'"),
        (("--select", "E501", "."), "unknown rule selector 'E501'"),
        (("--ignore", "no-such-rule", "."), "unknown rule selector 'no-such-rule'"),
        (("--format", "xml", "."), "invalid choice: 'xml'"),
        (("--model-kwargs", "{nope", "--model", "m:N", "."), "--model-kwargs is not valid JSON"),
        (("--input-shape", "3,x", "."), "bad shape '3,x'"),
        (("--per-file-ignores", "nocolon", "."), "expected GLOB:CODES"),
        (("--model", "nocolon", "."), "expected 'package.module:Name'"),
        (("--model", "no_such_module_xyz:Net", "."), "cannot import 'no_such_module_xyz'"),
        (("--config", "nope.toml", "."), "--config nope.toml: no such file"),
        (("rule", "NN999"), "unknown rule 'NN999'"),
        (("--jobs", "0", "."), "--jobs must be at least 1"),
    ],
)
def test_usage_errors_are_one_line_exit_2(cli, write, args, needle):
    write("train.py", CLEAN)
    run = cli(*args)
    assert run.code == 2
    assert run.out == ""
    assert run.err.count("\n") == 1 and run.err.startswith("nnlint: error: "), run.err
    assert needle in run.err


def test_syntax_error_is_a_finding_and_others_are_linted(cli, write):
    write("a_bad.py", "def f(:\n    pass\n")
    write("b_train.py", BUGGY)
    run = cli("--format", "concise", ".")
    assert run.code == 1
    assert "a_bad.py:1:7: NN002 syntax error: invalid syntax" in run.out
    assert "b_train.py:8:5: NN201" in run.out


def test_unreadable_files_are_findings(cli, tmp_path, write):
    (tmp_path / "blob.py").write_bytes(b"\x00\x01\x02torch")
    (tmp_path / "latin.py").write_bytes("x = 'caf\xe9'\n".encode("latin-1"))
    run = cli("blob.py", "latin.py")
    assert run.code == 1
    assert "blob.py:1:1: NN003 cannot read file: binary file" in run.out
    assert "latin.py:1:1: NN003 cannot read file: not valid utf-8 and no PEP 263" in run.out


def test_coding_declaration_is_honoured(cli, tmp_path):
    text = "# -*- coding: latin-1 -*-\n" + BUGGY.replace("loader", "chargeur_\xe9")
    (tmp_path / "train.py").write_bytes(text.encode("latin-1"))
    run = cli("train.py")
    assert "NN201" in run.out and "NN003" not in run.out


def test_nothing_to_lint_is_a_note_and_exit_0(cli, tmp_path, write):
    (tmp_path / "empty").mkdir()
    run = cli("empty")
    assert run.code == 0
    assert "no Python files to lint" in run.err


def test_directory_walk_skips_venvs_and_honours_exclude(cli, write):
    write("pkg/train.py", BUGGY)
    write(".venv/lib/site.py", BUGGY)
    write("build/lib/train.py", BUGGY)
    write("legacy/old.py", BUGGY)
    write("myenv/pyvenv.cfg", "home = /usr/bin\n")
    write("myenv/lib/mod.py", BUGGY)
    run = cli("--exclude", "legacy", "--format", "concise", ".")
    assert run.out.count("NN201") == 1 and "pkg/train.py" in run.out


def test_explicit_file_under_default_exclude_is_linted(cli, write):
    write("build/train.py", BUGGY)
    assert "NN201" in cli("build/train.py").out


def test_fail_level_and_exit_zero(cli, write):
    write("train.py", BUGGY)
    assert cli("--exit-zero", "train.py").code == 0
    assert cli("--fail-level", "error", "train.py").code == 1


def test_select_ignore_and_per_file_ignores(cli, write):
    write("train.py", BUGGY)
    assert cli("--ignore", "NN2", "train.py").code == 0
    assert cli("--ignore", "missing-zero-grad", "train.py").code == 0
    assert cli("--per-file-ignores", "train.py:NN201", "train.py").code == 0
    assert cli("--per-file-ignores", "*.py:NN0", "train.py").code == 1
    assert cli("--select", "NN201", "train.py").code == 1
    assert cli("--select", "NN0", "train.py").code == 0


def test_json_output_is_one_complete_document(cli, write):
    write("train.py", BUGGY)
    run = cli("--format", "json", "train.py")
    doc = json.loads(run.out)
    assert doc["summary"]["total"] == 1
    finding = doc["findings"][0]
    assert finding == {
        "code": "NN201",
        "name": "missing-zero-grad",
        "severity": "error",
        "message": finding["message"],
        "path": "train.py",
        "cell": None,
        "line": 8,
        "column": 5,
        "end_line": 8,
        "end_column": 21,
        "phase": "script",
        "note": "loop at line 5",
        "fix": finding["fix"],
        "url": "https://github.com/nnlint/nnlint/blob/main/docs/rules.md#nn201-missing-zero-grad",
    }
    assert finding["fix"]["applicability"] == "unsafe"


def test_json_output_is_absent_on_usage_error(cli, write):
    run = cli("--format", "json", "missing.py")
    assert run.code == 2 and run.out == ""


def test_github_annotations(cli, write):
    write("train.py", BUGGY)
    run = cli("--format", "github", "train.py")
    assert run.out.startswith(
        "::error file=train.py,line=8,col=5,endLine=8,endColumn=21,title=NN201 (missing-zero-grad)::"
    )


def test_statistics(cli, write):
    write("a.py", BUGGY)
    write("b.py", BUGGY)
    run = cli("--statistics", ".")
    assert run.out.split() == ["2", "NN201", "missing-zero-grad"]


def test_output_file(cli, write, tmp_path):
    write("train.py", BUGGY)
    run = cli("--format", "json", "-o", "report.json", "train.py")
    assert run.code == 1 and run.out == ""
    assert json.loads((tmp_path / "report.json").read_text())["summary"]["total"] == 1


def test_quiet_drops_the_summary(cli, write):
    write("train.py", BUGGY)
    run = cli("-q", "train.py")
    assert "Found" not in run.out and "NN201" in run.out


def test_explain_and_list_rules(cli):
    run = cli("rule", "missing-zero-grad")
    assert run.code == 0
    assert run.out.startswith("# NN201 missing-zero-grad")
    for section in ("## What it does", "## Why is this bad?", "## Example", "## Use instead"):
        assert section in run.out
    assert cli("--explain", "NN201").out == run.out
    listing = cli("--list-rules").out
    assert "NN201  missing-zero-grad" in listing
    assert json.loads(cli("--list-rules", "--format", "json").out)[0]["code"] == "NN001"


def test_version_and_module_entry_point(tmp_path):
    proc = run_subprocess("--version", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("nnlint ")


def test_parallel_jobs_give_the_same_findings(cli, write):
    for i in range(12):
        write(f"t{i}.py", BUGGY if i % 2 else CLEAN)
    serial = cli("-j", "1", "--format", "json", ".").out
    parallel = cli("-j", "2", "--format", "json", ".").out
    strip = lambda doc: json.loads(doc)["findings"]  # noqa: E731
    assert strip(serial) == strip(parallel) and len(strip(serial)) == 6


def test_model_without_torch_is_a_clear_error(tmp_path):
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from nnlint.cli import main\n"
        "sys.exit(main(['--model', 'm:Net', '.']))\n"
    )
    proc = run_subprocess(cwd=tmp_path, code=code)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "nnlint: error: --model needs PyTorch, which is not installed; pip install 'nnlint[torch]'"
    )


def test_static_path_never_imports_torch(tmp_path, write):
    write("train.py", BUGGY)
    code = (
        "import sys\n"
        "from nnlint.cli import main\n"
        "rc = main(['--static-only', 'train.py'])\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "rc2 = main(['train.py'])\n"
        "assert 'torch' not in sys.modules, 'torch imported without --model'\n"
        "sys.exit(rc)\n"
    )
    proc = run_subprocess(cwd=tmp_path, code=code)
    assert proc.returncode == 1, proc.stderr


def test_one_file_imports_only_what_it_needs(tmp_path, write):
    # What a pre-commit run on one file waits for: libcst.matchers alone takes longer
    # to import than libcst parses a small file, pathspec is for trees with ignore
    # files, hashlib for the cache, ElementTree for JUnit, a process pool for many files.
    write("train.py", BUGGY)
    code = (
        "import sys\n"
        "from nnlint.cli import main\n"
        "rc = main(['--static-only', '--no-cache', 'train.py'])\n"
        "heavy = ['libcst.matchers', 'pathspec', 'hashlib', 'xml.etree.ElementTree',\n"
        "         'concurrent.futures.process', 'rich', 'nbformat', 'nnlint.graph.graph']\n"
        "print('loaded:', [m for m in heavy if m in sys.modules], file=sys.stderr)\n"
        "sys.exit(rc)\n"
    )
    proc = run_subprocess(cwd=tmp_path, code=code)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "loaded: []"


def test_no_traceback_on_internal_failure(cli, write, monkeypatch):
    import nnlint.engine

    def explode(*_a, **_k):
        raise RuntimeError("boom")

    monkeypatch.setattr(nnlint.engine, "collect_files", explode)
    write("train.py", CLEAN)
    run = cli("train.py")
    assert run.code == 2
    assert run.err.strip() == (
        "nnlint: internal error: RuntimeError: boom (run with --debug for the traceback)"
    )
    assert "Traceback" in cli("--debug", "train.py").err


def test_timings_lists_each_phase_slowest_first(cli, write):
    write("train.py", "import torch\nx = torch.zeros(2)\n")
    run = cli("--timings", "train.py")
    assert run.code == 0
    lines = run.out.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("slowest")))
    assert any(line.endswith("s  script") for line in lines[start + 1 :])
    document = cli("--timings", "--format", "json", "train.py")
    json.loads(document.out)  # stdout stays one document
    assert "script" in document.err

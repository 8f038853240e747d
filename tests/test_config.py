"""`[tool.nnlint]` configuration: discovery, keys, precedence, errors."""

from __future__ import annotations

import pytest
from conftest import BUGGY


def test_pyproject_config_is_found_and_used(cli, write, tmp_path):
    write("pyproject.toml", '[tool.nnlint]\nignore = ["NN201"]\n')
    write("src/train.py", BUGGY)
    assert cli("src/train.py").code == 0
    # Flags override config, and the config is found from a subdirectory too.
    assert cli("--isolated", "src/train.py").code == 1
    assert cli("train.py", cwd=tmp_path / "src").code == 0


def test_nnlint_toml_wins_over_pyproject(cli, write):
    write("pyproject.toml", '[tool.nnlint]\nignore = ["NN201"]\n')
    write("nnlint.toml", 'select = ["NN2"]\n')
    write("train.py", BUGGY)
    assert cli("train.py").code == 1


def test_config_paths_exclude_fail_level_per_file_ignores(cli, write):
    write(
        "pyproject.toml",
        """
        [tool.nnlint]
        paths = ["src"]
        exclude = ["src/legacy"]
        fail-level = "error"
        per-file-ignores = { "src/gen_*.py" = ["missing-zero-grad"] }
        """,
    )
    write("src/train.py", BUGGY)
    write("src/legacy/old.py", BUGGY)
    write("src/gen_a.py", BUGGY)
    write("other/train.py", BUGGY)
    run = cli("--format", "concise")
    assert run.out.count("NN201") == 1 and "src/train.py" in run.out


def test_rule_options_are_validated(cli, write):
    write("train.py", BUGGY)
    write("pyproject.toml", "[tool.nnlint.rules.missing-zero-grad]\nthreshold = 3\n")
    run = cli("train.py")
    assert run.code == 2 and "rule missing-zero-grad has no option 'threshold'" in run.err
    write("pyproject.toml", "[tool.nnlint.rules.no-such-rule]\nx = 1\n")
    run = cli("train.py")
    assert run.code == 2 and "unknown rule 'no-such-rule'" in run.err


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[tool.nnlint\n", "malformed TOML"),
        ("[tool.nnlint]\nselekt = ['NN2']\n", "unknown config key 'selekt'"),
        ("[tool.nnlint]\nselect = 3\n", "'select' must be a string or a list of strings"),
        ("[tool.nnlint]\nfail-level = 'fatal'\n", "unknown severity 'fatal'"),
        ("[tool.nnlint]\nselect = ['NN9']\n", "unknown rule selector 'NN9'"),
        ("[tool.nnlint]\ncapture-timeout = 'long'\n", "'capture-timeout' must be a number"),
    ],
)
def test_bad_config_is_one_line_exit_2(cli, write, text, needle):
    write("pyproject.toml", text)
    write("train.py", BUGGY)
    run = cli("train.py")
    assert run.code == 2 and run.out == ""
    assert run.err.count("\n") == 1 and needle in run.err, run.err


def test_pyproject_without_nnlint_table_is_ignored(cli, write, tmp_path):
    write("pyproject.toml", "[project]\nname = 'x'\n")
    write("train.py", BUGGY)
    assert cli("train.py").code == 1

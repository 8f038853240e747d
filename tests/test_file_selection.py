"""Which files are linted: .gitignore, --force-exclude, extend-exclude/-include, --show-files/-settings."""

from __future__ import annotations

import json
import subprocess

from conftest import BUGGY


def _tree(tmp_path, write):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    write(".gitignore", "generated/\n*_pb2.py\n!keep_pb2.py\n")
    for name in ("generated/a.py", "src/b.py", "src/c_pb2.py", "src/keep_pb2.py", "legacy/old.py"):
        write(name, BUGGY)
    write("src/sub/.gitignore", "local.py\n")
    write("src/sub/local.py", BUGGY)


def test_walks_respect_gitignore(cli, tmp_path, write):
    _tree(tmp_path, write)
    run = cli("--show-files")
    assert run.out.split() == ["legacy/old.py", "src/b.py", "src/keep_pb2.py"]
    everything = cli("--show-files", "--no-respect-gitignore").out.split()
    assert "generated/a.py" in everything and "src/sub/local.py" in everything
    assert "generated/a.py:8:5: NN201" not in cli("--no-cache", "--format", "concise", ".").out


def test_gitignore_in_config_can_be_turned_off(cli, tmp_path, write):
    _tree(tmp_path, write)
    write("pyproject.toml", "[tool.nnlint]\nrespect-gitignore = false\n")
    assert "generated/a.py" in cli("--show-files").out.split()


def test_force_exclude_applies_exclusions_to_explicit_paths(cli, tmp_path, write):
    _tree(tmp_path, write)
    write("pyproject.toml", '[tool.nnlint]\nextend-exclude = ["legacy"]\n')
    named = ("legacy/old.py", "generated/a.py", "src/b.py")
    assert cli("--show-files", *named).out.split() == list(named)
    assert cli("--show-files", "--force-exclude", *named).out.split() == ["src/b.py"]
    flags = ("--show-files", "--isolated", "--extend-exclude", "src")
    assert cli(*flags, ".").out.split() == ["legacy/old.py"]
    # the config key too, for hooks that cannot pass flags
    write("pyproject.toml", '[tool.nnlint]\nextend-exclude = ["legacy"]\nforce-exclude = true\n')
    assert cli("--no-cache", "legacy/old.py").out == "All checks passed!\n"


def test_show_settings_prints_the_merged_settings(cli, write):
    write("pyproject.toml", '[tool.nnlint]\nignore = ["NN210"]\nfail-level = "error"\n')
    run = cli("--show-settings", "--extend-exclude", "old")
    shown = json.loads(run.out)
    assert shown["ignore"] == ["NN210"] and shown["fail_level"] == "error"
    assert shown["extend_exclude"] == ["old"] and shown["config_path"].endswith("pyproject.toml")


def test_extend_include_adds_files_to_walks(cli, write):
    write("tools/train.pyw", BUGGY)
    write("tools/notes.txt", "not python\n")
    write("src/b.py", BUGGY)
    assert cli("--show-files", "--isolated").out.split() == ["src/b.py"]
    wider = cli("--show-files", "--isolated", "--extend-include", "*.pyw").out.split()
    assert wider == ["src/b.py", "tools/train.pyw"]
    write("pyproject.toml", '[tool.nnlint]\nextend-include = ["tools/*.pyw"]\n')
    assert cli("--show-files").out.split() == ["src/b.py", "tools/train.pyw"]
    assert "tools/train.pyw:8:5: NN201" in cli("--no-cache", "--format", "concise", ".").out

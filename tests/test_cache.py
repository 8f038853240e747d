"""The script phase's cache: unchanged files are not linted again, anything that
could change a finding is."""

from __future__ import annotations

import json

from conftest import BUGGY, run_subprocess

LOAD = "import torch\nstate = torch.load('model.pt')\n"


def cache_files(root):
    return sorted((root / ".nnlint_cache").glob("script-*.json"))


def test_a_second_run_is_served_from_the_cache(cli, write, tmp_path):
    write("train.py", BUGGY)
    first = cli("--format", "concise", "train.py")
    assert (tmp_path / ".nnlint_cache" / ".gitignore").read_text().endswith("*\n")
    [stored] = cache_files(tmp_path)
    entries = json.loads(stored.read_text())
    # Plant a finding only the cache knows of: a second run must report it.
    entries["train.py"]["findings"][0]["message"] = "served from the cache"
    stored.write_text(json.dumps(entries))
    second = cli("--format", "concise", "train.py")
    assert "train.py:8:5: NN201 served from the cache" in second.out
    assert second.code == first.code == 1


def test_an_edited_file_is_linted_again(cli, write, tmp_path):
    write("train.py", BUGGY)
    cli("train.py")
    write(
        "train.py",
        BUGGY.replace("    loss.backward()\n", "    optimizer.zero_grad()\n    loss.backward()\n"),
    )
    assert "All checks passed!" in cli("train.py").out


def test_other_rules_or_options_or_project_files_use_another_entry(write, tmp_path):
    # In fresh processes: a rule may keep what it read of the project for the process.
    write("train.py", LOAD)
    write("pyproject.toml", '[project]\nname = "p"\ndependencies = ["torch>=2.1"]\n')
    old = run_subprocess("--format", "concise", "train.py", cwd=tmp_path).stdout
    assert "torch floor is 2.1" in old
    run_subprocess("--format", "concise", "--ignore", "NN201", "train.py", cwd=tmp_path)
    assert len(cache_files(tmp_path)) == 2
    write("pyproject.toml", '[project]\nname = "p"\ndependencies = ["torch>=2.0"]\n')
    new = run_subprocess("--format", "concise", "train.py", cwd=tmp_path).stdout
    assert "torch floor is 2.0" in new


def test_a_corrupt_cache_is_ignored(cli, write, tmp_path):
    write("train.py", BUGGY)
    cli("train.py")
    [stored] = cache_files(tmp_path)
    stored.write_text("{not json")
    run = cli("--format", "concise", "train.py")
    assert "train.py:8:5: NN201" in run.out and run.err == ""


def test_no_cache_neither_reads_nor_writes(cli, write, tmp_path):
    write("train.py", BUGGY)
    run = cli("--no-cache", "--format", "concise", "train.py")
    assert "NN201" in run.out
    assert not (tmp_path / ".nnlint_cache").exists()


def test_cache_can_be_turned_off_in_config(cli, write, tmp_path):
    write("train.py", BUGGY)
    write("nnlint.toml", "cache = false\n")
    cli("train.py")
    assert not (tmp_path / ".nnlint_cache").exists()

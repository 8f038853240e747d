"""The real pre-commit runs both hooks: failing on a buggy script, passing on a clean one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import BUGGY, CLEAN

ROOT = Path(__file__).resolve().parents[1]
PRE_COMMIT = shutil.which("pre-commit") or str(Path(sys.executable).parent / "pre-commit")


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def hook_env(tmp_path_factory):
    """A git repo holding one script, and a pre-commit cache shared by the tests."""
    home = tmp_path_factory.mktemp("pre-commit-home")
    env = {
        **os.environ,
        "PRE_COMMIT_HOME": str(home),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _repo(tmp_path: Path, text: str) -> Path:
    repo = tmp_path / "project"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "train.py").write_text(text)
    _git(repo, "add", "train.py")
    return repo


@pytest.mark.parametrize(("text", "expected"), [(BUGGY, 1), (CLEAN, 0)])
def test_script_hook_via_try_repo(tmp_path, hook_env, text, expected):
    repo = _repo(tmp_path, text)
    proc = subprocess.run(
        [PRE_COMMIT, "try-repo", str(ROOT), "nnlint", "--files", "train.py"],
        cwd=repo,
        env=hook_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == expected, proc.stdout + proc.stderr
    if expected:
        assert "train.py:8:5: NN201" in proc.stdout


@pytest.mark.parametrize(("text", "expected"), [(BUGGY, 1), (CLEAN, 0)])
def test_script_hook_runs_on_notebooks(tmp_path, hook_env, text, expected):
    repo = tmp_path / "project"
    repo.mkdir()
    _git(repo, "init", "-q")
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_markdown_cell("# Train")]
    notebook.cells += [nbformat.v4.new_code_cell(cell) for cell in text.split("\n\n")]
    nbformat.write(notebook, repo / "train.ipynb")
    _git(repo, "add", "train.ipynb")
    proc = subprocess.run(
        [PRE_COMMIT, "try-repo", str(ROOT), "nnlint", "--all-files"],
        cwd=repo,
        env=hook_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == expected, proc.stdout + proc.stderr
    if expected:
        assert "train.ipynb:cell 3:6:5: NN201" in proc.stdout


@pytest.mark.parametrize(("text", "expected"), [(BUGGY, 1), (CLEAN, 0)])
def test_local_model_hook(tmp_path, hook_env, text, expected):
    repo = _repo(tmp_path, text)
    (repo / ".pre-commit-config.yaml").write_text(
        "repos:\n"
        "  - repo: local\n"
        "    hooks:\n"
        "      - id: nnlint-model\n"
        "        name: nnlint (model checks)\n"
        "        entry: nnlint train.py\n"
        "        language: system\n"
        "        pass_filenames: false\n"
        "        types: [python]\n"
    )
    _git(repo, "add", ".pre-commit-config.yaml")
    proc = subprocess.run(
        [PRE_COMMIT, "run", "--all-files"],
        cwd=repo,
        env=hook_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == expected, proc.stdout + proc.stderr


def test_script_hook_honours_exclude_for_the_files_it_is_given(tmp_path, hook_env):
    repo = _repo(tmp_path, CLEAN)
    (repo / "legacy").mkdir()
    (repo / "legacy" / "old.py").write_text(BUGGY)
    (repo / "pyproject.toml").write_text('[tool.nnlint]\nexclude = ["legacy"]\n')
    _git(repo, "add", ".")
    proc = subprocess.run(
        [PRE_COMMIT, "try-repo", str(ROOT), "nnlint", "--files", "train.py", "legacy/old.py"],
        cwd=repo,
        env=hook_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "NN201" not in proc.stdout

"""The guard that keeps the user's code from changing the user's files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest


def run(tmp_path, body: str) -> subprocess.CompletedProcess:
    code = textwrap.dedent(
        """
        import os, shutil, tempfile
        import torch
        from nnlint.setup.sandbox import Refused, guarded

        def refused(fn, *args):
            try:
                fn(*args)
            except Refused as exc:
                return str(exc)
            return None
        """
    ) + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )


def test_writes_outside_the_sandbox_are_refused_and_inside_allowed(tmp_path):
    (tmp_path / "keep.txt").write_text("user data\n")
    proc = run(
        tmp_path,
        """
        with tempfile.TemporaryDirectory() as box, guarded(box):
            assert "write to new.txt" in refused(open, "new.txt", "w")
            assert "os.remove" in refused(os.remove, "keep.txt")
            assert "os.rename" in refused(os.rename, "keep.txt", "moved.txt")
            assert "torch.save" in refused(torch.save, {}, "w.pt")
            assert "process" in refused(os.system, "true")
            assert refused(open, "keep.txt") is None  # reading is fine
            with open(os.path.join(box, "scratch.txt"), "w") as f:
                f.write("ok")
            torch.save({}, os.path.join(box, "ok.pt"))
        # the guard is gone afterwards, torch.save restored
        assert not hasattr(torch.save, "__nnlint_original__")
        torch.save({}, "after.pt")
        print("done")
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "done"
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["after.pt", "keep.txt"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_the_model_named_by_model_cannot_write_when_imported(tmp_path):
    (tmp_path / "model.py").write_text(
        "import torch\nfrom torch import nn\n"
        "open('import-log.txt', 'w').write('imported')\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(4, 2)\n"
        "    def forward(self, x):\n"
        "        return self.fc(x)\n"
    )
    (tmp_path / "train.py").write_text("import torch\n")
    command = ["train.py", "--model", "model.py:Net", "--verbose"]
    proc = subprocess.run(
        [sys.executable, "-m", "nnlint", "--isolated", *command],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert not (tmp_path / "import-log.txt").exists()
    assert not (tmp_path / "__pycache__").exists()
    if "ran with overlay + landlock" in proc.stderr:  # the write landed on a scratch copy
        assert proc.returncode in (0, 1), proc.stderr
    else:  # only the audit hooks hold: refused
        assert proc.returncode == 2
        assert "refused a write to import-log.txt" in proc.stderr


def test_shared_folders_are_writable_except_the_project_inside_them(tmp_path):
    shared, project = tmp_path / "shared", tmp_path / "shared" / "project"
    project.mkdir(parents=True)
    (project / "keep.txt").write_text("user data\n")
    proc = run(
        tmp_path,
        f"""
        with tempfile.TemporaryDirectory() as box, guarded(
            box, shared=[{str(shared)!r}], protect=[{str(project)!r}]
        ):
            os.makedirs({str(shared / "cache" / "inductor")!r})
            open({str(shared / "cache" / "x.bin")!r}, "w").write("cache")
            assert "write to" in refused(open, {str(project / "new.txt")!r}, "w")
            assert "os.remove" in refused(os.remove, {str(project / "keep.txt")!r})
            assert "shutil.rmtree" in refused(shutil.rmtree, {str(project)!r})
        print("done")
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert (shared / "cache" / "x.bin").exists()
    assert sorted(p.name for p in project.iterdir()) == ["keep.txt"]


def test_a_fresh_temp_folder_does_not_stop_a_model_whose_import_fills_a_cache(tmp_path):
    # transformers and lightning create $TMPDIR/torchinductor_<user> on import
    project, systemp = tmp_path / "project", tmp_path / "systemp"
    project.mkdir()
    systemp.mkdir()
    (project / "model.py").write_text(
        "import os, tempfile\nfrom torch import nn\n"
        "os.makedirs(os.path.join(tempfile.gettempdir(), 'libcache_user'), exist_ok=True)\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(4, 2)\n"
        "    def forward(self, x):\n"
        "        return self.fc(x)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "nnlint", "--isolated", "--model", "model.py:Net"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TMPDIR": str(systemp)},
    )
    assert proc.returncode in (0, 1), proc.stderr
    assert "refused" not in proc.stderr
    # the model's temp folder was a scratch copy in the model child, removed after the run
    assert list(systemp.iterdir()) == []
    assert sorted(p.name for p in project.iterdir() if p.name != ".nnlint_cache") == ["model.py"]

"""The operating-system containment: hostile code cannot change a watched project.

Each case forks a child, contains it, and runs one hostile action against a
watched project folder. The child must succeed and read back its own writes
(they land in the overlay's scratch), while every file of the real project
stays byte-identical.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import mmap
import multiprocessing
import os
import select
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from nnlint.setup.contain import contain

try:
    import torch
except ImportError:  # the torch cases skip
    torch = None

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")
needs_torch = pytest.mark.skipif(torch is None, reason="needs torch")
WEIGHTS = bytes(range(256)) * 16


def make_project(root: Path) -> Path:
    project = root / "project"
    (project / "keep" / "deep").mkdir(parents=True)
    (project / "data.txt").write_text("user data\n")
    (project / "keep" / "a.txt").write_text("a\n")
    (project / "keep" / "deep" / "b.txt").write_text("b\n")
    (project / "weights.bin").write_bytes(WEIGHTS)
    (project / "model.pt").write_bytes(b"not a real checkpoint\n")
    with sqlite3.connect(project / "db.sqlite") as db:
        db.execute("create table t (x)")
        db.execute("insert into t values (1)")
    db.close()
    return project


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


def in_child(action, project: Path, scratch: Path, *, contained=True, threads=0, timeout=600):
    """Run `action(project)` in a forked child after `contain()`; the child's report."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        report = {}
        try:
            os.close(read)
            for _ in range(threads):
                threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
            tmp = scratch / "tmp"
            tmp.mkdir(parents=True, exist_ok=True)
            os.environ["TMPDIR"] = tempfile.tempdir = str(tmp)
            if contained:
                protection = contain([project], scratch)
                report["protection"] = str(protection)
                report["layers"] = list(protection.layers)
            if torch is not None:
                torch.set_num_threads(1)  # a forked child's first parallel op may hang
            report["readback"] = action(project)
        except BaseException as exc:
            report["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            os.write(write, json.dumps(report).encode())
            os._exit(0)
    os.close(write)
    try:
        data = b""
        deadline = time.monotonic() + timeout
        while select.select([read], [], [], max(0.0, deadline - time.monotonic()))[0]:
            chunk = os.read(read, 1 << 16)
            if not chunk:
                break
            data += chunk
        else:
            os.kill(pid, signal.SIGKILL)
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    return json.loads(data or b'{"error": "no report"}')


@pytest.fixture(scope="module")
def layers(tmp_path_factory):
    """The layers contain() sets up on this machine; skips where there is no overlay."""
    root = tmp_path_factory.mktemp("probe")
    report = in_child(lambda p: True, make_project(root), root / "scratch")
    if "overlay" not in report.get("layers", []):
        pytest.skip(f"no overlay on this machine: {report.get('protection') or report}")
    return report["layers"]


libc = ctypes.CDLL(None, use_errno=True)


def libc_write(project: Path) -> bool:
    fd = libc.open(str(project / "data.txt").encode(), os.O_WRONLY | os.O_TRUNC)
    assert fd >= 0, os.strerror(ctypes.get_errno())
    assert libc.write(fd, b"pwned", 5) == 5
    libc.close(fd)
    return (project / "data.txt").read_bytes() == b"pwned"


def libc_unlink(project: Path) -> bool:
    assert libc.unlink(str(project / "keep" / "a.txt").encode()) == 0
    return not (project / "keep" / "a.txt").exists()


def libc_open_creates(project: Path) -> bool:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    fd = libc.open(str(project / "new.txt").encode(), flags, 0o644)
    assert fd >= 0, os.strerror(ctypes.get_errno())
    libc.write(fd, b"new", 3)
    libc.close(fd)
    return (project / "new.txt").read_bytes() == b"new"


def sqlite_creates(project: Path) -> bool:
    with sqlite3.connect(project / "new.db") as db:
        db.execute("create table t (x)")
        db.execute("insert into t values (42)")
    with sqlite3.connect(project / "new.db") as db:
        return db.execute("select x from t").fetchall() == [(42,)]


def sqlite_modifies(project: Path) -> bool:
    with sqlite3.connect(project / "db.sqlite") as db:
        db.execute("update t set x = 2")
        db.execute("insert into t values (3)")
    with sqlite3.connect(project / "db.sqlite") as db:
        return db.execute("select x from t order by x").fetchall() == [(2,), (3,)]


def makes_fifo(project: Path) -> bool:
    os.mkfifo(project / "pipe")
    return stat.S_ISFIFO((project / "pipe").lstat().st_mode)


def writes_through_dir_fd(project: Path) -> bool:
    folder = os.open(project, os.O_RDONLY | os.O_DIRECTORY)
    fd = os.open("data.txt", os.O_WRONLY | os.O_TRUNC, dir_fd=folder)
    os.write(fd, b"overwritten")
    os.close(fd)
    os.unlink("model.pt", dir_fd=folder)
    os.close(folder)
    return (project / "data.txt").read_bytes() == b"overwritten" and not (
        project / "model.pt"
    ).exists()


def spawned_child_removes_folder(project: Path) -> bool:
    process = multiprocessing.get_context("spawn").Process(
        target=shutil.rmtree, args=(str(project / "keep"),)
    )
    process.start()
    process.join(60)
    return process.exitcode == 0 and not (project / "keep").exists()


def forkserver_child_removes_file(project: Path) -> bool:
    process = multiprocessing.get_context("forkserver").Process(
        target=os.remove, args=(str(project / "data.txt"),)
    )
    process.start()
    process.join(60)
    return process.exitcode == 0 and not (project / "data.txt").exists()


def subprocess_rm_rf(project: Path) -> bool:
    subprocess.run(["rm", "-rf", *map(str, project.iterdir())], check=True)
    return list(project.iterdir()) == []


def shutil_rmtree(project: Path) -> bool:
    shutil.rmtree(project / "keep")
    return not (project / "keep").exists()


def mmap_writes(project: Path) -> bool:
    with open(project / "weights.bin", "r+b") as f, mmap.mmap(f.fileno(), 0) as mapped:
        mapped[:4] = b"PWND"
        mapped.flush()
    return (project / "weights.bin").read_bytes()[:4] == b"PWND"


def renames_over(project: Path) -> bool:
    (project / "fresh.txt").write_text("fresh")
    os.replace(project / "fresh.txt", project / "keep" / "a.txt")
    return (project / "keep" / "a.txt").read_text() == "fresh"


def unmounts_then_writes(project: Path) -> bool:
    """What switching the guard off would be here: take the overlay away first."""
    for point in (project, project.parent):
        libc.umount2(str(point).encode(), 2)  # MNT_DETACH; refused, and the write below is scratch
    (project / "data.txt").write_text("after umount")
    return (project / "data.txt").read_text() == "after umount"


def jit_save_over(project: Path) -> bool:
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    torch.jit.save(scripted, str(project / "model.pt"))
    scripted.save(str(project / "keep" / "a.txt"))  # ScriptModule.save
    return isinstance(torch.jit.load(str(project / "model.pt")), torch.jit.ScriptModule)


def torch_save_over(project: Path) -> bool:
    torch.save({"w": torch.ones(2)}, project / "model.pt")
    return torch.load(project / "model.pt")["w"].sum().item() == 2


def from_file_shared(project: Path) -> bool:
    path = str(project / "weights.bin")
    tensor = torch.from_file(path, shared=True, size=16, dtype=torch.uint8)
    tensor.fill_(7)
    del tensor
    return (project / "weights.bin").read_bytes()[:16] == b"\x07" * 16


def switches_the_guard_off(project: Path) -> bool:
    """A script that turns nnlint's audit hooks off, then writes."""
    from nnlint.setup import sandbox

    sandbox.forget()
    with open(project / "data.txt", "w") as f:
        f.write("unguarded")
    return (project / "data.txt").read_text() == "unguarded"


ACTIONS = [
    libc_write,
    libc_unlink,
    libc_open_creates,
    sqlite_creates,
    sqlite_modifies,
    makes_fifo,
    writes_through_dir_fd,
    spawned_child_removes_folder,
    forkserver_child_removes_file,
    subprocess_rm_rf,
    shutil_rmtree,
    mmap_writes,
    renames_over,
    unmounts_then_writes,
    switches_the_guard_off,
]
TORCH_ACTIONS = [jit_save_over, torch_save_over, from_file_shared]
HOSTILE = [*ACTIONS, *(pytest.param(a, marks=needs_torch) for a in TORCH_ACTIONS)]


@pytest.mark.parametrize("action", HOSTILE, ids=lambda a: a.__name__)
def test_hostile_code_changes_only_its_own_copy(layers, tmp_path, action):
    project = make_project(tmp_path)
    before = snapshot(project)
    report = in_child(action, project, tmp_path / "scratch")
    assert report.get("error") is None, report
    assert report["readback"] is True, report  # the child saw its own write
    assert snapshot(project) == before  # the real files did not change


def test_the_watch_sees_what_an_uncontained_child_does(tmp_path):
    project = make_project(tmp_path)
    before = snapshot(project)
    report = in_child(libc_unlink, project, tmp_path / "scratch", contained=False)
    assert report == {"readback": True}
    assert snapshot(project) != before


def test_the_overlay_covers_mounts_inside_the_project(layers, tmp_path):
    project = make_project(tmp_path)
    inner = project / "mounted"
    inner.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "none", str(inner)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        (inner / "f.txt").write_text("inside a mount\n")
        before = snapshot(project)

        def writes_inside_the_mount(project: Path) -> bool:
            (project / "mounted" / "f.txt").write_text("changed")
            return (project / "mounted" / "f.txt").read_text() == "changed"

        report = in_child(writes_inside_the_mount, project, tmp_path / "scratch")
        assert report.get("error") is None, report
        assert report["readback"] is True
        assert snapshot(project) == before
    finally:
        subprocess.run(["umount", str(inner)], check=True)


def test_scratch_on_an_overlay_keeps_the_layers_in_memory(layers, tmp_path):
    """In a container, /tmp is often an overlay, which cannot hold an upper layer."""
    parts = [tmp_path / name for name in ("lower", "upper", "work", "merged")]
    for part in parts:
        part.mkdir()
    options = f"lowerdir={parts[0]},upperdir={parts[1]},workdir={parts[2]}"
    mounted = subprocess.run(["mount", "-t", "overlay", "none", "-o", options, str(parts[3])])
    if mounted.returncode != 0:
        pytest.skip("cannot mount an overlay here (not root)")
    try:
        project = make_project(tmp_path)
        before = snapshot(project)
        report = in_child(libc_write, project, parts[3] / "scratch")
        assert report.get("error") is None, report
        assert report["readback"] is True
        assert report["protection"].startswith("overlay + landlock"), report
        assert snapshot(project) == before
    finally:
        subprocess.run(["umount", str(parts[3])], check=True)


def test_nothing_the_code_starts_outlives_it(layers, tmp_path):
    if "pid-namespace" not in layers:
        pytest.skip("no pid namespace on this machine")
    marker = f"{os.getpid()}.{time.monotonic_ns() % 10**6}"

    def leaves_a_daemon(project: Path) -> bool:
        subprocess.Popen(["setsid", "sleep", marker], start_new_session=True)
        return True

    report = in_child(leaves_a_daemon, make_project(tmp_path), tmp_path / "scratch")
    assert report.get("error") is None, report
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _running(marker):
        time.sleep(0.1)
    assert not _running(marker)


def _running(marker: str) -> bool:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
        except OSError:
            pass
    return False


def test_a_process_with_threads_gets_landlock_only_and_says_so(tmp_path):
    project = make_project(tmp_path)
    before = snapshot(project)

    def tries_to_write(project: Path) -> bool:
        try:
            (project / "data.txt").write_text("pwned")
        except PermissionError:
            return False
        return True

    report = in_child(tries_to_write, project, tmp_path / "scratch", threads=1)
    assert "overlay" not in report["layers"], report
    assert "threads are running" in report["protection"]
    if "landlock" not in report["layers"]:
        assert report["protection"].startswith("audit hooks only")
        pytest.skip(f"no landlock on this machine: {report['protection']}")
    assert report["protection"].startswith("landlock only")
    assert report["readback"] is False  # refused, not copied
    assert snapshot(project) == before


def test_an_unprivileged_user_gets_the_overlay_too(layers, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the test drops from root to an unprivileged user")
    root = Path(tempfile.mkdtemp(prefix="nnlint-unprivileged-"))
    try:
        root.chmod(0o755)
        project = make_project(root)
        scratch = root / "scratch"
        scratch.mkdir()
        for path in [scratch, project, *project.rglob("*")]:
            os.chown(path, 65534, 65534)
        before = snapshot(project)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                report = {"protection": str(contain([project], scratch))}
                report["readback"] = libc_write(project) and shutil_rmtree(project)
            except BaseException as exc:
                report = {"error": f"{type(exc).__name__}: {exc}"}
            os.write(write, json.dumps(report).encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read) as f:
            report = json.loads(f.read() or "{}")
        os.waitpid(pid, 0)
        assert report.get("error") is None, report
        assert report["protection"].startswith("overlay + landlock"), report
        assert report["readback"] is True
        assert snapshot(project) == before
    finally:
        shutil.rmtree(root)


def test_memory_limit_bounds_the_address_space(layers, tmp_path):
    def allocates(project: Path) -> bool:
        try:
            bytearray(4 << 30)
        except MemoryError:
            return True
        return False

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            protection = contain([], tmp_path, memory_limit=2 << 30)
            ok = "memory-limit" in protection.layers and allocates(tmp_path)
        except BaseException:
            ok = False
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        assert f.read() == b"1"
    os.waitpid(pid, 0)


HOSTILE_SCRIPT = """\
import os
import sys
from pathlib import Path

import torch
from model import Net

sys.path.insert(0, {tests!r})
import test_contain as hostile

if __name__ == "__main__":
    failed = []
    for action in hostile.ACTIONS + hostile.TORCH_ACTIONS:
        try:
            if not action(Path("cases", action.__name__, "project").resolve()):
                failed.append(action.__name__ + " (not read back)")
        except BaseException as exc:
            failed.append(f"{{action.__name__}} ({{type(exc).__name__}}: {{exc}})")
    home = Path.home()
    (home / ".bashrc").write_text("pwned")
    (home / "notes.txt").unlink()
    if failed:
        raise RuntimeError("hostile actions failed: " + ", ".join(failed))
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(3):
        x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
"""

HOSTILE_MODEL = """\
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))
"""


@needs_torch
def test_the_cli_runs_a_hostile_script_on_a_copy(layers, tmp_path):
    """`nnlint train.py --model model.py:Net` on a script that tries every case above."""
    work, home = tmp_path / "work", tmp_path / "home"
    for folder in (work, home):
        folder.mkdir()
    # short: the forkserver's socket path under it must fit AF_UNIX's 108 bytes
    tmp = Path(tempfile.mkdtemp(prefix="nn-", dir="/tmp"))
    for action in ACTIONS + TORCH_ACTIONS:
        make_project(work / "cases" / action.__name__)
    (work / "train.py").write_text(HOSTILE_SCRIPT.format(tests=str(Path(__file__).parent)))
    (work / "model.py").write_text(HOSTILE_MODEL)
    (home / ".bashrc").write_text("export PATH\n")
    (home / "notes.txt").write_text("the only copy\n")
    before = snapshot(tmp_path)
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(tmp), "NO_COLOR": "1"}
    command = ["train.py", "--model", "model.py:Net", "--format", "json", "--verbose", "--no-cache"]
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "nnlint", "--isolated", "--extend-select", "NN006", *command],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        left = list(tmp.iterdir())
    finally:
        shutil.rmtree(tmp)
    assert snapshot(tmp_path) == before, proc.stderr  # every watched file, the home too
    assert left == []  # the run's temporary folders are gone
    report = json.loads(proc.stdout)
    protection = report["summary"]["protection"]
    assert protection.startswith("overlay"), protection
    assert f"the training script ran with {protection}" in proc.stderr
    if protection == "overlay + landlock":  # every action ran, on the copy
        assert [f for f in report["findings"] if f["code"] == "NN006"] == [], report["findings"]
        assert "dynamic.init-loss" in report["summary"]["timings"]


def full_snapshot(root: Path) -> dict[str, tuple]:
    """`snapshot` plus what metadata calls change: owner, times, extended attributes."""
    seen = snapshot(root)
    for name in list(seen):
        info = (root / name).lstat()
        attrs = sorted(os.listxattr(root / name, follow_symlinks=False))
        seen[name] = (*seen[name], info.st_uid, info.st_gid, info.st_mtime_ns, attrs)
    return seen


def test_metadata_outside_the_project_cannot_change_either(layers, tmp_path):
    """Landlock has no right for chmod, chown, utime or setxattr: the rest of the tree
    is read-only instead, so a dataset folder outside the project keeps its metadata."""
    project = make_project(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "dataset.bin").write_bytes(WEIGHTS)
    before = full_snapshot(tmp_path)

    def change_metadata(project: Path) -> dict:
        results = {}
        for where in (project / "data.txt", outside / "dataset.bin", outside):
            for name, call in (
                ("chmod", lambda p: os.chmod(p, 0o777)),
                ("utime", lambda p: os.utime(p, (0, 0))),
                ("chown", lambda p: os.chown(p, os.getuid(), os.getgid())),
                ("setxattr", lambda p: os.setxattr(p, "user.nnlint", b"1")),
            ):
                try:
                    call(where)
                    results[f"{where.name} {name}"] = "done"
                except OSError as exc:
                    results[f"{where.name} {name}"] = errno.errorcode.get(exc.errno, "?")
        return results

    report = in_child(change_metadata, project, tmp_path / "scratch")
    assert "read-only" in report.get("layers", []), report
    done = report["readback"]
    assert done["data.txt chmod"] == "done" and done["data.txt utime"] == "done"  # its copy
    for key, outcome in done.items():
        if not key.startswith("data.txt"):
            assert outcome in ("EROFS", "EACCES", "EPERM"), (key, outcome)
    after = full_snapshot(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("scratch")} == {
        k: v for k, v in before.items() if not k.startswith("scratch")
    }

"""How nnlint talks to a forked child that runs user code, and cleans up after it.

Messages are pickled objects, each behind its length, on a pipe. The child is
killed as a process group (it made itself a group leader when it was
contained) and its scratch folder removed, also where the code inside took its
own permissions away. A scratch folder is named after the nnlint process that
made it, so that one left behind by an nnlint killed with SIGKILL, which can
clean nothing, is removed by the next run.
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import re
import select
import shutil
import signal
import struct
import tempfile
import time
from typing import Any


def fork() -> int:
    """`os.fork()`, with the objects that exist now moved out of the garbage collector's
    reach in the child: a collection there would otherwise touch every object's
    header and copy most of the parent's pages (torch's modules included) on write."""
    gc.freeze()
    pid = os.fork()
    if pid:
        gc.unfreeze()
    return pid


def send(fd: int, message: Any) -> None:
    data = pickle.dumps(message)
    os.write(fd, struct.pack("!Q", len(data)))
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def receive(fd: int, limit: float) -> Any:
    """One message, or None on timeout or when the child died without one."""
    deadline = time.monotonic() + limit
    buffer = b""
    size = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        # read no further than this message: the next may already be in the pipe
        wanted = 8 - len(buffer) if size is None else 8 + size - len(buffer)
        chunk = os.read(fd, min(wanted, 1 << 20))
        if not chunk:
            return None
        buffer += chunk
        if size is None and len(buffer) >= 8:
            size = struct.unpack("!Q", buffer[:8])[0]
        if size is not None and len(buffer) >= 8 + size:
            try:
                return pickle.loads(buffer[8 : 8 + size])
            except Exception:
                return None


def kill(pid: int) -> None:
    for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            target()
        except (ProcessLookupError, PermissionError):
            pass


def reap(pid: int, grace: float = 1.0) -> int | None:
    """The child's wait status once it ended; killed after `grace` seconds if it has not."""
    deadline = time.monotonic() + grace
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if done:
            return status
        if time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    kill(pid)
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return None


SCRATCH_PREFIX = "nnlint-run-"
_SCRATCH_NAME = re.compile(rf"{SCRATCH_PREFIX}(\d+)-\w+")
ORPHAN_AGE = 600.0  # seconds unchanged before a dead run's folder is removed


def scratch_folder() -> str:
    """A new scratch folder in the temporary directory, after removing the ones that
    runs which no longer exist left there."""
    remove_orphans(tempfile.gettempdir())
    return tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-")


def remove_orphans(folder: str) -> None:
    """Remove this user's scratch folders in `folder` whose nnlint process is gone and
    that have not changed for `ORPHAN_AGE` (a process of another PID namespace sharing
    the folder may look gone; a live run's folder changes as it runs)."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    now = time.time()
    for entry in entries:
        found = _SCRATCH_NAME.fullmatch(entry.name)
        if found is None or _alive(int(found.group(1))):
            continue
        with contextlib.suppress(OSError):
            info = entry.stat(follow_symlinks=False)
            if entry.is_dir(follow_symlinks=False) and info.st_uid == os.getuid():
                if now - info.st_mtime > ORPHAN_AGE:
                    remove(entry.path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's: alive
        return True
    return True


def remove(scratch: str) -> None:
    """Remove a scratch folder, also where the code took its own permissions away."""
    shutil.rmtree(scratch, ignore_errors=True)
    if os.path.exists(scratch):
        for folder, dirs, _files in os.walk(scratch):
            for name in dirs:  # before os.walk lists them
                with contextlib.suppress(OSError):
                    os.chmod(os.path.join(folder, name), 0o700)
        shutil.rmtree(scratch, ignore_errors=True)

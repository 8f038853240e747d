"""Run the model phases of `--model` in a contained, forked child.

Everything the user's model code does happens there: the import of its
module, its constructor, the forwards of the graph and dynamic phases (and the
training script, in a child of the child). The child is contained before any
of it runs (`nnlint.setup.contain`, with the address space bounded), its
standard input and output are taken from it, so nothing it prints can reach
nnlint's report on stdout, and whatever it leaves behind (a changed working
directory, threads, atexit handlers, processes) ends with it.

The child says which stage it starts and how long that may take (see
`nnlint.setup.bounds`); the findings come back on a pipe. A child that dies
(`os._exit`, a segfault, the kernel's OOM killer) or overruns a stage gives
one NN007 finding saying which stage it was in; the run goes on with the
other findings. A usage error or nnlint's own failure in the child is raised
here, as it would have been in this process.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nnlint.capture.channel import fork, kill, reap, receive, remove, scratch_folder, send
from nnlint.core.diagnostics import CheckSkipped
from nnlint.core.files import display_path
from nnlint.core.finding import Finding
from nnlint.setup import sandbox as guard
from nnlint.setup.bounds import Bounds, OutOfTime
from nnlint.setup.contain import Protection, contain
from nnlint.setup.lazydynamo import defer_dynamo_import

STARTUP = 60.0  # wall seconds the child may take to contain itself
SLACK = 10.0  # wall seconds the parent allows past a stage's own bound

# work(bounds, protection, sandbox, timings, about) -> findings; run in the child.
Work = Callable[[Bounds, Protection, str, dict, dict], list[Finding]]
# progress(text): the stage the user waits on; progress(None): nothing to show, because
# the wait is over or the stage ahead shows its own progress bar. Called in this process.
Progress = Callable[[str | None], None]


def run_isolated(
    work: Work,
    settings: Any,
    dirs: list[str],
    timings: dict[str, float],
    about: dict[str, Any],
    progress: Progress | None = None,
) -> list[Finding]:
    """The findings `work` returns in a contained child, or one NN007 saying why there are none.

    `progress` hears of each stage the child starts.
    """
    scratch = scratch_folder()
    limit = memory_limit(settings)
    tell = progress or _silent
    tell(None)  # no thread of the caller's (a spinner's) may run across the fork
    sys.stdout.flush()
    sys.stderr.flush()
    read_fd, write_fd = os.pipe()
    pid = fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read_fd)
        try:
            _child(work, settings, dirs, scratch, limit, write_fd)
        finally:
            os._exit(0)
    os.close(write_fd)
    outcome: Any = None
    tell("containing the model code")
    try:
        outcome = _parent(read_fd, settings, timings, about, tell)
    finally:
        os.close(read_fd)
        ended = isinstance(outcome, tuple) and outcome[0][1] == "ended"
        status = reap(pid, 5.0 if ended else 1.0)
        kill(pid)  # what the child left in its process group goes with it
        remove(scratch)
    if isinstance(outcome, BaseException):
        raise outcome
    if isinstance(outcome, list):
        return outcome
    (stage, reason), site = outcome
    reason = _ended(stage, status) if reason == "ended" else reason
    return [CheckSkipped.make(site[0], site[1], rule="graph and dynamic checks", reason=reason)]


def memory_limit(settings: Any) -> int | None:
    """`--memory-limit` in bytes; by default half the machine's memory, on the CPU only
    (CUDA reserves address space far beyond what it uses)."""
    chosen = getattr(settings, "memory_limit", None)
    if chosen is not None:
        return chosen or None
    if (getattr(settings, "device", None) or "cpu") != "cpu":
        return None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None
    try:
        capped = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        total = min(total, int(capped))
    except (OSError, ValueError):
        pass
    return total // 2


def _child(
    work: Work, settings: Any, dirs: list[str], scratch: str, limit: int | None, fd: int
) -> None:  # pragma: no cover - runs in the child
    cwd = os.getcwd()
    guard.forget()
    protection = contain(dirs, scratch, memory_limit=limit)
    defer_dynamo_import()  # this process is the child's own: the caller's torch is untouched
    os.chdir(cwd)  # through the overlay now mounted over it
    sandbox = os.path.join(scratch, "tmp")
    os.makedirs(sandbox, exist_ok=True)
    tempfile.tempdir = sandbox
    os.environ["TMPDIR"] = sandbox
    # stdout is nnlint's report: the model's output goes to stderr under --verbose
    quiet = os.open(os.devnull, os.O_RDWR)
    os.dup2(quiet, 0)
    os.dup2(2 if settings.verbose else quiet, 1)
    sys.dont_write_bytecode = True
    send(fd, ("contained", protection.description, str(protection)))
    bounds = Bounds(lambda message: send(fd, message), limit)
    timings: dict[str, float] = {}
    about: dict[str, Any] = {}
    try:
        found = work(bounds, protection, sandbox, timings, about)
        message: tuple = ("done", found, timings, about)
    except OutOfTime:  # a timer that fired as its stage ended
        message = ("stopped", "the model phases ran out of time")
    except BaseException as exc:
        message = ("raised", _picklable(exc))
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.setitimer(signal.ITIMER_PROF, 0)
    send(fd, message)


def _picklable(exc: BaseException) -> BaseException:
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def _silent(_text: str | None) -> None:
    pass


def _parent(
    fd: int, settings: Any, timings: dict[str, float], about: dict[str, Any], tell: Progress
) -> Any:
    """The child's findings, its exception, or (stage, site) where it stopped."""
    site = _model_file(settings)
    stage, cpu, wait = "starting", None, STARTUP
    while True:
        began = time.monotonic()
        message = receive(fd, wait + SLACK)
        if message is None:
            if time.monotonic() - began < wait + SLACK:  # the pipe closed: the child ended
                return (stage, "ended"), site
            bound = f"{cpu:g} s" if cpu is not None else f"{wait:g} s"
            return (stage, f"{stage} did not finish within {bound}"), site
        kind = message[0]
        if kind == "contained":
            about["protection"], about["protection_detail"] = message[1], message[2]
        elif kind == "stage":
            _, stage, cpu, wait = message
            tell(stage)
        elif kind == "progress":
            tell(message[1])
        elif kind == "site":
            site = message[1]
        elif kind == "stopped":
            return (stage, message[1]), site
        elif kind == "raised":
            return message[1]
        elif kind == "done":
            timings.update(message[2])
            about.update(message[3])
            return message[1]


def _ended(what: str, status: int | None) -> str:
    """How the child ended, in the user's words."""
    if status is None:
        return f"the model code ended nnlint's child process while {what}"
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
    else:
        code = os.waitstatus_to_exitcode(status)
        # PID 1 of the child's namespace exits with 128 + the signal that killed the code
        number = code - 128 if 128 < code < 128 + signal.NSIG else 0
        if not number:
            return f"the model code ended the process (exit status {code}) while {what}"
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    hint = " (out of memory?)" if name == "SIGKILL" else ""
    return f"the model code was killed by {name}{hint} while {what}"


def _model_file(settings: Any) -> tuple[str, int]:
    """Where a finding about the model points before the child said: its file, line 1."""
    root = Path(settings.root)
    module = (settings.model or "").rpartition(":")[0]
    candidates = [Path(module)] if module.endswith(".py") or "/" in module else []
    parts = module.replace(".", "/")
    folders = [root] + ([Path(settings.script).resolve().parent] if settings.script else [])
    for folder in folders:
        candidates += [folder / f"{parts}.py", folder / parts / "__init__.py"]
    for path in candidates:
        if path.is_file():
            return display_path(path, root), 1
    return display_path(root / "<model>", root), 1

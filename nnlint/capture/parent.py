"""Learn the training setup by running the training script up to its first optimizer step.

The parent forks (torch is already imported, so the child starts in
milliseconds); the child sets one intra-op thread (a child forked after the
parent used its thread pool hangs on its first parallel op), moves into the
script's directory, intercepts the `--model` target, the losses, `backward`
and the optimizer step, and runs the script. At the first `optimizer.step()`
it stops the script and runs the dynamic checks on the objects it caught:
custom losses and classes defined in `__main__` cannot be pickled back, the
findings can. The child also runs the graph phase, on the model as the script
built it (with its own constructor arguments, which the caller might not know
how to give). The child is contained before the script runs (see
`nnlint.capture.child`): its writes land in a scratch folder, removed here
after the run. Anything that stops the run becomes one NN006 finding and the
caller falls back.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnlint.capture.channel import fork, kill, reap, receive, remove, send
from nnlint.capture.child import run_child
from nnlint.core.config import WALL_FACTOR
from nnlint.core.diagnostics import CheckSkipped, ScriptNotRun
from nnlint.core.files import display_path
from nnlint.core.finding import Finding, Phase
from nnlint.setup import sandbox as guard
from nnlint.setup.sites import Site

CHECKS_LIMIT = 300.0  # seconds the child may spend on the checks after the capture


@dataclass
class ScriptRun:
    """What the run gave: its notes (NN006), the child's graph and dynamic findings
    (None: the caller falls back to its own model), the batch."""

    notes: list[Finding] = field(default_factory=list)
    findings: list[Finding] | None = None
    batch: Any = None
    timings: dict[str, float] = field(default_factory=dict)
    protection: str | None = None  # the layers that contained the script, in one line
    protection_detail: str | None = None  # and what the kernel did not offer
    reason: str | None = None  # why the script could not be used, when it could not
    setup: dict | None = None  # the task and loss the checks used (`Setup.describe`)
    stats: dict | None = None  # what `--report`/`--stats` show, measured in the child


def learn_from_script(
    settings: Any,
    rules: list,
    model_site: Site | None,
    timings: dict[str, float],
    sandbox: str | None = None,
    show: Callable[[str | None], None] | None = None,
) -> ScriptRun | None:
    """Run the training script in a forked child; None when there is nothing to run.

    The child's scratch folder is made in `sandbox` (the temporary directory
    the caller's guard allows), or in the temporary directory. `show(None)`
    is called when the child starts the dynamic checks, which show their own bar.
    """
    script = getattr(settings, "script", None)
    wanted = any(r.kind is Phase.DYNAMIC for r in rules)
    if not (script and settings.capture and settings.dynamic and wanted and settings.model):
        return None
    script_path = Path(script).resolve()
    display = display_path(script_path, Path(settings.root))
    start = time.perf_counter()
    scratch = tempfile.mkdtemp(prefix="nnlint-run-", dir=sandbox)
    read_fd, write_fd = os.pipe()
    pid = fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read_fd)
        code = 0
        try:
            guard.forget()
            run_child(write_fd, script_path, settings, rules, model_site, send, scratch)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    try:
        contained = receive(read_fd, 30.0)
        run = _parent(read_fd, pid, settings, display, show)
    finally:
        os.close(read_fd)
        reap(pid)
        remove(scratch)
    if contained is not None and contained[0] == "contained":
        run.protection, run.protection_detail = contained[1], contained[2]
    timings["capture"] = time.perf_counter() - start
    return run


def _parent(
    fd: int, pid: int, settings: Any, display: str, show: Callable[[str | None], None] | None
) -> ScriptRun:
    limit = float(settings.capture_timeout) * WALL_FACTOR + 5.0
    message = receive(fd, limit)
    if message is None:
        kill(pid)
        reason = f"it did not reach its first optimizer step within {settings.capture_timeout:g} s"
        return ScriptRun([_not_used(display, 1, reason)], reason=reason)
    if message[0] == "failed":
        _, reason, line, notes = message
        return ScriptRun([*notes, _not_used(display, line, reason)], reason=reason)
    _, batch, found = message
    if show is not None:
        show(None)
    done = receive(fd, CHECKS_LIMIT * WALL_FACTOR)
    if done is None or done[0] != "done":
        kill(pid)
        note = CheckSkipped.make(
            display,
            1,
            rule="dynamic checks",
            reason=f"they did not finish within {CHECKS_LIMIT * WALL_FACTOR:g} s",
        )
        return ScriptRun([note], found, batch)
    return ScriptRun([], found + done[1], batch, done[2], setup=done[3], stats=done[4] or None)


def _not_used(display: str, line: int, reason: str) -> Finding:
    return ScriptNotRun.make(display, line, outcome="not used", reason=reason)

"""Time and memory bounds on the stages of the user's code in the model child.

`Bounds.stage(what, cpu)` tells the parent which stage starts and how long it
may take (the parent kills a child that overruns it), and bounds it inside the
child too: `cpu` seconds of CPU time, and `WALL_FACTOR` times as much wall
time for code that waits without working. A stage that runs out of time or
memory raises `Stopped`, whose reason becomes one NN007 finding. In
nnlint's own process (`nnlint.check`), `Bounds()` bounds nothing.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from typing import Any

from nnlint.core.config import WALL_FACTOR


class OutOfTime(BaseException):
    """A stage's time ran out (a BaseException: the user's `except Exception` lets it by)."""


class Stopped(BaseException):
    """The model phases cannot go on; `reason` says why, for the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_out_of_memory(exc: BaseException) -> bool:
    """Python's MemoryError, or torch's allocator failing (a RuntimeError)."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "can't allocate memory" in text or "out of memory" in text.lower()
    )


def size_text(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} bytes"


class Bounds:
    """The stages' bounds; `tell(message)` tells the parent, and None bounds nothing."""

    def __init__(
        self, tell: Callable[[tuple], None] | None = None, memory_limit: int | None = None
    ) -> None:
        self.tell = tell
        self.memory_limit = memory_limit

    def show(self, text: str | None) -> None:
        """What the user waits on, for the parent's status line (None: hide it)."""
        if self.tell is not None:
            self.tell(("progress", text))

    def located(self, path: str, line: int) -> None:
        """Where findings about the model as a whole point, once it is known."""
        if self.tell is not None:
            self.tell(("site", (path, line)))

    @contextlib.contextmanager
    def stage(self, what: str, cpu: float | None, wall: float | None = None) -> Iterator[None]:
        """Run the block as one stage; `cpu` None leaves the timing to the block itself,
        and the parent waits `wall` seconds."""
        if self.tell is None:
            yield
            return
        wall = float(cpu or 0.0) * WALL_FACTOR if wall is None else wall
        self.tell(("stage", what, cpu, wall))
        timers = cpu is not None and hasattr(signal, "setitimer")
        if timers:

            def expire(_signum: int, _frame: Any) -> None:
                raise OutOfTime()

            saved = signal.signal(signal.SIGPROF, expire), signal.signal(signal.SIGALRM, expire)
            signal.setitimer(signal.ITIMER_PROF, cpu)
            signal.setitimer(signal.ITIMER_REAL, cpu * WALL_FACTOR)
        try:
            yield
        except OutOfTime:
            raise Stopped(f"{what} did not finish within {cpu:g} s") from None
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            raise Stopped(f"{what} ran out of memory{self._limit()}") from None
        finally:
            if timers:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.setitimer(signal.ITIMER_PROF, 0)
                signal.signal(signal.SIGPROF, saved[0])
                signal.signal(signal.SIGALRM, saved[1])

    def _limit(self) -> str:
        if self.memory_limit is None:
            return ""
        return f" (the limit is {size_text(self.memory_limit)}; raise it with --memory-limit)"

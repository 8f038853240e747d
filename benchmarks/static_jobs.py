"""The default job count against `-j 1`: parallelism must never make a run slower.

`nnlint --static-only` without `-j` picks its worker count from the files and the
CPUs it may run on (its affinity). This benchmark lints samples of the installed
torch package's sources (2, 8, 32 and `--files` files, copied to a scratch folder)
with the default and with `-j 1`, interleaved, and reports the wall-clock time of
each (least of `--runs`, the figure least disturbed by other work), on an idle
machine and with the CPUs saturated by as many busy processes as there are CPUs
(started and stopped by the benchmark). Wall time is what parallelism buys; CPU
time is always a little higher with workers. Target: the default never slower
than `-j 1` (ratio >= 1 within the noise of a shared machine, so >= 0.9).

Usage: python benchmarks/static_jobs.py [--runs N] [--files N] [--no-busy] [--json]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from static_throughput import BenchmarkError, emit, torch_sources

SPIN = "while True: pass"


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@contextmanager
def saturated(busy: bool):
    """As many spinning processes as CPUs while the block runs (none when not `busy`)."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(cores() if busy else 0)
    ]
    try:
        time.sleep(0.5 if busy else 0)
        yield
    finally:
        for process in spinners:
            process.kill()
            process.wait()


def wall(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):
        lines = done.stderr.strip().splitlines() or ["no output"]
        raise BenchmarkError(f"nnlint exited {done.returncode}: {lines[-1]}")
    return seconds


def measure(files: int, runs: int, busy: bool) -> list[dict]:
    site, paths = torch_sources(files)
    base = [sys.executable, "-m", "nnlint", "--static-only", "--isolated", "--no-cache"]
    base += ["--select", "ALL", "--format", "json"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        names = []
        for index, path in enumerate(paths):
            name = f"f{index:04d}_{Path(path).name}"
            shutil.copyfile(site / path, root / name)
            names.append(name)
        sizes = sorted({n for n in (2, 8, 32, len(names)) if n <= len(names)})
        for count in sizes:
            sample = names[:: max(1, len(names) // count)][:count]
            default, single = [*base, *sample], [*base, "-j", "1", *sample]
            wall(single, root)  # untimed: bytecode compiled, files in the page cache
            for load in (False, True) if busy else (False,):
                with saturated(load):
                    times: dict[str, list[float]] = {"default": [], "one": []}
                    for _ in range(runs):
                        times["default"].append(wall(default, root))
                        times["one"].append(wall(single, root))
                ours, alt = min(times["default"]), min(times["one"])
                rows.append(
                    {
                        "benchmark": "static_jobs",
                        "case": f"{count} files, "
                        + (f"{cores()} CPUs saturated" if load else "idle"),
                        "nnlint": ours,
                        "alternative": "-j 1",
                        "alt": alt,
                        "ratio": alt / ours,
                        "unit": "s",
                        "target": ">= 0.9x (never slower)",
                        "note": f"wall seconds, least of {runs}, default -j on {cores()} CPUs",
                    }
                )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--files", type=int, default=200, help="the largest sample")
    parser.add_argument("--no-busy", action="store_true", help="only the idle machine")
    parser.add_argument("--json", action="store_true", help="print rows for benchmarks/run.py")
    args = parser.parse_args()
    if args.runs < 1 or args.files < 1:
        parser.error("--runs and --files must be at least 1")
    return emit(
        "static_jobs", lambda: measure(args.files, args.runs, not args.no_busy), table, args.json
    )


def table(rows: list[dict]) -> None:
    print(f"{'case':<28}{'default -j':>12}{'-j 1':>10}{'ratio':>8}  target")
    for row in rows:
        print(f"{row['case']:<28}{row['nnlint']:>11.2f}s{row['alt']:>9.2f}s{row['ratio']:>7.2f}x")


if __name__ == "__main__":
    sys.exit(main())

"""Script-rule throughput on real code: nnlint against TorchFix on torch's own sources.

Both tools lint the same files, the .py files of the installed torch package, with
the same number of worker processes, and every rule on:
  * `nnlint --static-only --isolated --select ALL -j N`
  * `torchfix --select ALL -j N` (TorchFix 0.7.0, as users run it: findings and diffs)
and the table gives files, seconds and files/s for each, and their ratio (target:
nnlint at least 2x TorchFix). TorchFix never parses a file without "torch" in it,
so such files are left out for both. The nnlint run is also the "no rule crashes
on real code" sweep: the count of NN001 findings is printed with the figures.

TorchFix pins an older libcst than nnlint's, so it gets its own virtual
environment, made on first use in benchmarks/.cache/torchfix-venv (TorchFix does
not depend on torch, and none is installed there). Paths go to both tools in the
same chunks, to stay under the argument-length limit.

Usage:
  python benchmarks/static_throughput.py              # every file (over an hour on 2 cores)
  python benchmarks/static_throughput.py --limit 400  # a fixed, spread-out sample (~15 min)
  python benchmarks/static_throughput.py --jobs 4 --json
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import re
import resource
import subprocess
import sys
import time
import venv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

TORCHFIX = "TorchFix 0.7.0"
TORCHFIX_VENV = Path(__file__).resolve().parent / ".cache" / "torchfix-venv"
# Bytes of paths per command line; far below Linux's limit, which also counts the environment.
CHUNK_BYTES = 100_000


class BenchmarkError(Exception):
    """The benchmark cannot run; the message says why, in one line."""


def emit(name: str, produce, table, as_json: bool) -> int:
    """A benchmark's exit code: its rows (`produce()`) as JSON for `run.py` or as
    `table(rows)`; exit 2 with one line on stderr when it cannot run."""
    try:
        rows = produce()
    except BenchmarkError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(rows))
    else:
        table(rows)
    return 0


@dataclass
class Timing:
    """Files linted, wall-clock seconds, and CPU seconds of all the tool's processes."""

    files: int
    seconds: float
    cpu_seconds: float
    crashes: int = 0

    @property
    def rate(self) -> float:
        return self.files / self.seconds


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def torch_sources(limit: int | None) -> tuple[Path, list[str]]:
    """The site-packages folder and the sorted paths, relative to it, of torch's .py files.

    Found without importing torch. With `limit`, every k-th file, so the sample
    spreads over the whole package and is the same on every run.
    """
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        raise BenchmarkError("torch is not installed in this environment")
    package = Path(next(iter(spec.submodule_search_locations)))
    files = [
        path
        for path in sorted(package.rglob("*.py"))
        if "torch" in path.read_text(encoding="utf-8", errors="replace")
    ]
    if limit is not None and limit < len(files):
        files = files[:: len(files) // limit][:limit]
    return package.parent, [str(path.relative_to(package.parent)) for path in files]


def chunks(paths: Sequence[str]) -> list[list[str]]:
    out: list[list[str]] = [[]]
    size = 0
    for path in paths:
        if out[-1] and size + len(path) + 1 > CHUNK_BYTES:
            out.append([])
            size = 0
        out[-1].append(path)
        size += len(path) + 1
    return out


def torchfix_command() -> list[str]:
    """The TorchFix executable, installing it into its own virtual environment if needed."""
    python = TORCHFIX_VENV / "bin" / "python"
    script = TORCHFIX_VENV / "bin" / "torchfix"
    if script.exists():
        return [str(script)]
    print(f"installing {TORCHFIX} into {TORCHFIX_VENV} ...", file=sys.stderr)
    venv.create(TORCHFIX_VENV, with_pip=True, clear=True)
    # TorchFix's own requirements (flake8, PyYAML, libcst<1.6) do not include torch.
    install = [str(python), "-m", "pip", "install", "--quiet", "torchfix==0.7.0"]
    done = subprocess.run(install, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not script.exists():
        lines = done.stderr.strip().splitlines() or ["no output"]
        raise BenchmarkError(f"cannot install {TORCHFIX}: {lines[-1]}")
    return [str(script)]


def warm_up(command: list[str], cwd: Path, batches: list[list[str]]) -> None:
    """One untimed run on one file: bytecode compiled, imports and that file cached."""
    subprocess.run([*command, batches[0][0]], cwd=cwd, capture_output=True, check=False)


def run_nnlint(cwd: Path, batches: list[list[str]], jobs: int) -> Timing:
    command = [sys.executable, "-m", "nnlint", "--static-only", "--isolated", "--select", "ALL"]
    command += ["--format", "json", "-j", str(jobs)]
    warm_up(command, cwd, batches)
    files = crashes = 0
    cpu, start = children_cpu(), time.perf_counter()
    for batch in batches:
        done = subprocess.run([*command, *batch], cwd=cwd, capture_output=True, text=True)
        try:
            report = json.loads(done.stdout)
        except json.JSONDecodeError:
            lines = done.stderr.strip().splitlines() or ["no output"]
            raise BenchmarkError(f"nnlint exited {done.returncode}: {lines[-1]}") from None
        files += report["summary"]["files"]
        crashes += sum(f["code"] == "NN001" for f in report["findings"])
    return Timing(files, time.perf_counter() - start, children_cpu() - cpu, crashes)


def run_torchfix(torchfix: list[str], cwd: Path, batches: list[list[str]], jobs: int) -> Timing:
    command = [*torchfix, "--select", "ALL", "-j", str(jobs)]
    warm_up(command, cwd, batches)
    files = 0
    cpu, start = children_cpu(), time.perf_counter()
    for batch in batches:
        done = subprocess.run([*command, *batch], cwd=cwd, capture_output=True, text=True)
        checked = re.search(r"Finished checking (\d+) files", done.stderr)
        if checked is None:
            lines = done.stderr.strip().splitlines() or ["no output"]
            raise BenchmarkError(f"torchfix exited {done.returncode}: {lines[-1]}")
        files += int(checked.group(1))
    return Timing(files, time.perf_counter() - start, children_cpu() - cpu)


def measure(limit: int | None, jobs: int) -> tuple[Timing, Timing]:
    cwd, paths = torch_sources(limit)
    batches = chunks(paths)
    torchfix = torchfix_command()
    ours = run_nnlint(cwd, batches, jobs)
    alternative = run_torchfix(torchfix, cwd, batches, jobs)
    if ours.files != len(paths) or alternative.files != len(paths):
        raise BenchmarkError(
            f"the tools did not lint the same files: {len(paths)} given, "
            f"nnlint checked {ours.files}, TorchFix {alternative.files}"
        )
    return ours, alternative


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, help="lint a fixed sample of this many files")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes each")
    parser.add_argument("--json", action="store_true", help="print rows for benchmarks/run.py")
    args = parser.parse_args()
    if args.jobs < 1 or (args.limit is not None and args.limit < 1):
        parser.error("--jobs and --limit must be at least 1")
    try:
        ours, alternative = measure(args.limit, args.jobs)
    except BenchmarkError as exc:
        print(f"static_throughput: error: {exc}", file=sys.stderr)
        return 2
    ratio = ours.rate / alternative.rate
    if args.json:
        case = f"torch sources, {ours.files} files" + ("" if args.limit else " (all)")
        cpu_ratio = alternative.cpu_seconds / ours.cpu_seconds
        note = (
            f"-j {args.jobs} processes for both; CPU-time ratio {cpu_ratio:.2f}x; "
            f"nnlint NN001 rule crashes: {ours.crashes}"
        )
        row = {
            "benchmark": "static_throughput",
            "case": case,
            "nnlint": ours.rate,
            "alternative": TORCHFIX,
            "alt": alternative.rate,
            "ratio": ratio,
            "unit": "files/s",
            "target": ">= 2x",
            "note": note,
        }
        print(json.dumps([row]))
        return 0
    version = importlib.metadata.version("nnlint")
    print(f"{'tool':<16}{'files':>7}{'seconds':>10}{'files/s':>10}{'CPU s':>10}  parallelism")
    for name, timing in ((f"nnlint {version}", ours), (TORCHFIX, alternative)):
        print(
            f"{name:<16}{timing.files:>7}{timing.seconds:>10.1f}{timing.rate:>10.2f}"
            f"{timing.cpu_seconds:>10.1f}  -j {args.jobs} (process pool)"
        )
    print(f"ratio nnlint/TorchFix: {ratio:.2f}x in files/s (target >= 2x)")
    print(f"ratio in CPU time: {alternative.cpu_seconds / ours.cpu_seconds:.2f}x")
    print(f"nnlint NN001 (rule crashes): {ours.crashes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

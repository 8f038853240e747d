"""Fuzz the script phase with generated Python: no crash, no false syntax error, no hang.

hypothesmith builds syntactically valid programs from Python's grammar. Each one
goes through `nnlint.script.phase.lint_file` with every script rule on, twice:
as generated, and after a short training script (so that the rules that wait
for `backward` or `optimizer.step` read it too). A run reports

  * crashes: an NN001 finding, or an exception out of `lint_file`;
  * false syntax errors: NN002 on a program CPython compiles;
  * timeouts: an input that needed more than `--timeout` CPU seconds;
  * the slowest inputs, by CPU seconds.

Every bad input is written to `benchmarks/.cache/fuzz/` so that it reproduces
with `nnlint --static-only FILE`. hypothesmith is not a test dependency:
`pip install hypothesmith` first.

Usage:
  python benchmarks/fuzz_script_phase.py --seconds 300
  python benchmarks/fuzz_script_phase.py --seconds 60 --timeout 5 --slowest 5
"""

from __future__ import annotations

import argparse
import hashlib
import signal
import sys
import tempfile
import time
import warnings
from pathlib import Path

try:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesmith import from_grammar
except ImportError:
    sys.exit("fuzz_script_phase: needs hypothesmith: pip install hypothesmith")

from nnlint.core.registry import load_registry
from nnlint.core.rule import Phase as RulePhase
from nnlint.script.phase import lint_file

OUT = Path(__file__).parent / ".cache" / "fuzz"
TRAINING = """\
import torch

model = torch.nn.Linear(4, 2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for x, y in loader:
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
"""


class _OutOfTime(Exception):
    pass


class _Done(Exception):
    pass


def _alarm(signum, frame):
    raise _OutOfTime


class Fuzzer:
    def __init__(self, seconds: float, timeout: float, folder: Path) -> None:
        self.deadline = time.monotonic() + seconds
        self.timeout = timeout
        self.folder = folder
        self.rules = [r() for r in load_registry().rules if r.kind is RulePhase.SCRIPT]
        self.programs = 0
        self.problems: list[tuple[str, str, Path]] = []  # kind, detail, saved file
        self.timings: list[tuple[float, str]] = []  # cpu seconds, source: the slowest 50

    def check(self, program: str) -> None:
        if time.monotonic() > self.deadline:
            raise _Done
        self.programs += 1
        self._lint(program)
        wrapped = TRAINING + program
        try:
            compile(wrapped, "wrapped", "exec")
        except (SyntaxError, ValueError):
            return  # a `from __future__` import must come first: not valid after a header
        self._lint(wrapped)

    def _lint(self, source: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "fuzzed.py"
            path.write_text(source, encoding="utf-8")
            signal.setitimer(signal.ITIMER_PROF, self.timeout)
            start = time.process_time()
            try:
                findings = lint_file(path, "fuzzed.py", self.rules, Path(tmp))
            except _OutOfTime:
                self._problem("timeout", f"over {self.timeout:g} CPU s", source)
                return
            except Exception as exc:  # the point of fuzzing: any exception is a bug
                self._problem("exception", f"{type(exc).__name__}: {exc}", source)
                return
            finally:
                signal.setitimer(signal.ITIMER_PROF, 0)
            spent = time.process_time() - start
        self.timings.append((spent, source))
        if len(self.timings) > 100:
            self.timings = sorted(self.timings, reverse=True)[:50]
        for finding in findings:
            if finding.code == "NN001":
                self._problem("crash", finding.message, source)
            elif finding.code == "NN002" and _compiles(source):
                self._problem("false syntax error", finding.message, source)

    def _problem(self, kind: str, detail: str, source: str) -> None:
        self.problems.append((kind, detail.splitlines()[0][:160], self.save(source)))

    def save(self, source: str) -> Path:
        digest = hashlib.sha256(source.encode()).hexdigest()[:16]
        path = self.folder / f"{digest}.py"
        if not path.exists():
            path.write_text(source, encoding="utf-8")
        return path


def _compiles(source: str) -> bool:
    try:
        compile(source, "fuzzed", "exec")
    except (SyntaxError, ValueError):
        return False
    return True


def run(seconds: float, timeout: float, folder: Path) -> Fuzzer:
    folder.mkdir(parents=True, exist_ok=True)
    fuzzer = Fuzzer(seconds, timeout, folder)
    signal.signal(signal.SIGPROF, _alarm)
    fuzzer.check("")  # untimed in effect: the first run imports what the rules import
    fuzzer.timings.clear()

    @settings(
        max_examples=10**9,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(from_grammar())
    def one(program: str) -> None:
        fuzzer.check(program)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            one()
        except _Done:
            pass
    return fuzzer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120, help="how long to fuzz")
    parser.add_argument("--timeout", type=float, default=10, help="CPU seconds per input")
    parser.add_argument("--slowest", type=int, default=10, help="slowest inputs to list")
    parser.add_argument("--out", type=Path, default=OUT, help="where bad inputs are saved")
    args = parser.parse_args(argv)
    fuzzer = run(args.seconds, args.timeout, args.out)
    print(f"{fuzzer.programs} programs in {args.seconds:g} s; {len(fuzzer.problems)} problems")
    for kind, detail, path in fuzzer.problems:
        print(f"  {kind}: {detail}  ({path})")
    print(f"slowest {args.slowest} inputs (CPU s, lines, file):")
    for spent, source in sorted(fuzzer.timings, reverse=True)[: args.slowest]:
        lines = source.count("\n") + 1
        print(f"  {spent:7.3f}  {lines:5d}  {fuzzer.save(source)}")
    return 1 if fuzzer.problems else 0


if __name__ == "__main__":
    sys.exit(main())

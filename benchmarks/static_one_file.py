"""What a pre-commit user waits for: one small file, and a re-run over unchanged files.

Measured in one run, each command a separate process, the commands in turn,
median of `--runs`, in
CPU seconds of the process (user + system), which a busy machine inflates far
less than wall time:
  * `nnlint --static-only train.py` against `torchfix train.py` (TorchFix 0.7.0,
    in its own venv under benchmarks/.cache/, as static_throughput.py makes it);
    target: nnlint at least 2x faster;
  * the same against `python -c "import libcst; libcst.parse_module(...)"` on the
    same file, the floor of any libcst-based linter; target: within 1.5x;
  * the cache: `nnlint --static-only` over 300 unchanged torch files (copied to
    a scratch folder), the first run (empty cache) against the second; target:
    the second at least 20x faster.

Usage: python benchmarks/static_one_file.py [--runs N] [--files N] [--json]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from static_throughput import children_cpu, emit, torch_sources, torchfix_command

TRAIN = """\
import torch
from torch import nn

model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
criterion = nn.CrossEntropyLoss()


def train(loader, epochs=2):
    for epoch in range(epochs):
        model.train()
        for x, y in loader:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()


def evaluate(loader):
    model.eval()
    with torch.no_grad():
        return sum((model(x).argmax(1) == y).sum().item() for x, y in loader)
"""
PARSE = "import libcst, sys; libcst.parse_module(open(sys.argv[1]).read())"


# As users run them: with compiled bytecode kept (pip compiles an installed
# package's; an editable install writes it on first use). Without it nnlint
# compiles its 40 modules on every run, and libcst's are already compiled.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def cpu(command: list[str], cwd: Path) -> float:
    """CPU seconds of one run of `command` (and anything it started)."""
    before = children_cpu()
    subprocess.run(command, cwd=cwd, capture_output=True, check=False, env=ENV)
    return children_cpu() - before


def interleaved_cpu(commands: dict[str, list[str]], cwd: Path, runs: int) -> dict[str, float]:
    """Median CPU seconds of each command, run in turn so that they share the machine's moods.

    On a shared machine the speed drifts over tens of seconds; timing one command's
    runs and then the other's would put that drift into the ratio.
    """
    for command in commands.values():
        cpu(command, cwd)  # untimed: bytecode compiled, files in the page cache
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            times[name].append(cpu(command, cwd))
    return {name: statistics.median(values) for name, values in times.items()}


def one_file(runs: int) -> dict[str, float]:
    nnlint = [sys.executable, "-m", "nnlint", "--isolated", "--no-cache", "--static-only"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "train.py").write_text(TRAIN)
        commands = {
            "nnlint": [*nnlint, "train.py"],
            "torchfix": [*torchfix_command(), "train.py"],
            "libcst": [sys.executable, "-c", PARSE, "train.py"],
        }
        return interleaved_cpu(commands, root, runs)


def cache(files: int) -> dict[str, float]:
    site, paths = torch_sources(files)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "pyproject.toml").write_text("[tool.nnlint]\n")
        for index, path in enumerate(paths):
            # Flat names: the files stay unrelated, as torch's own are to each other.
            shutil.copyfile(site / path, root / f"f{index:04d}_{Path(path).name}")
        command = [sys.executable, "-m", "nnlint", "--static-only", "-j", "1", "."]
        first = cpu(command, root)
        second = cpu(command, root)
    return {"first": first, "second": second, "files": len(paths)}


def json_rows(single: dict[str, float], cached: dict[str, float]) -> list[dict]:
    """The rows of benchmarks/run.py's table: ratio > 1 means nnlint is better."""
    return [
        {
            "benchmark": "static_one_file",
            "case": "one small file, --static-only",
            "nnlint": single["nnlint"],
            "alternative": "torchfix FILE",
            "alt": single["torchfix"],
            "ratio": single["torchfix"] / single["nnlint"],
            "unit": "s",
            "target": ">= 2x",
            "note": "CPU seconds, median",
        },
        {
            "benchmark": "static_one_file",
            "case": "one small file, --static-only",
            "nnlint": single["nnlint"],
            "alternative": "bare libcst parse",
            "alt": single["libcst"],
            "ratio": single["libcst"] / single["nnlint"],
            "unit": "s",
            "target": ">= 0.67x (within 1.5x)",
            "note": "CPU seconds, median",
        },
        {
            "benchmark": "static_one_file",
            "case": f"cache: 2nd run over {cached['files']:g} unchanged files",
            "nnlint": cached["second"],
            "alternative": "1st run (empty cache)",
            "alt": cached["first"],
            "ratio": cached["first"] / cached["second"],
            "unit": "s",
            "target": ">= 20x",
            "note": "CPU seconds, -j 1",
        },
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--files", type=int, default=300, help="files in the cache run")
    parser.add_argument("--json", action="store_true", help="print rows for benchmarks/run.py")
    args = parser.parse_args()
    produce = lambda: json_rows(one_file(args.runs), cache(args.files))  # noqa: E731
    return emit("static_one_file", produce, table, args.json)


def table(rows: list[dict]) -> None:
    print(f"{'case':<44}{'nnlint':>9}{'alternative':>26}{'alt':>9}{'ratio':>8}  target")
    for row in rows:
        print(
            f"{row['case']:<44}{row['nnlint']:>9.3f}{row['alternative']:>26}"
            f"{row['alt']:>9.3f}{row['ratio']:>7.2f}x  {row['target']}"
        )


if __name__ == "__main__":
    sys.exit(main())

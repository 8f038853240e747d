"""Startup cost of the script-only path (what pre-commit runs), measured in one run.

Times, as separate processes and median of several runs:
  * `python -c pass`                         (the floor: interpreter start)
  * `nnlint --static-only train.py`          (script rules, no torch)
  * `nnlint --static-only train.ipynb`       (the same code as a notebook: nbformat imported)
  * `nnlint train.py --model model.py:Net`   (the full pipeline, torch imported)
and prints each figure with its ratio to the static path.

Usage: python benchmarks/static_startup.py [--runs N] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN = """\
import torch
from model import Net

model = Net()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(2):
    x, y = torch.randn(8, 16), torch.randint(0, 4, (8,))
    optimizer.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
"""

MODEL = """\
import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))

    def forward(self, x):
        return self.body(x)
"""


def _time(command: list[str], cwd: Path, runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, cwd=cwd, capture_output=True, check=False)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _notebook(source: str) -> str:
    """The script as an nbformat 4 notebook, one code cell per paragraph."""
    cells = [
        {
            "cell_type": "code",
            "execution_count": None,
            "id": f"c{i}",
            "metadata": {},
            "outputs": [],
            "source": part.splitlines(keepends=True),
        }
        for i, part in enumerate(source.split("\n\n"))
    ]
    document = {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    return json.dumps(document, indent=1)


def measure(runs: int = 5) -> list[tuple[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "train.py").write_text(TRAIN)
        (root / "train.ipynb").write_text(_notebook(TRAIN))
        (root / "model.py").write_text(MODEL)
        nnlint = [sys.executable, "-m", "nnlint", "--isolated"]
        static = [*nnlint, "--static-only"]
        return [
            ("python -c pass", _time([sys.executable, "-c", "pass"], root, runs)),
            ("nnlint --static-only", _time([*static, "train.py"], root, runs)),
            ("nnlint --static-only .ipynb", _time([*static, "train.ipynb"], root, runs)),
            (
                "nnlint --model (full)",
                _time([*nnlint, "train.py", "--model", "model.py:Net"], root, max(1, runs // 2)),
            ),
        ]


def json_rows(rows: list[tuple[str, float]]) -> list[dict]:
    """The rows of benchmarks/run.py's table: ratio > 1 means nnlint is better."""
    figures = dict(rows)
    static, full = figures["nnlint --static-only"], figures["nnlint --model (full)"]
    return [
        {
            "benchmark": "static_startup",
            "case": "script-only path vs full pipeline",
            "nnlint": static,
            "alternative": "nnlint --model (torch imported)",
            "alt": full,
            "ratio": full / static,
            "unit": "s",
            "target": "no torch import",
            "note": f"python -c pass takes {figures['python -c pass']:.3f} s",
        }
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print rows for benchmarks/run.py")
    args = parser.parse_args()
    rows = measure(args.runs)
    if args.json:
        print(json.dumps(json_rows(rows)))
        return
    static = dict(rows)["nnlint --static-only"]
    print(f"{'command':<26}{'seconds':>10}{'vs static':>12}")
    for name, seconds in rows:
        print(f"{name:<26}{seconds:>10.3f}{seconds / static:>11.2f}x")


if __name__ == "__main__":
    main()

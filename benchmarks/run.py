"""Run every nnlint benchmark and print one table: nnlint, the alternative, the ratio.

Each benchmark script is run in its own process with `--json` and prints a
list of rows (`benchmark`, `case`, `nnlint`, `alternative`, `alt`, `ratio`,
`unit`, `target`, `note`); the ratio is oriented so that > 1 means nnlint is
better (faster, or cheaper than the alternative). All figures in one table come
from the same run on the same machine.

Usage:
  python benchmarks/run.py            # everything (several minutes)
  python benchmarks/run.py --quick    # fewer repetitions and smaller samples
  python benchmarks/run.py --only graph_capture static_startup
  python benchmarks/run.py --markdown # the table as Markdown, for benchmarks/README.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name -> (arguments, quick arguments)
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "static_startup": (["--runs", "5"], ["--runs", "3"]),
    "static_one_file": (["--runs", "7"], ["--runs", "3", "--files", "100"]),
    "static_throughput": (["--limit", "400"], ["--limit", "100"]),
    "static_jobs": (["--runs", "5", "--files", "100"], ["--runs", "2", "--files", "32"]),
    "graph_capture": (["--runs", "20"], ["--runs", "5"]),
    "dynamic_vs_checklist": ([], ["--quick"]),
    "report_overhead": (["--repeat", "3"], ["--repeat", "1"]),
}


def run_one(name: str, quick: bool, timeout: float) -> tuple[list[dict], str | None]:
    """The rows a benchmark printed, or an error that explains why there are none."""
    script = HERE / f"{name}.py"
    if not script.is_file():
        return [], "script missing"
    full, short = BENCHMARKS[name]
    command = [sys.executable, str(script), "--json", *(short if quick else full)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [], f"timed out after {timeout:g} s"
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return [], f"exit {done.returncode}: {lines[-1] if lines else 'no output'}"
    try:
        return json.loads(done.stdout.strip().splitlines()[-1]), None
    except (json.JSONDecodeError, IndexError):
        return [], "no JSON rows in its output"


def _figure(value: float, unit: str) -> str:
    if value >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:.3g} {unit}"


def table(rows: list[dict], markdown: bool) -> str:
    header = ["benchmark", "case", "nnlint", "alternative", "its figure", "ratio", "target"]
    body = [
        [
            row["benchmark"],
            row["case"],
            _figure(row["nnlint"], row["unit"]),
            row["alternative"],
            _figure(row["alt"], row["unit"]),
            f"{row['ratio']:.2f}x",
            row.get("target", ""),
        ]
        for row in rows
    ]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip() for cells in body
    ]
    return "\n".join(lines)


def machine() -> str:
    cores = os.cpu_count() or 0
    try:
        import torch

        version = f", torch {torch.__version__}"
    except ImportError:
        version = ""
    return f"{platform.machine()}, {cores} cores, Python {platform.python_version()}{version}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, smaller samples")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per benchmark")
    args = parser.parse_args()
    rows: list[dict] = []
    failed: list[str] = []
    notes: list[str] = []
    for name in args.only or list(BENCHMARKS):
        start = time.perf_counter()
        found, error = run_one(name, args.quick, args.timeout)
        took = time.perf_counter() - start
        print(f"{name}: {error or f'{len(found)} rows'} ({took:.0f} s)", file=sys.stderr)
        if error:
            failed.append(f"{name}: {error}")
        rows.extend(found)
        notes += [f"{r['benchmark']} / {r['case']}: {r['note']}" for r in found if r.get("note")]
    today = datetime.date.today().isoformat()
    print(f"nnlint benchmarks, {today}, {machine()}{' (--quick)' if args.quick else ''}")
    print()
    print(table(rows, args.markdown))
    if notes:
        print()
        print("\n".join(f"- {n}" if args.markdown else f"  {n}" for n in notes))
    if failed:
        print()
        print("\n".join(f"not run: {f}" for f in failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

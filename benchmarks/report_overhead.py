"""What the HTML report adds to a full run, on the benchmark models.

For each model of `dynamic_vs_checklist` (LeNet, TinyGPT, LeNet+sigmoid,
LeNet+detach: the same factories, batches and losses), the CPU time of a run
without and with the report, median of `--repeat` runs each, in alternation
so that a busy machine slows both alike; the rules on by default (graph and
dynamic). Two figures per model:

  * `cli`: a full run as a user starts it, `nnlint --model <the factory>
    --data <the batch> --loss ... --optimizer Adam:lr=3e-4 [--report r.html]`
    from an empty folder: the CPU time of the process and its children
    (importing torch, the contained child, the checks, the report). This is
    the figure the target applies to: the report adds at most 20% (ratio
    without/with >= 0.83).
  * `check`: `nnlint.check(model, batch=..., loss_fn=..., optimizer=...)` in
    this process, with torch and nnlint already imported, without and with
    `report=`: the report's own cost against the checks alone, a fixed
    fraction of a second for drawing the charts (pygal to SVG) next to checks
    which take a quarter of a second on these models.

CPU time (`resource`, `time.process_time`) rather than wall time: steadier on
a shared machine.

    python benchmarks/report_overhead.py             # 3 runs per side and model
    python benchmarks/report_overhead.py --repeat 5
    python benchmarks/report_overhead.py --json      # one line of rows for run.py

Needs pygal (`pip install 'nnlint[report]'`).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dynamic_vs_checklist import CASES, CHECKLIST_LR, train_step  # noqa: E402

BENCHMARK = "report_overhead"
TARGET = 1.2
HERE = Path(__file__).resolve().parent
SOURCE = HERE / "dynamic_vs_checklist.py"
# case -> (--model factory, --data batch function, --loss)
CLI = {
    "LeNet": ("LeNet", "image_batch", "cross_entropy"),
    "TinyGPT": ("TinyGPT", "token_batch", f"{SOURCE}:lm_loss"),
    "LeNet+sigmoid": ("SquashedLeNet", "image_batch", "cross_entropy"),
    "LeNet+detach": ("DetachedLeNet", "image_batch", "cross_entropy"),
}


def cli_run(case, folder: Path, report: bool) -> float:
    """CPU seconds of one `nnlint --model ...` run and its children, from an empty folder."""
    factory, batch, loss = CLI[case.name]
    command = [
        sys.executable, "-m", "nnlint", "--isolated", "--no-cache", "-q",
        "--model", f"{SOURCE}:{factory}", "--data", f"{SOURCE}:{batch}",
        "--loss", loss, "--optimizer", f"Adam:lr={CHECKLIST_LR}",
        *(["--report", str(folder.parent / "cli-report.html")] if report else []),
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0, 1):
        raise SystemExit(f"nnlint failed on {case.name}: {done.stderr.strip()[-500:]}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def one_run(case, report: str | None) -> float:
    import nnlint

    batch = case.batch()
    torch.manual_seed(0)
    model = case.factory()
    optimizer = torch.optim.Adam(model.parameters(), lr=CHECKLIST_LR)
    start = time.process_time()
    nnlint.check(model, batch=batch, loss_fn=case.loss_fn, optimizer=optimizer, report=report)
    return time.process_time() - start


def _row(case, mode: str, plain: list[float], reported: list[float]) -> dict:
    without, with_ = statistics.median(plain), statistics.median(reported)
    what = "nnlint --model ... CLI run" if mode == "cli" else "nnlint.check(...)"
    return {
        "benchmark": BENCHMARK,
        "case": f"{case.name} {mode}",
        "nnlint": round(with_, 4),
        "alternative": f"{what} without the report",
        "alt": round(without, 4),
        "ratio": round(without / with_, 3),
        "unit": "s",
        "target": f">= {1 / TARGET:.2f}x (adds <= 20%)" if mode == "cli" else "information",
        "note": f"CPU time, median of {len(plain)}; with/without = {with_ / without:.3f}",
    }


def measure(repeat: int, threads: int, modes: list[str]) -> list[dict]:
    import nnlint.htmlreport  # noqa: F401 - imported before timing, as the CLI does at startup

    torch.set_num_threads(threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        page = str(Path(tmp) / "report.html")
        empty = Path(tmp) / "empty"
        empty.mkdir()
        for case in CASES:
            if "cli" in modes:
                plain, reported = [], []
                for _ in range(repeat):
                    plain.append(cli_run(case, empty, report=False))
                    reported.append(cli_run(case, empty, report=True))
                rows.append(_row(case, "cli", plain, reported))
            if "check" in modes:
                torch.manual_seed(0)
                train_step(case.factory(), case.batch(), case.loss_fn)  # warm torch up
                one_run(case, page)  # and pygal, and nnlint's rule modules
                plain, reported = [], []
                for _ in range(repeat):
                    plain.append(one_run(case, None))
                    reported.append(one_run(case, page))
                rows.append(_row(case, "check", plain, reported))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per side and model")
    parser.add_argument(
        "--mode", action="append", choices=["cli", "check"], help="only these (default: both)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--json", action="store_true", help="print the rows as one JSON line")
    args = parser.parse_args(argv)
    try:
        import pygal  # noqa: F401
    except ImportError:
        print("report_overhead needs pygal: pip install 'nnlint[report]'", file=sys.stderr)
        return 2
    rows = measure(args.repeat, args.threads, args.mode or ["cli", "check"])
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{'model':21s} {'without':>9s} {'with':>9s} {'with/without':>13s}  (CPU s, median)")
    for row in rows:
        ratio = row["nnlint"] / row["alt"]
        cli = row["case"].endswith(" cli")
        flag = "  over the 1.2 target" if cli and ratio > TARGET else ""
        print(f"{row['case']:21s} {row['alt']:9.3f} {row['nnlint']:9.3f} {ratio:13.3f}{flag}")
    full = [row["nnlint"] / row["alt"] for row in rows if row["case"].endswith(" cli")]
    if full:
        print(f"worst full run: {max(full):.3f} (target <= {TARGET})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

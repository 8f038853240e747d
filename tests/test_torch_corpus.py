"""No script rule crashes on real code: lint a spread-out sample of torch's own sources.

The files of the installed torch package are PyTorch code written by many hands, in
every style the rules have to survive. The sample is fixed (sorted paths, every k-th
file of moderate size) so a failure reproduces; `benchmarks/static_throughput.py`
sweeps every file outside the test run.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLE_SIZE = 300
# Files in this byte range keep the run near half a minute on two cores; the
# benchmark covers the large ones.
MIN_BYTES, MAX_BYTES = 500, 4_000


def torch_sources() -> list[Path]:
    """Every .py file of the installed torch package, sorted; found without importing it."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("torch is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    return sorted(root.rglob("*.py"))


def sample(files: list[Path], size: int) -> list[Path]:
    sized = [f for f in files if MIN_BYTES <= f.stat().st_size <= MAX_BYTES]
    step = max(1, len(sized) // size)
    return sized[::step][:size]


def test_no_rule_crashes_on_torch_sources(tmp_path):
    files = sample(torch_sources(), SAMPLE_SIZE)
    assert len(files) >= SAMPLE_SIZE // 2, f"only {len(files)} torch files in the size range"
    command = [sys.executable, "-m", "nnlint", "--static-only", "--isolated", "--format", "json"]
    command += ["--select", "ALL", "-j", "2", *map(str, files)]
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)

    assert proc.stdout, proc.stderr
    report = json.loads(proc.stdout)
    crashes = [f for f in report["findings"] if f["code"] == "NN001"]
    shown = "\n".join(json.dumps(f) for f in crashes[:20])
    assert not crashes, f"{len(crashes)} rule crashes on torch sources (first 20):\n{shown}"
    assert proc.returncode in (0, 1), proc.stderr
    assert report["summary"]["files"] == len(files)

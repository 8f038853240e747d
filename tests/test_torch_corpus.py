"""No script rule crashes on real code: spread-out samples of torch's, transformers' and timm's sources.

The files of the installed torch, transformers and timm packages are PyTorch code
written by many hands, in every style the rules have to survive (transformers
adds training loops, Trainer callbacks and model zoos; timm hundreds of model
families and its own training utilities). CI installs timm without its
dependencies: only its files are linted, it is never imported. Each sample is fixed
(sorted paths, every k-th file of moderate size) so a failure reproduces;
`benchmarks/static_throughput.py` sweeps every file outside the test run.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

# package: (files, smallest and largest size in bytes). The ranges keep each run
# near half a minute on two cores; the benchmark covers the large files.
SAMPLES = {
    "torch": (300, 500, 4_000),
    "transformers": (120, 2_000, 16_000),
    "timm": (100, 2_000, 16_000),
}


def sources(package: str) -> list[Path]:
    """Every .py file of an installed package, sorted; found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{package} is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    return sorted(root.rglob("*.py"))


def sample(files: list[Path], size: int, smallest: int, largest: int) -> list[Path]:
    sized = [f for f in files if smallest <= f.stat().st_size <= largest]
    step = max(1, len(sized) // size)
    return sized[::step][:size]


@pytest.mark.parametrize("package", sorted(SAMPLES))
def test_no_rule_crashes_on_real_sources(tmp_path, package):
    size, smallest, largest = SAMPLES[package]
    files = sample(sources(package), size, smallest, largest)
    assert len(files) >= size // 2, f"only {len(files)} {package} files in the size range"
    command = [sys.executable, "-m", "nnlint", "--static-only", "--isolated", "--format", "json"]
    command += ["--select", "ALL", "--no-cache", "-j", "2", *map(str, files)]
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)

    assert proc.stdout, proc.stderr
    report = json.loads(proc.stdout)
    crashes = [f for f in report["findings"] if f["code"] == "NN001"]
    shown = "\n".join(json.dumps(f) for f in crashes[:20])
    assert not crashes, f"{len(crashes)} rule crashes on {package} sources (first 20):\n{shown}"
    assert proc.returncode in (0, 1), proc.stderr
    assert report["summary"]["files"] == len(files)

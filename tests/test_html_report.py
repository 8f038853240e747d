"""The HTML report: self-contained, every chart drawn in a real headless Chromium, no console error."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("matplotlib")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import nnlint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("NNLINT_TEST_ARTIFACTS", ROOT / "test-artifacts"))
CHARTS = {
    "images",
    "labels",
    "update-ratio",
    "gradient-flow",
    "activations",
    "overfit",
    "init-loss",
    "timings",
}


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(F.relu(self.conv(x)).flatten(1))


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("report") / "nnlint-report.html"
    g = torch.Generator().manual_seed(0)
    batch = (torch.randn(32, 1, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g))
    torch.manual_seed(0)
    nnlint.check(SmallCNN(), batch=batch, loss_fn=F.cross_entropy, report=str(path))
    return path


def test_report_is_one_self_contained_page_with_every_chart(report: Path):
    page = report.read_text(encoding="utf-8")
    assert set(re.findall(r'data-chart="([^"]+)"', page)) == CHARTS
    # nothing fetched: no scripts, stylesheets or images from elsewhere
    assert not re.search(r"<(script|link)\b", page)
    assert not re.search(r'\b(src|xlink:href)="(https?:)?//', page)
    assert "32×1×8×8" in page  # the input statistics table
    assert "conv" in page and "update_ratio" not in page  # per-layer rows, rendered


def test_report_renders_in_headless_chromium_without_console_errors(report: Path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    problems: list[str] = []
    with sync_api.sync_playwright() as play:
        browser = play.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(report.as_uri(), wait_until="load")
            drawn = page.evaluate(
                """() => [...document.querySelectorAll('figure[data-chart]')].map(f => {
                    const svg = f.querySelector('svg');
                    const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
                    const marks = svg ? svg.querySelectorAll('path, image, use, rect').length : 0;
                    return [f.dataset.chart, box.width, box.height, marks];
                })"""
            )
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "nnlint-report.png"), full_page=True)
        finally:
            browser.close()
    assert {name for name, *_ in drawn} == CHARTS
    for name, width, height, marks in drawn:
        assert width > 100 and height > 50 and marks > 5, (name, width, height, marks)
    assert problems == []
    assert (ARTIFACTS / "nnlint-report.png").stat().st_size > 10_000


def _nnlint(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nnlint", "--isolated", *args],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_cli_report_and_stats_for_a_model(tmp_path: Path):
    (tmp_path / "net.py").write_text(
        "from torch import nn\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.body = nn.Linear(8, 16)\n"
        "        self.head = nn.Linear(16, 3)\n\n"
        "    def forward(self, x):\n"
        "        return self.head(self.body(x).relu())\n"
    )
    run = _nnlint(
        tmp_path,
        "--model",
        "net.py:Net",
        "--input-shape",
        "8",
        "--task",
        "classification",
        "--stats",
        "--report",
        "out.html",
        "--format",
        "json",
    )
    assert run.returncode in (0, 1), run.stderr
    import json

    json.loads(run.stdout)  # stdout stays one document: the table went to stderr
    assert "Layers after one optimizer step" in run.stderr and "body" in run.stderr
    page = (tmp_path / "out.html").read_text(encoding="utf-8")
    assert 'data-chart="update-ratio"' in page and 'data-chart="overfit"' in page


def test_cli_report_without_a_model_and_into_a_missing_folder(tmp_path: Path):
    (tmp_path / "train.py").write_text(
        "import torch\n\n"
        "model = torch.nn.Linear(4, 2)\n"
        "optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "for x, y in loader:\n"
        "    loss = torch.nn.functional.cross_entropy(model(x), y)\n"
        "    loss.backward()\n"
        "    optimizer.step()\n"
    )
    run = _nnlint(tmp_path, "train.py", "--static-only", "--report", "r.html")
    assert run.returncode == 1, run.stderr
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "NN201" in page and "No model was checked" in page
    missing = _nnlint(tmp_path, "train.py", "--static-only", "--report", "nope/r.html")
    assert missing.returncode == 2 and "no such folder" in missing.stderr

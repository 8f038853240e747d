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
pytest.importorskip("pygal")

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
    assert '<table class="timings">' in page and "cannot-overfit" in page  # each check's time


def _chromium() -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium)")
    return chromium


@pytest.fixture(scope="module")
def browser():
    chromium = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as play:
        # Playwright's 30 s defaults are too short for a busy CI machine.
        launched = play.chromium.launch(
            executable_path=chromium, args=["--no-sandbox"], timeout=600_000
        )
        try:
            yield launched
        finally:
            launched.close()


def _render(browser, page_file: Path, screenshot: Path) -> tuple[list, list[str]]:
    """Open the page in Chromium: each chart's (name, width, height, marks), the console errors."""
    problems: list[str] = []
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.set_default_timeout(600_000)
    try:
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(page_file.as_uri(), wait_until="load")
        drawn = page.evaluate(
            """() => [...document.querySelectorAll('figure[data-chart]')].map(f => {
                const svg = f.querySelector('svg');
                const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
                const marks = svg ? svg.querySelectorAll('path, image, use, rect').length : 0;
                const broken = [...f.querySelectorAll('image')].filter(i => {
                    const b = i.getBBox(); return !(b.width > 0 && b.height > 0);
                }).length;
                return [f.dataset.chart, box.width, box.height, marks, broken];
            })"""
        )
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
    finally:
        page.close()
    return drawn, problems


def _assert_drawn(drawn: list, problems: list[str], screenshot: Path) -> None:
    for name, width, height, marks, broken in drawn:
        assert width > 100 and height > 50 and marks > 5 and not broken, (name, width, height)
    assert problems == []
    assert screenshot.stat().st_size > 10_000


def test_report_renders_in_headless_chromium_without_console_errors(browser, report: Path):
    screenshot = ARTIFACTS / "nnlint-report.png"
    drawn, problems = _render(browser, report, screenshot)
    assert {name for name, *_ in drawn} == CHARTS
    _assert_drawn(drawn, problems, screenshot)


# Every example project, as its README lints it, with the script rules and one
# dynamic check (the report measures the same whatever checks run): the real
# batch, loss and optimizer its training script builds.
PROJECTS = sorted(p.parent.parent.name for p in (ROOT / "examples").glob("*/fixed/train.py"))
LAYER_CHARTS = {"update-ratio", "gradient-flow", "activations", "overfit"}


@pytest.fixture(scope="module")
def project_reports(tmp_path_factory) -> dict[str, Path]:
    from concurrent.futures import ThreadPoolExecutor

    out = tmp_path_factory.mktemp("projects")

    def one(name: str) -> tuple[str, Path]:
        rel = f"examples/{name}/fixed"
        page = out / f"{name}.html"
        run = subprocess.run(
            [sys.executable, "-m", "nnlint", "--isolated", "--format", "concise",
             f"{rel}/train.py", "--model", f"{rel}/model.py:Net",
             "--select", "NN2,NN308", "--report", str(page)],
            cwd=ROOT, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr
        return name, page

    with ThreadPoolExecutor(2) as pool:
        return dict(pool.map(one, PROJECTS))


@pytest.mark.parametrize("project", PROJECTS)
def test_every_example_project_report_draws_every_chart(browser, project_reports, project):
    page_file = project_reports[project]
    text = page_file.read_text(encoding="utf-8")
    assert 'class="missing"' not in text, re.findall(r'class="missing">([^<]*)', text)
    screenshot = ARTIFACTS / f"nnlint-report-{project}.png"
    drawn, problems = _render(browser, page_file, screenshot)
    charts = {name for name, *_ in drawn}
    assert charts >= LAYER_CHARTS, charts
    if "×3×32×32" in text or "×1×28×28" in text:  # image inputs: the grid and the labels
        assert {"images", "labels", "init-loss"} <= charts
    _assert_drawn(drawn, problems, screenshot)


def test_a_non_finite_model_says_what_it_could_not_draw(tmp_path: Path):
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(x) * float("nan")

    path = tmp_path / "r.html"
    batch = (torch.randn(8, 4), torch.randint(0, 3, (8,)))
    nnlint.check(Broken(), batch=batch, loss_fn=F.cross_entropy, report=str(path))
    page = path.read_text(encoding="utf-8")
    assert "The update/weight ratio is not drawn" in page
    assert "The gradient flow is not drawn" in page


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


def test_embedded_images_are_valid_pngs_of_the_pixels():
    import struct
    import zlib

    from nnlint.htmlreport import _png

    grey = [[0.0, 0.5, 1.0], [1.0, 0.25, 0.0]]
    data = _png(grey)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = {}, 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length : at + 12 + length])
        assert crc == zlib.crc32(kind + body)
        chunks[kind] = body
        at += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (width, height, depth, colour) == (3, 2, 8, 0)
    rows = zlib.decompress(chunks[b"IDAT"])
    assert rows == bytes([0, 0, 128, 255, 0, 255, 64, 0])
    rgb = _png([[[1.0, 0.0, 0.0]]])
    assert struct.unpack(">IIBB", rgb[16:26]) == (1, 1, 8, 2)

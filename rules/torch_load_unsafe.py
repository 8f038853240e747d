from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import libcst as cst

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import ScriptRule
from nnlint.script.values import values

# torch 2.6 made `weights_only=True` the default of `torch.load`.
_SAFE_DEFAULT = (2, 6)
_TORCH_SPEC = re.compile(r"^\s*torch\s*(?:\[[^\]]*\])?\s*(?P<spec>[^;#]*)", re.IGNORECASE)
_LOWER = re.compile(r"(>=|==|~=|>)\s*(\d+)\.(\d+)")


class TorchLoadUnsafe(ScriptRule):
    """`torch.load` may unpickle arbitrary objects, which can run arbitrary code.

    ## What it does
    Flags `torch.load(..., weights_only=False)` always, and a `torch.load`
    without `weights_only` when the project may run on torch older than 2.6
    (whose default was `weights_only=False`): no torch floor of 2.6 or more
    is declared in the `pyproject.toml` or `requirements*.txt` next to the
    project root.

    ## Why is this bad?
    A checkpoint is a pickle. Loading one with `weights_only=False` runs any
    code its author put in it, so a downloaded or shared checkpoint can take
    over the machine.

    ## Example
    ```python
    state = torch.load("checkpoint.pt", weights_only=False)
    ```

    ## Use instead
    ```python
    state = torch.load("checkpoint.pt", weights_only=True)
    ```

    ## Known problems
    Checkpoints holding custom classes need them allow-listed with
    `torch.serialization.add_safe_globals`; keep `weights_only=False` only
    for files you created yourself, and suppress the finding there.
    """

    needs = ("load(",)
    needs_all = ("torch",)
    code = "NN209"
    name = "torch-load-unsafe"
    message = "`torch.load` {why}; pass `weights_only=True` unless the file is fully trusted"
    severity = Severity.WARNING

    invalid = (
        """
import torch
state = torch.load("ckpt.pt", map_location="cpu", weights_only=False)
""",
        """
from torch import load
state = load("ckpt.pt")
""",
    )
    valid = (
        """
import torch
state = torch.load("ckpt.pt", map_location="cpu", weights_only=True)
model.load_state_dict(state)
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        tracker = values(ctx)
        for call in tracker.calls:
            names = tracker.torch_names(call.func)
            if not names & {"torch.load", "torch.serialization.load"}:
                continue
            flag = next(
                (a.value for a in call.args if a.keyword and a.keyword.value == "weights_only"),
                None,
            )
            if isinstance(flag, cst.Name) and flag.value == "False":
                yield ctx.report(
                    self, call, why="with `weights_only=False` unpickles arbitrary code"
                )
            elif flag is None and not any(a.star for a in call.args):
                floor = torch_floor(ctx.project_root)
                if floor is None or floor < _SAFE_DEFAULT:
                    declared = (
                        "no torch floor is declared"
                        if floor is None
                        else f"the declared torch floor is {floor[0]}.{floor[1]}"
                    )
                    why = f"defaults to `weights_only=False` before torch 2.6 ({declared})"
                    yield ctx.report(self, call, why=why)


@cache
def torch_floor(root: Path) -> tuple[int, int] | None:
    """The lowest torch version the project at `root` declares, as (major, minor)."""
    specs: list[str] = []
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        try:
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            data = {}
        project = data.get("project", {})
        specs.extend(project.get("dependencies", []))
        for group in project.get("optional-dependencies", {}).values():
            specs.extend(group)
    for req in sorted(root.glob("requirements*.txt")):
        try:
            specs.extend(req.read_text(encoding="utf-8").splitlines())
        except (OSError, UnicodeDecodeError):
            continue
    floors = []
    for spec in specs:
        match = _TORCH_SPEC.match(spec) if isinstance(spec, str) else None
        if match is None:
            continue
        versions = [(int(a), int(b)) for _, a, b in _LOWER.findall(match["spec"])]
        if versions:
            floors.append(max(versions))
    return min(floors) if floors else None

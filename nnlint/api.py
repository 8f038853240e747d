"""Lint a model from Python: `nnlint.api.check(model, batch, loss_fn=...)`.

`check` runs the same model phases as `nnlint train.py --model mod:Net`
(`nnlint.pipeline.run_model_phases`) on objects you already have, in a notebook
or a test, and applies `# noqa` comments like the command line does.
The findings come back as `Findings`, a list that a notebook shows as a table.
`check_example` runs a graph or dynamic rule's example: source that defines
`model` and may define `batch`, `loss_fn` and `optimizer`.
"""

from __future__ import annotations

import dataclasses
import html
import sys
import tempfile
import textwrap
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nnlint.core.config import Settings
from nnlint.core.finding import Finding, Phase
from nnlint.core.registry import load_registry
from nnlint.core.suppress import Suppressor


class Findings(list):
    """The findings of `check`: a list of `Finding`, shown as a table in a notebook."""

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython's terminal: one line per finding, as `--output-format concise`."""
        lines = [f"{f.location()}: {f.code} {f.message}" for f in self]
        printer.text("\n".join(lines) if lines else "All checks passed!")

    def _repr_html_(self) -> str:
        if not self:
            return "<p><b>nnlint</b>: all checks passed</p>"
        head = "".join(f"<th>{h}</th>" for h in ("Location", "Code", "Severity", "Message"))
        rows = []
        for f in self:
            message = html.escape(f.message)
            if f.note:
                message += f"<br><small>note: {html.escape(f.note)}</small>"
            cells = (
                f"<code>{html.escape(f.location())}</code>",
                f"<b>{html.escape(f.code)}</b> <small>{html.escape(f.name)}</small>",
                html.escape(str(f.severity)),
                message,
            )
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        count = f"{len(self)} finding{'s' if len(self) != 1 else ''}"
        return (
            f"<table><caption><b>nnlint</b>: {count}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
        )


def _settings(options: dict[str, Any]) -> Settings:
    known = {f.name for f in dataclasses.fields(Settings)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"check() got unknown settings: {', '.join(unknown)}")
    settings = Settings(**options)
    settings.root = Path(settings.root)
    return settings


def check(
    model_or_factory: Any,
    batch: Any = None,
    loss_fn: Any = None,
    optimizer: Any = None,
    select: Sequence[str] | None = None,
    ignore: Sequence[str] = (),
    **settings: Any,
) -> Findings:
    """Graph and dynamic findings for a model, or for a factory that builds one.

    `batch` is what your DataLoader yields (`(x, y)`, a dict or a tensor); without
    it nnlint finds or synthesizes one. `settings` are `nnlint.config.Settings`
    fields, e.g. `input_shape=[3, 32, 32]`, `dynamic=False`, or
    `report="nnlint-report.html"` for the HTML report.
    """
    import torch

    from nnlint.engine import instantiate
    from nnlint.pipeline import CallerObjects, run_model_phases
    from nnlint.setup.sites import calling_site, recording

    config = _settings(settings)
    if config.report:
        from nnlint.htmlreport import require_chart_library

        require_chart_library()
    registry = load_registry()
    chosen = registry.select(select, ignore)
    rules = [
        r
        for r in instantiate(chosen, config.rule_options)
        if r.kind in (Phase.ENGINE, Phase.GRAPH) or (r.kind is Phase.DYNAMIC and config.dynamic)
    ]
    model = model_or_factory
    if not isinstance(model, torch.nn.Module):
        # Seeded, as for --model: the same weights each call, the caller's RNG untouched.
        with recording(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = model_or_factory()
    site = calling_site(sys._getframe(1))
    caller = CallerObjects(model, batch, loss_fn, optimizer, site)
    timings: dict[str, float] = {}
    about: dict[str, Any] = {}
    findings = run_model_phases(config, rules, timings, caller, about)
    enabled = {r.code for r in chosen}
    found = [f for f in Suppressor(config.root).apply(findings) if f.code in enabled]
    found = sorted(
        set(found), key=lambda f: (f.path, f.cell or 0, f.line, f.column, f.code, f.message)
    )
    if config.report:
        _write_report(found, [r.code for r in chosen], timings, config, about.get("stats"))
    return Findings(found)


def _write_report(
    found: list[Finding],
    codes: list[str],
    timings: dict[str, float],
    config: Settings,
    stats: dict[str, Any] | None,
) -> None:
    from nnlint.engine import Result
    from nnlint.htmlreport import render_report

    result = Result(found, [], codes, timings, config.root, stats=stats)
    Path(config.report).write_text(render_report(result, load_registry(), stats), encoding="utf-8")


def check_example(source: str, select: Sequence[str] | None = None) -> list[Finding]:
    """Findings for a rule example: the source is written to a file and imported, so
    construction sites point into it, then `check` runs on its `model`."""
    from nnlint.setup.load import module_from_file
    from nnlint.setup.sites import recording

    with tempfile.TemporaryDirectory() as tmp:
        name = f"nnlint_example_{uuid.uuid4().hex}"
        path = Path(tmp) / f"{name}.py"
        path.write_text(textwrap.dedent(source), encoding="utf-8")
        module = module_from_file(path, name)
        try:
            with recording():
                module.__spec__.loader.exec_module(module)
            namespace = vars(module)
            return check(
                namespace["model"],
                batch=namespace.get("batch"),
                loss_fn=namespace.get("loss_fn"),
                optimizer=namespace.get("optimizer"),
                select=select,
                root=Path(tmp),
            )
        finally:
            sys.modules.pop(name, None)

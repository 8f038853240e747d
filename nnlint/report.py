"""Turn a `Result` into text, full, concise, JSON, SARIF or GitHub annotations.

The CI services' own formats (GitLab, JUnit, JSON lines) are in `nnlint.ci_formats`.

Every formatter returns one string, so the CLI writes a whole document or nothing.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Sequence

from nnlint import __version__
from nnlint.ci_formats import (
    finding_record,
    format_gitlab,
    format_json_lines,
    format_junit,
    repository_path,
    repository_root,
)
from nnlint.core.finding import Finding, Severity
from nnlint.core.fingerprint import fingerprints
from nnlint.core.nbpositions import FilePositions
from nnlint.core.notebook import source_lines
from nnlint.core.registry import Registry
from nnlint.engine import Result

FORMATS = ("text", "full", "concise", "json", "json-lines", "sarif", "github", "gitlab", "junit")
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_SARIF_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}
_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}


def setup_line(setup: dict) -> str:
    """The task and loss the dynamic checks used, and what chose each, in one line."""
    task = setup.get("task") or "unclear"
    loss = setup.get("loss") or "none"
    origin = setup.get("loss_from")
    chosen = "a guess" if origin == "guessed" else f"from {origin or 'nothing'}"
    return f"task {task} (from {setup.get('task_from') or 'nothing'}); loss {loss} ({chosen})"


def _mark(f: Finding, unsafe: bool) -> str:
    """ruff's `[*]` before the message of a finding `--fix` would resolve."""
    return "[*] " if f.fix is not None and f.fix.applicable(unsafe) else ""


def concise_line(f: Finding, unsafe: bool = False) -> str:
    return f"{f.location()}: {f.code} {_mark(f, unsafe)}{f.message}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def summary_line(findings: Sequence[Finding], fixed: int = 0) -> str:
    if not findings:
        return (
            f"Found {_plural(fixed, 'finding')} ({fixed} fixed, 0 remaining)."
            if fixed
            else ("All checks passed!")
        )
    counts = Counter(f.severity for f in findings)
    parts = [_plural(counts[s], str(s)) for s in reversed(Severity) if counts[s]]
    total = len(findings)
    if fixed:
        parts.insert(0, f"{fixed} fixed, {total} remaining")
        total += fixed
    return f"Found {_plural(total, 'finding')} ({', '.join(parts)})."


def fixable_line(findings: Sequence[Finding], unsafe: bool = False) -> str | None:
    """'[*] 2 fixable with `--fix` (1 more with `--fix --unsafe-fixes`).', or None."""
    safe = sum(1 for f in findings if f.fix is not None and f.fix.safe)
    risky = sum(1 for f in findings if f.fix is not None and not f.fix.safe)
    if unsafe:
        return f"[*] {safe + risky} fixable with `--fix --unsafe-fixes`." if safe + risky else None
    if not safe and not risky:
        return None
    if not safe:
        return f"No safe fixes ({risky} fixable with `--fix --unsafe-fixes`)."
    more = f" ({risky} more with `--fix --unsafe-fixes`)" if risky else ""
    return f"[*] {safe} fixable with `--fix`{more}."


def _summary(result: Result, unsafe: bool, fixed: int) -> list[str]:
    hint = fixable_line(result.findings, unsafe)
    return [summary_line(result.findings, fixed), *([hint] if hint else [])]


def format_concise(
    result: Result, quiet: bool = False, unsafe: bool = False, fixed: int = 0
) -> str:
    lines = [concise_line(f, unsafe) for f in result.findings]
    if not quiet:
        lines += _summary(result, unsafe, fixed)
    return "\n".join(lines) + "\n" if lines else ""


def _source_line(result: Result, f: Finding, cache: dict) -> str | None:
    if f.path not in cache:
        text = result.sources.get(f.path)
        cache[f.path] = source_lines(result.root / f.path) if text is None else text.splitlines()
    lines = cache[f.path]
    if isinstance(lines, dict):
        lines = lines.get(f.cell, [])
    return lines[f.line - 1] if 0 < f.line <= len(lines) else None


def format_text(
    result: Result,
    quiet: bool = False,
    color: bool = True,
    width: int = 100,
    unsafe: bool = False,
    fixed: int = 0,
) -> str:
    """Rich output: location, code, message, the source line with a caret, and the note."""
    from rich.console import Console
    from rich.text import Text

    buffer = io.StringIO()
    console = Console(
        file=buffer,
        force_terminal=color,
        no_color=not color,
        width=width,
        highlight=False,
        soft_wrap=True,
    )
    cache: dict = {}
    for f in result.findings:
        head = Text()
        head.append(f.location(), style="bold")
        head.append(": ")
        head.append(f.code, style=_STYLE[f.severity])
        head.append(f" {_mark(f, unsafe)}{f.message}")
        head.append(f" [{f.name}]", style="dim")
        console.print(head)
        source = _source_line(result, f, cache)
        if source is not None:
            gutter = f"{f.line:>5} | "
            console.print(Text.assemble((gutter, "blue"), source.expandtabs(4)))
            width_span = 1
            if f.end_line == f.line and f.end_column and f.end_column > f.column:
                width_span = f.end_column - f.column
            marker = " " * (f.column - 1) + "^" * width_span
            console.print(
                Text.assemble(
                    (" " * (len(gutter) - 2) + "| ", "blue"), (marker, _STYLE[f.severity])
                )
            )
        if f.note:
            console.print(Text.assemble(("      = note: ", "blue"), f.note))
        console.print()
    if not quiet:
        for line in _summary(result, unsafe, fixed):
            console.print(Text(line, style="bold"))
    return buffer.getvalue()


def format_json(result: Result, registry: Registry) -> str:
    counts = Counter(f.severity for f in result.findings)
    document = {
        "version": __version__,
        "findings": [finding_record(f, registry) for f in result.findings],
        "summary": {
            "total": len(result.findings),
            "by_severity": {str(s): counts[s] for s in Severity},
            "by_code": dict(sorted(Counter(f.code for f in result.findings).items())),
            "files": len(result.files),
            "rules": len(result.rules),
            "timings": {k: round(v, 4) for k, v in result.timings.items()},
            "protection": result.protection,
            "setup": result.setup,
        },
    }
    return json.dumps(document, indent=2) + "\n"


def _sarif_rule(rule: type) -> dict:
    return {
        "id": rule.code,
        "name": rule.name,
        "shortDescription": {"text": rule.summary()},
        "helpUri": rule.url(),
        "fullDescription": {"text": rule.docs() or rule.summary()},
        "help": {
            "text": rule.docs() or rule.summary(),
            "markdown": rule.docs() or rule.summary(),
        },
        "defaultConfiguration": {
            "level": _SARIF_LEVEL[rule.severity],
            "enabled": bool(rule.default_enabled),
        },
        "properties": {"phase": str(rule.kind)},
    }


def _in_cell(f: Finding) -> str:
    """The cell coordinates that open a notebook finding's message in SARIF and GitHub
    output, whose location is the line of the notebook's JSON that holds the code."""
    return f"cell {f.cell}:{f.line}:{f.column}: " if f.cell is not None else ""


def format_sarif(result: Result, registry: Registry) -> str:
    used = sorted({f.code for f in result.findings} | set(result.rules))
    index = {code: i for i, code in enumerate(used)}
    descriptors = [_sarif_rule(registry.by_code[code]) for code in used]
    repository = repository_root(result.root)
    results = []
    positions = FilePositions(result.root)
    prints = fingerprints(result.findings, result.root)
    for f, print_ in zip(result.findings, prints, strict=True):
        line, column, end_line, end_column = positions.region(f)
        region = {"startLine": line, "startColumn": column}
        if end_line:
            region["endLine"] = end_line
        if end_column:
            region["endColumn"] = end_column
        item = {
            "ruleId": f.code,
            "ruleIndex": index[f.code],
            "level": _SARIF_LEVEL[f.severity],
            "message": {"text": _in_cell(f) + f.message + (f" ({f.note})" if f.note else "")},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {
                            "uri": repository_path(f.path, result.root, repository),
                            "uriBaseId": "%SRCROOT%",
                        },
                        "region": region,
                    }
                }
            ],
            "partialFingerprints": {"nnlint/v1": print_},
        }
        if f.cell is not None:
            item["properties"] = {"cell": f.cell, "cellLine": f.line, "cellColumn": f.column}
        results.append(item)
    document = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "nnlint",
                        "version": __version__,
                        "informationUri": "https://github.com/nnlint/nnlint",
                        "rules": descriptors,
                    }
                },
                "originalUriBaseIds": {"%SRCROOT%": {"uri": repository.as_uri() + "/"}},
                "results": results,
            }
        ],
    }
    return json.dumps(document, indent=2) + "\n"


def _gh_escape(text: str, prop: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if prop:
        text = text.replace(":", "%3A").replace(",", "%2C")
    return text


def format_github(result: Result) -> str:
    """Workflow commands; GitHub places them by the path from the repository root."""
    level = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}
    repository = repository_root(result.root)
    lines = []
    positions = FilePositions(result.root)
    for f in result.findings:
        line, column, end_line, end_column = positions.region(f)
        path = repository_path(f.path, result.root, repository)
        props = [f"file={_gh_escape(path, True)}", f"line={line}", f"col={column}"]
        if end_line:
            props.append(f"endLine={end_line}")
        if end_column and end_line == line:
            props.append(f"endColumn={end_column}")
        props.append(f"title={_gh_escape(f'{f.code} ({f.name})', True)}")
        message = _in_cell(f) + f.message + (f"\n{f.note}" if f.note else "")
        lines.append(f"::{level[f.severity]} {','.join(props)}::{_gh_escape(message)}")
    return "\n".join(lines) + "\n" if lines else ""


def format_statistics(result: Result, registry: Registry) -> str:
    counts = Counter(f.code for f in result.findings)
    lines = [f"{n:>5}\t{code}\t{registry.by_code[code].name}" for code, n in counts.most_common()]
    return "\n".join(lines) + "\n" if lines else ""


def render(
    result: Result,
    registry: Registry,
    output_format: str,
    *,
    quiet: bool = False,
    color: bool = False,
    full: bool | None = None,
    statistics: bool = False,
    unsafe_fixes: bool = False,
    fixed: int = 0,
) -> str:
    """The report. `full` text shows source lines (by default when `color`);
    `unsafe_fixes` marks unsafe fixes `[*]` too; `fixed` counts what `--fix` did."""
    if statistics and output_format in ("text", "full", "concise"):
        return format_statistics(result, registry)
    if output_format == "full" or (output_format == "text" and (color if full is None else full)):
        return format_text(result, quiet, color, unsafe=unsafe_fixes, fixed=fixed)
    if output_format in ("text", "concise"):
        return format_concise(result, quiet, unsafe_fixes, fixed)
    if output_format == "json":
        return format_json(result, registry)
    if output_format == "sarif":
        return format_sarif(result, registry)
    if output_format == "github":
        return format_github(result)
    writers = {"json-lines": format_json_lines, "gitlab": format_gitlab, "junit": format_junit}
    return writers[output_format](result, registry)


def format_stats(stats: dict | None, color: bool = False, width: int = 120) -> str:
    """`--stats`: per layer after one real optimizer step, as a table."""
    if not stats or not stats.get("layers"):
        why = (stats or {}).get("missing", {}).get("layers") or "no model was checked"
        return f"no per-layer statistics: {why}\n"
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Layers after one optimizer step", title_justify="left")
    heads = ("layer", "type", "act mean", "act std", "dead", "|W|", "|grad|", "upd/W")
    keys = ("act_mean", "act_std", "dead", "weight_norm", "grad_norm", "update_ratio")
    for i, head in enumerate(heads):
        table.add_column(head, justify="left" if i < 2 else "right")
    for row in stats["layers"]:
        cells = [f"{row[k]:.3g}" if row.get(k) is not None else "-" for k in keys]
        ratio = row.get("update_ratio")
        if ratio is not None and color and not 1e-4 <= ratio <= 1e-2:
            cells[-1] = f"[yellow]{cells[-1]}[/yellow]"
        table.add_row(row["name"] or "(model)", row["type"], *cells)
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=color, no_color=not color, width=width)
    console.print(table)
    console.print("upd/W: |update| / |weight| of the step; about 1e-3 is healthy.")
    return buffer.getvalue()


def format_timings(timings: dict[str, float], most: int = 20) -> str:
    """`--timings`: the slowest phases and checks, as pytest's `--durations`."""
    if not timings:
        return "no timings recorded\n"
    ranked = sorted(timings.items(), key=lambda kv: -kv[1])
    lines = [f"slowest {min(most, len(ranked))} of {len(ranked)} timings:"]
    lines += [f"{seconds:8.2f}s  {name}" for name, seconds in ranked[:most]]
    return "\n".join(lines) + "\n"

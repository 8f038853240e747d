"""Output for CI services: GitLab code quality, JUnit XML, JSON lines.

CI services show a finding beside the file in the repository, so paths here
are relative to the repository root (the folder holding `.git`), not to the
directory nnlint ran in; `repository_path` is shared with SARIF and GitHub
annotations in `nnlint.report`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path, PurePath

from nnlint.core.finding import Finding, Severity
from nnlint.core.fingerprint import fingerprints
from nnlint.core.nbpositions import FilePositions
from nnlint.core.registry import Registry
from nnlint.engine import Result

_GITLAB_SEVERITY = {Severity.ERROR: "major", Severity.WARNING: "minor", Severity.INFO: "info"}


def repository_root(start: Path) -> Path:
    """The nearest folder at or above `start` holding `.git`; `start` itself outside a repository."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / ".git").exists():
            return folder
    return start


def repository_path(path: str, root: Path, repository: Path) -> str:
    """`path` (as findings show it, relative to `root`) relative to the repository, in `/` form."""
    full = (root / path).resolve()
    try:
        return full.relative_to(repository).as_posix()
    except ValueError:
        return PurePath(path).as_posix()


def finding_record(f: Finding, registry: Registry) -> dict:
    """The JSON fields of one finding, the rule's documentation URL included."""
    data = f.to_dict()
    rule = registry.by_code.get(f.code)
    keys = ("code", "name", "severity", "message", "path", "cell", "line", "column")
    record = {key: data[key] for key in (*keys, "end_line", "end_column", "phase", "note", "fix")}
    record["url"] = rule.url() if rule is not None else None
    return record


def format_json_lines(result: Result, registry: Registry) -> str:
    """One JSON object a line, one line a finding: easy to stream and to grep."""
    return "".join(json.dumps(finding_record(f, registry)) + "\n" for f in result.findings)


def format_gitlab(result: Result, registry: Registry) -> str:
    """GitLab's code-quality report (a JSON list, CodeClimate's issue format)."""
    repository = repository_root(result.root)
    issues = []
    positions = FilePositions(result.root)
    for f, print_ in zip(result.findings, fingerprints(result.findings, result.root), strict=True):
        line, _, end_line, _ = positions.region(f)  # a notebook's JSON line, as for SARIF
        issues.append(
            {
                "description": f"{f.code} {f.message}"
                + (f" (cell {f.cell}:{f.line}:{f.column})" if f.cell is not None else ""),
                "check_name": f.code,
                "fingerprint": print_,
                "severity": _GITLAB_SEVERITY[f.severity],
                "location": {
                    "path": repository_path(f.path, result.root, repository),
                    "lines": {"begin": line, "end": end_line or line},
                },
            }
        )
    return json.dumps(issues, indent=2) + "\n"


def format_junit(result: Result, registry: Registry) -> str:
    """JUnit XML: one test suite a file, one failed test case a finding, a passing case if clean."""
    from xml.etree import ElementTree  # only this format needs it

    by_file: dict[str, list[Finding]] = defaultdict(list)
    for f in result.findings:
        by_file[f.path].append(f)
    suites = ElementTree.Element("testsuites", name="nnlint", tests="0", failures="0")
    if not by_file:
        suite = ElementTree.SubElement(suites, "testsuite", name="nnlint", tests="1", failures="0")
        ElementTree.SubElement(suite, "testcase", name="nnlint", classname="nnlint")
    for path, found in by_file.items():
        count = str(len(found))
        suite = ElementTree.SubElement(
            suites, "testsuite", name=path, tests=count, failures=count, errors="0"
        )
        for f in found:
            case = ElementTree.SubElement(
                suite, "testcase", name=f"{f.code} {f.name}", classname=path, line=str(f.line)
            )
            failure = ElementTree.SubElement(
                case, "failure", message=f.message, type=str(f.severity)
            )
            failure.text = f"{f.location()}: {f.code} {f.message}" + (
                f"\nnote: {f.note}" if f.note else ""
            )
    suites.set("tests", str(len(result.findings) or 1))
    suites.set("failures", str(len(result.findings)))
    ElementTree.indent(suites)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        + ElementTree.tostring(suites, encoding="unicode")
        + "\n"
    )

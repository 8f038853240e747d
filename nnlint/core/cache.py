"""A cache of script-phase results, so that re-linting unchanged files costs little.

As in ruff, results are kept under `.nnlint_cache/` in the project root (with a
`.gitignore` inside). An entry holds the findings of each file with the hash of
its content. The key of the whole cache covers what else a finding may depend
on: nnlint's and libcst's versions, the script rules selected and their
options, and a fingerprint of the project's sources and config files (their
content hashes), since rules read a training script's local
imports and the project's declared torch version. Change anything there and
every file is linted afresh. That includes a change to one linted file: another
file's findings may depend on what it defines.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

from nnlint.core import installed
from nnlint.core.config import DEFAULT_EXCLUDE
from nnlint.core.files import is_venv
from nnlint.core.finding import Finding, Phase, Severity
from nnlint.core.fix import Fix

FOLDER = ".nnlint_cache"
KEEP = 8  # cache files kept; the oldest beyond this are removed
_PROJECT_FILES = (".py", ".pyi", "pyproject.toml", "nnlint.toml", "setup.cfg")


def project_fingerprint(root: Path) -> list[tuple[str, str]]:
    """(path, content hash) of every source and config file under `root`: contents,
    not times, so that a touched or checked-out-again file changes nothing."""
    found = []
    for folder, dirnames, filenames in os.walk(root):
        dirnames[:] = [
            d
            for d in dirnames
            if d not in DEFAULT_EXCLUDE and d != FOLDER and not is_venv(Path(folder, d))
        ]
        for name in filenames:
            if name.endswith(_PROJECT_FILES):
                path = Path(folder, name)
                digest = content_hash(path)
                if digest is not None:
                    found.append((os.path.relpath(path, root), digest))
    return sorted(found)


def run_key(root: Path, rules: Sequence[tuple[str, tuple]], debug: bool) -> str:
    import hashlib  # here, as in content_hash: a --no-cache run never needs it

    from nnlint import __version__

    parts = {
        "nnlint": __version__,
        "libcst": installed.version("libcst"),
        "nbformat": installed.version(
            "nbformat"
        ),  # it reads notebooks; a new one may read them anew
        "rules": [[code, repr(options)] for code, options in rules],
        "debug": debug,
        "root": str(root.resolve()),
        "project": project_fingerprint(root),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def content_hash(path: Path) -> str | None:
    """The file's sha256; None for what is not a regular file (a FIFO would block)."""
    import hashlib

    try:
        if not stat.S_ISREG(path.stat().st_mode):
            return None
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _to_finding(data: dict) -> Finding:
    fix = Fix.from_dict(data["fix"]) if data.get("fix") else None
    severity, phase = Severity.parse(data["severity"]), Phase(data["phase"])
    return Finding(**{**data, "severity": severity, "phase": phase, "fix": fix})


class ScriptCache:
    """The cached findings of one run key; `save()` writes what this run linted."""

    def __init__(self, root: Path, key: str) -> None:
        self.folder = root / FOLDER
        self.file = self.folder / f"script-{key}.json"
        self.entries: dict[str, dict] = {}
        self.fresh: dict[str, dict] = {}
        try:
            self.entries = json.loads(self.file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.entries = {}

    def get(self, display: str, digest: str | None) -> list[Finding] | None:
        entry = self.entries.get(display)
        if digest is None or entry is None or entry.get("sha256") != digest:
            return None
        try:
            findings = [_to_finding(d) for d in entry["findings"]]
        except (KeyError, TypeError, ValueError):
            return None
        self.fresh[display] = entry
        return findings

    def put(self, display: str, digest: str | None, findings: Iterable[Finding]) -> None:
        if digest is not None:
            self.fresh[display] = {"sha256": digest, "findings": [f.to_dict() for f in findings]}

    def save(self) -> None:
        """Write the entries of this run; a cache that cannot be written is no error."""
        try:
            self.folder.mkdir(exist_ok=True)
            ignore = self.folder / ".gitignore"
            if not ignore.exists():
                ignore.write_text("# Created by nnlint; safe to delete.\n*\n", encoding="utf-8")
            temporary = self.file.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(json.dumps(self.fresh), encoding="utf-8")
            os.replace(temporary, self.file)
            old = sorted(self.folder.glob("script-*.json"), key=lambda p: p.stat().st_mtime)
            for stale in old[:-KEEP]:
                stale.unlink()
        except OSError:
            pass

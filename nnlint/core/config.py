"""`[tool.nnlint]` in pyproject.toml (or nnlint.toml), merged under the command line."""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnlint.core.errors import UsageError
from nnlint.core.finding import Severity

DEFAULT_EXCLUDE = (
    ".git",
    ".hg",
    ".svn",
    ".venv",
    "venv",
    ".tox",
    ".nox",
    ".eggs",
    "__pycache__",
    "build",
    "dist",
    "site-packages",
    "node_modules",
    ".ipynb_checkpoints",  # Jupyter's autosaved copies of the notebooks beside them
)


@dataclass
class Settings:
    """Everything a run needs, after config and flags are merged."""

    paths: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    extend_exclude: list[str] = field(default_factory=list)
    extend_include: list[str] = field(default_factory=list)  # more files for walks to lint
    respect_gitignore: bool = True
    force_exclude: bool = False  # exclusions apply to paths named explicitly too
    select: list[str] | None = None
    ignore: list[str] = field(default_factory=list)
    extend_select: list[str] = field(default_factory=list)
    per_file_ignores: dict[str, list[str]] = field(default_factory=dict)
    fail_level: Severity = Severity.WARNING
    rule_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    model: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    script: str | None = None
    script_args: list[str] = field(default_factory=list)
    data: str | None = None
    task: str | None = None
    loss: str | None = None
    optimizer: str | None = None
    input_shape: list[int] | None = None
    input_dtype: str | None = None
    device: str = "cpu"
    capture_timeout: float = 60.0
    memory_limit: int | None = None  # bytes of address space for the model child; 0 for none
    capture: bool = True
    static_only: bool = False
    dynamic: bool = True
    jobs: int | None = None
    verbose: bool = False
    debug: bool = False
    quiet: bool = False  # no progress bars
    cache: bool = True
    report: str | None = None  # --report: the HTML page to write
    stats: bool = False  # --stats: the per-layer table in the terminal
    root: Path = field(default_factory=Path.cwd)
    config_path: Path | None = None
    # Text to lint in place of a file's content (stdin, or a fix not yet written),
    # keyed by the resolved path; such a path need not exist.
    sources: dict[Path, str] = field(default_factory=dict)
    baseline: Path | None = None  # findings recorded there are not reported


def _strings(key: str, value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise UsageError(f"config key {key!r} must be a string or a list of strings")


def _argv(key: str, value: Any) -> list[str]:
    if isinstance(value, str):
        return split_args(value, f"config key {key!r}")
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise UsageError(f"config key {key!r} must be a string or a list of strings")


def split_args(text: str, where: str) -> list[str]:
    """`text` split as a POSIX shell would, for the training script's `sys.argv[1:]`."""
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"{where}: cannot split {text!r}: {exc}") from None


def _string(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise UsageError(f"config key {key!r} must be a string")
    if not value.strip():
        raise UsageError(f"config key {key!r} is empty: give a value or leave the key out")
    return value


def _selection(key: str, value: Any) -> list[str]:
    codes = [c for c in _strings(key, value) if c.strip()]
    if not codes:
        raise UsageError(f'config key {key!r} names no rule (use "ALL" for every rule)')
    return codes


def _boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise UsageError(f"config key {key!r} must be true or false")
    return value


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"config key {key!r} must be a number")
    return float(value)


def _table(key: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise UsageError(f"config key {key!r} must be a table")
    return value


def _ints(key: str, value: Any) -> list[int]:
    if isinstance(value, str):
        return parse_shape(value)
    if isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return check_shape(list(value), f"config key {key!r}")
    raise UsageError(f"config key {key!r} must be a list of integers or '1,28,28'")


# The most values one synthesized sample may hold (1 GiB of float32); a batch holds four.
MAX_SAMPLE_VALUES = 2**28


def check_shape(dims: list[int], where: str) -> list[int]:
    """`dims` as the shape of one sample, or a UsageError that says what is wrong with it."""
    if not dims or any(d <= 0 for d in dims):
        raise UsageError(f"{where}: expected positive integers such as 3,32,32")
    values = math.prod(dims)
    if values > MAX_SAMPLE_VALUES:
        raise UsageError(
            f"{where}: {values:,} values a sample is more than nnlint synthesizes "
            f"(at most {MAX_SAMPLE_VALUES:,})"
        )
    return dims


def parse_shape(text: str) -> list[int]:
    try:
        dims = [int(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"bad shape {text!r}: expected integers such as 3,32,32") from None
    return check_shape(dims, f"bad shape {text!r}")


_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
# Below this, torch itself (already mapped in the child) leaves the model no room.
MIN_MEMORY_LIMIT = 1 << 30


def parse_size(text: str, where: str = "--memory-limit") -> int:
    """`8G`, `512MiB`, `2.5GB` or a number of bytes; `none` (0) for no limit."""
    cleaned = str(text).strip().lower()
    if cleaned in ("none", "off", "0"):
        return 0
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", cleaned)
    if match is None:
        raise UsageError(f"{where} {text!r}: expected a size such as 8G or 512M, or none")
    size = int(float(match[1]) * _UNITS[match[2]])
    if size < MIN_MEMORY_LIMIT:
        raise UsageError(f"{where} {text!r}: at least 1G (torch alone takes most of that)")
    return size


def _size(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise UsageError(f"config key {key!r} must be a size such as '8G', or 'none'")
    return parse_size(str(value), f"config key {key!r}:")


# Time budgets (a check's, the capture's) are CPU seconds of the work they bound,
# so a busy machine gets the same verdicts, only later. Wall-clock limits, which
# stop what does no work (a script that sleeps or waits on a lock), allow this
# many times the budget.
WALL_FACTOR = 4.0


# config key -> (Settings attribute, validator)
_KEYS = {
    "paths": ("paths", _strings),
    "exclude": ("exclude", _strings),
    "extend-exclude": ("extend_exclude", _strings),
    "extend-include": ("extend_include", _strings),
    "respect-gitignore": ("respect_gitignore", _boolean),
    "force-exclude": ("force_exclude", _boolean),
    "select": ("select", _selection),
    "ignore": ("ignore", _strings),
    "extend-select": ("extend_select", _strings),
    "per-file-ignores": ("per_file_ignores", _table),
    "fail-level": ("fail_level", _string),
    "rules": ("rule_options", _table),
    "model": ("model", _string),
    "model-kwargs": ("model_kwargs", _table),
    "script": ("script", _string),
    "script-args": ("script_args", _argv),
    "data": ("data", _string),
    "task": ("task", _string),
    "loss": ("loss", _string),
    "optimizer": ("optimizer", _string),
    "input-shape": ("input_shape", _ints),
    "input-dtype": ("input_dtype", _string),
    "device": ("device", _string),
    "capture-timeout": ("capture_timeout", _number),
    "memory-limit": ("memory_limit", _size),
    "cache": ("cache", _boolean),
    "baseline": ("baseline", _string),
}


def find_config(start: Path) -> Path | None:
    """The nearest nnlint.toml, or pyproject.toml with a [tool.nnlint] table."""
    for folder in (start, *start.parents):
        candidate = folder / "nnlint.toml"
        if candidate.is_file():
            return candidate
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            tool = _read_toml(candidate).get("tool")
            if isinstance(tool, dict) and "nnlint" in tool:
                return candidate
    return None


def _read_toml(path: Path) -> dict:
    import tomllib  # only a project with a config file pays for the parser

    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: malformed TOML: {exc}") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None


def load_config(path: Path) -> dict[str, Any]:
    """The validated nnlint table of a config file, keyed by Settings attribute."""
    data = _read_toml(path)
    tool = data.get("tool", {})
    if not isinstance(tool, dict):
        raise UsageError(f"{path}: `tool` must be a table ([tool.nnlint])")
    table = tool.get("nnlint", {} if path.name == "pyproject.toml" else data)
    if not isinstance(table, dict):
        raise UsageError(f"{path}: [tool.nnlint] must be a table")
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in _KEYS:
            known = ", ".join(sorted(_KEYS))
            raise UsageError(f"{path}: unknown config key {key!r} (known keys: {known})")
        attr, validate = _KEYS[key]
        values[attr] = validate(key, value)
    base = path.parent
    if "baseline" in values:
        values["baseline"] = base / values["baseline"]
    for attr in ("paths", "script"):
        if attr in values:
            rel = values[attr]
            values[attr] = (
                [str(base / p) for p in rel] if isinstance(rel, list) else str(base / rel)
            )
    if "per_file_ignores" in values:
        values["per_file_ignores"] = {
            pattern: _strings(f"per-file-ignores.{pattern}", codes)
            for pattern, codes in values["per_file_ignores"].items()
        }
    if "fail_level" in values:
        try:
            values["fail_level"] = Severity.parse(values["fail_level"])
        except ValueError as exc:
            raise UsageError(f"{path}: fail-level: {exc}") from None
    for name, options in values.get("rule_options", {}).items():
        _table(f"rules.{name}", options)
    return values


def validate_rule_options(settings: Settings, registry: Any) -> dict[str, dict[str, Any]]:
    """Per-rule options keyed by rule code, checked against each rule's `options`."""
    resolved: dict[str, dict[str, Any]] = {}
    for key, options in settings.rule_options.items():
        rule = registry.lookup(key)
        if rule is None:
            raise UsageError(f"unknown rule {key!r} in [tool.nnlint.rules]")
        checked = {}
        for opt_name, value in options.items():
            spec = rule.options.get(opt_name)
            if spec is None:
                known = ", ".join(sorted(rule.options)) or "none"
                raise UsageError(
                    f"rule {rule.name} has no option {opt_name!r} (its options: {known})"
                )
            try:
                checked[opt_name] = spec.coerce(value)
            except ValueError as exc:
                raise UsageError(f"rules.{rule.name}.{opt_name}: {exc}") from None
        resolved[rule.code] = checked
    return resolved

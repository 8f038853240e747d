"""The run: select rules, collect files, run the phases, suppress, filter.

Data flows one way: settings in, a `Result` out. Nothing here prints or exits.
"""

from __future__ import annotations

import fnmatch
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from nnlint.core.config import Settings, validate_rule_options
from nnlint.core.files import collect_files, display_path
from nnlint.core.finding import Finding, Phase
from nnlint.core.registry import Registry, load_registry
from nnlint.core.rule import Rule
from nnlint.core.suppress import Suppressor
from nnlint.script.phase import lint_file

# Below this many files a process pool costs more than it saves.
_MIN_FILES_PER_WORKER = 4


@dataclass
class Result:
    """What a run found, and what it looked at."""

    findings: list[Finding]
    files: list[str]
    rules: list[str]
    timings: dict[str, float] = field(default_factory=dict)
    root: Path = field(default_factory=Path.cwd)


def instantiate(rules: Sequence[type[Rule]], options: dict[str, dict]) -> list[Rule]:
    return [rule(options.get(rule.code)) for rule in rules]


def _lint_files(
    files: Sequence[Path], settings: Settings, rules: Sequence[Rule], codes_options: tuple
) -> list[Finding]:
    script_rules = [r for r in rules if r.kind is Phase.SCRIPT]
    jobs = settings.jobs or os.cpu_count() or 1
    jobs = min(jobs, len(files) // _MIN_FILES_PER_WORKER)
    tasks = [(f, display_path(f, settings.root)) for f in files]
    if jobs <= 1:
        out: list[Finding] = []
        for path, display in tasks:
            out.extend(lint_file(path, display, script_rules, settings.root, settings.debug))
        return out
    with ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=get_context("fork"),
        initializer=_init_worker,
        initargs=(codes_options, settings.root, settings.debug),
    ) as pool:
        chunks = pool.map(_lint_in_worker, tasks, chunksize=max(1, len(tasks) // (jobs * 8)))
        return [f for chunk in chunks for f in chunk]


_WORKER: dict = {}


def _init_worker(codes_options: tuple, root: Path, debug: bool) -> None:
    registry = load_registry()
    _WORKER["rules"] = [registry.by_code[code](dict(options)) for code, options in codes_options]
    _WORKER["root"] = root
    _WORKER["debug"] = debug


def _lint_in_worker(task: tuple[Path, str]) -> list[Finding]:
    path, display = task
    return lint_file(path, display, _WORKER["rules"], _WORKER["root"], _WORKER["debug"])


def _per_file_ignored(finding: Finding, settings: Settings, registry: Registry) -> bool:
    for pattern, selectors in settings.per_file_ignores.items():
        if fnmatch.fnmatch(finding.path, pattern) or fnmatch.fnmatch(
            Path(finding.path).name, pattern
        ):
            for sel in selectors:
                if any(r.code == finding.code for r in registry.matching(sel)):
                    return True
    return False


def run(settings: Settings, registry: Registry | None = None) -> Result:
    """Lint what `settings` names. Raises UsageError when nnlint cannot start."""
    registry = registry or load_registry()
    selected = registry.select(settings.select, settings.ignore, settings.extend_select)
    for selectors in settings.per_file_ignores.values():
        for sel in selectors:
            registry.matching(sel)
    options = validate_rule_options(settings, registry)
    rules = instantiate(selected, options)
    codes_options = tuple(
        (r.code, tuple(r.settings.items())) for r in rules if r.kind is Phase.SCRIPT
    )
    timings: dict[str, float] = {}

    start = time.perf_counter()
    files = collect_files(settings.paths, settings.exclude, settings.root)
    findings = _lint_files(files, settings, rules, codes_options)
    timings["script"] = time.perf_counter() - start

    if settings.model and not settings.static_only:
        from nnlint.pipeline import run_model_phases, user_output

        with user_output(settings.verbose):
            findings.extend(run_model_phases(settings, rules, timings))

    suppressor = Suppressor(settings.root)
    findings = suppressor.apply(findings)
    enabled = {r.code for r in selected}
    checked = [display_path(f, settings.root) for f in files]
    if "NN008" in enabled:
        findings.extend(suppressor.invalid(checked, registry.is_known_token))
    findings = [
        f for f in findings if f.code in enabled and not _per_file_ignored(f, settings, registry)
    ]
    findings = sorted(set(findings), key=lambda f: (f.path, f.line, f.column, f.code, f.message))
    return Result(findings, checked, [r.code for r in selected], timings, settings.root)

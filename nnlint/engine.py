"""The run: select rules, collect files, run the phases, suppress, filter.

Data flows one way: settings in, a `Result` out. Nothing here prints or exits.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnlint.core import baseline
from nnlint.core.cache import ScriptCache, content_hash, run_key
from nnlint.core.config import Settings, validate_rule_options
from nnlint.core.diagnostics import UnreadableFile
from nnlint.core.files import collect_files, display_path
from nnlint.core.finding import Finding, Phase
from nnlint.core.gitignore import GitIgnore
from nnlint.core.registry import Registry, load_registry
from nnlint.core.rule import Rule
from nnlint.core.suppress import Suppressor
from nnlint.script.notebook import model_findings_to_cells
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
    protection: str | None = None  # what contained the training script ("overlay + landlock")
    protection_detail: str | None = None  # the same, with what the kernel did not offer
    sources: dict[str, str] = field(default_factory=dict)  # display path -> text not on disk
    setup: dict | None = None  # the task and loss the dynamic checks used, and what chose them
    stats: dict[str, Any] | None = None  # inputs, layers, training curve for --report/--stats


def instantiate(rules: Sequence[type[Rule]], options: dict[str, dict]) -> list[Rule]:
    return [rule(options.get(rule.code)) for rule in rules]


def _cores() -> int:
    """The CPUs this process may run on (its affinity), not all the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _lint_files(
    tasks: Sequence[tuple[Path, str, str | None]],
    settings: Settings,
    rules: Sequence[Rule],
    codes_options: tuple,
) -> list[list[Finding]]:
    """The script findings of each (path, display path, text or None to read it), in order."""
    script_rules = [r for r in rules if r.kind is Phase.SCRIPT]
    jobs = min(settings.jobs or _cores(), len(tasks) // _MIN_FILES_PER_WORKER)
    if jobs <= 1:
        root, debug = settings.root, settings.debug
        return [
            lint_file(p, display, script_rules, root, debug, text) for p, display, text in tasks
        ]
    # Imported here: a pre-commit run on a few files never needs a pool.
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    # Largest files first, in small chunks, so that no worker is left with a big file
    # while the others idle at the end; the results go back to the files' order.
    order = sorted(range(len(tasks)), key=lambda i: -_size(tasks[i]))
    with ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=get_context("fork"),
        initializer=_init_worker,
        initargs=(codes_options, settings.root, settings.debug),
    ) as pool:
        chunk = max(1, len(tasks) // (jobs * 32))
        done = pool.map(_lint_in_worker, [tasks[i] for i in order], chunksize=chunk)
        results: list[list[Finding]] = [[] for _ in tasks]
        for index, found in zip(order, done, strict=True):
            results[index] = found
        return results


def _size(task: tuple[Path, str, str | None]) -> int:
    path, _, text = task
    if text is not None:
        return len(text)
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _script_phase(
    files: Sequence[Path], settings: Settings, rules: Sequence[Rule], codes_options: tuple
) -> list[Finding]:
    """Script findings of every file: from the cache where the file is unchanged."""
    tasks = [(f, display_path(f, settings.root), settings.sources.get(f.resolve())) for f in files]
    if not settings.cache or settings.sources:
        return [f for found in _lint_files(tasks, settings, rules, codes_options) for f in found]
    cache = ScriptCache(settings.root, run_key(settings.root, codes_options, settings.debug))
    findings: list[Finding] = []
    misses: list[tuple[Path, str, str | None]] = []
    for path, display, _ in tasks:
        digest = content_hash(path)
        hit = cache.get(display, digest)
        if hit is None:
            misses.append((path, display, digest))
        else:
            findings.extend(hit)
    linted = _lint_files([(p, d, None) for p, d, _ in misses], settings, rules, codes_options)
    for (_, display, digest), found in zip(misses, linted, strict=True):
        findings.extend(found)
        cache.put(display, digest, found)
    cache.save()
    return findings


_WORKER: dict = {}


def _init_worker(codes_options: tuple, root: Path, debug: bool) -> None:
    registry = load_registry()
    _WORKER["rules"] = [registry.by_code[code](dict(options)) for code, options in codes_options]
    _WORKER["root"] = root
    _WORKER["debug"] = debug


def _lint_in_worker(task: tuple[Path, str, str | None]) -> list[Finding]:
    path, display, text = task
    return lint_file(path, display, _WORKER["rules"], _WORKER["root"], _WORKER["debug"], text)


def _per_file_ignored(finding: Finding, settings: Settings, registry: Registry) -> bool:
    for pattern, selectors in settings.per_file_ignores.items():
        if fnmatch.fnmatch(finding.path, pattern) or fnmatch.fnmatch(
            Path(finding.path).name, pattern
        ):
            for sel in selectors:
                if any(r.code == finding.code for r in registry.matching(sel)):
                    return True
    return False


def _unreadable(path: Path, kind: str, reason: str, root: Path) -> Finding:
    """NN003 for a path the operating system would not let the walk into."""
    error = f"{reason}, so nothing in it was linted" if kind == "folder" else reason
    return UnreadableFile.make(display_path(path, root), 1, 1, kind=kind, error=error)


def select_files(
    settings: Settings, unsearchable: list[tuple[Path, str, str]] | None = None
) -> list[Path]:
    """The files a run lints (`--show-files` prints them); the folders the walk could
    not list go to `unsearchable`, with why."""
    return collect_files(
        settings.paths,
        [*settings.exclude, *settings.extend_exclude],
        settings.root,
        settings.sources,
        gitignore=GitIgnore(settings.root) if settings.respect_gitignore else None,
        force_exclude=settings.force_exclude,
        include=settings.extend_include,
        unsearchable=unsearchable,
    )


def run(
    settings: Settings,
    registry: Registry | None = None,
    progress: Callable[[str | None], None] | None = None,
) -> Result:
    """Lint what `settings` names. Raises UsageError when nnlint cannot start.

    `progress(text)` hears what the model phases wait on (importing torch, the
    model, the training script's run), `progress(None)` when nothing is to be shown.
    """
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
    about: dict[str, Any] = {}

    start = time.perf_counter()
    unsearchable: list[tuple[Path, str, str]] = []
    files = select_files(settings, unsearchable)
    findings = _script_phase(files, settings, rules, codes_options)
    findings += [_unreadable(*entry, settings.root) for entry in unsearchable]
    timings["script"] = time.perf_counter() - start

    if settings.model and not settings.static_only:
        if progress is not None:
            progress("importing torch")
        from nnlint.pipeline import run_model_phases, user_output

        try:
            with user_output(settings.verbose):
                found = run_model_phases(settings, rules, timings, about=about, progress=progress)
                findings.extend(model_findings_to_cells(found, settings.root))
        finally:
            if progress is not None:
                progress(None)

    texts = {display_path(p, settings.root): text for p, text in settings.sources.items()}
    suppressor = Suppressor(settings.root, texts)
    findings = suppressor.apply(findings)
    enabled = {r.code for r in selected}
    checked = [display_path(f, settings.root) for f in files]
    if "NN008" in enabled:
        findings.extend(suppressor.invalid(checked, registry.is_known_token))
    findings = [
        f for f in findings if f.code in enabled and not _per_file_ignored(f, settings, registry)
    ]
    if settings.baseline is not None:
        prints = baseline.Fingerprints(settings.root, settings.baseline.parent, texts)
        findings = baseline.without_recorded(findings, baseline.load(settings.baseline), prints)
    # A fix may only touch the files being linted (a graph finding's model source may
    # not be), and not a notebook, whose edits would be in its joined cells' lines.
    linted = set(checked)
    findings = [
        f if f.path in linted and f.cell is None else dataclasses.replace(f, fix=None)
        for f in findings
    ]
    findings = sorted(
        set(findings), key=lambda f: (f.path, f.cell or 0, f.line, f.column, f.code, f.message)
    )
    codes = [r.code for r in selected]
    protection, detail = about.get("protection"), about.get("protection_detail")
    return Result(
        findings,
        checked,
        codes,
        timings,
        settings.root,
        protection,
        detail,
        sources=texts,
        setup=about.get("setup"),
        stats=about.get("stats"),
    )

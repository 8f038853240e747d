"""The command line: parse flags, merge config, run the engine, print, exit.

Exit codes follow ruff: 0 nothing at or above `--fail-level`, 1 findings,
2 usage error or internal failure (including a crashed rule).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from nnlint import __version__
from nnlint.cli_modes import (
    EXIT_CLEAN,
    EXIT_ERROR,
    EXIT_FINDINGS,
    adopt,
    fix_only,
    lint,
    print_tracebacks,
    reads_stdin,
    show,
    styles,
    take_stdin,
    write_extras,
    write_output,
)
from nnlint.core.config import (
    Settings,
    find_config,
    load_config,
    parse_shape,
    parse_size,
    split_args,
)
from nnlint.core.errors import UsageError
from nnlint.core.files import is_file, not_a_file
from nnlint.core.finding import Severity
from nnlint.report import FORMATS, render, setup_line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage dump
        raise UsageError(message)


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


# The flags, as data: (group, names, argparse keywords). Types that need a
# function of this module are named by string and resolved in `build_parser`.
FLAGS: tuple[tuple[str, tuple[str, ...], dict], ...] = (
    (
        "model",
        ("--model",),
        {
            "metavar": "SPEC",
            "help": "module:Name or path/file.py:Name; enables graph and dynamic checks",
        },
    ),
    (
        "model",
        ("--model-kwargs",),
        {"metavar": "JSON", "help": "keyword arguments for the model, as a JSON object"},
    ),
    (
        "model",
        ("--script",),
        {"metavar": "PATH", "help": "the training script, when several paths are given"},
    ),
    (
        "model",
        ("--script-args",),
        {
            "metavar": "ARGS",
            "help": "arguments for the training script, split as a shell would: "
            "--script-args='--device cpu --epochs 1'",
        },
    ),
    (
        "model",
        ("--data",),
        {"metavar": "SPEC", "help": "module:fn giving a batch, DataLoader or Dataset"},
    ),
    ("model", ("--task",), {"choices": ("classification", "causal-lm", "regression")}),
    (
        "model",
        ("--loss",),
        {"metavar": "SPEC", "help": "module:fn loss to use without a training script"},
    ),
    (
        "model",
        ("--optimizer",),
        {"metavar": "NAME", "help": "torch.optim class for the overfit check (default Adam)"},
    ),
    ("model", ("--input-shape",), {"metavar": "DIMS", "help": "shape of one sample, e.g. 1,28,28"}),
    (
        "model",
        ("--input-dtype",),
        {"metavar": "DTYPE", "help": "dtype of synthesized inputs, e.g. float32 or long"},
    ),
    (
        "model",
        ("--device",),
        {"metavar": "DEVICE", "help": "device for graph and dynamic checks (default cpu)"},
    ),
    (
        "model",
        ("--capture-timeout",),
        {"type": float, "metavar": "SECONDS", "help": "time limit for running the training script"},
    ),
    (
        "model",
        ("--memory-limit",),
        {
            "metavar": "SIZE",
            "help": "address space for the model code, e.g. 8G, or none (default: half the memory)",
        },
    ),
    (
        "model",
        ("--no-capture",),
        {"action": "store_true", "help": "do not run the training script"},
    ),
    (
        "model",
        ("--static-only",),
        {"action": "store_true", "help": "script rules only: never import torch"},
    ),
    ("model", ("--no-dynamic",), {"action": "store_true", "help": "skip the dynamic checks"}),
    (
        "rule selection",
        ("--select",),
        {
            "type": "csv",
            "action": "append",
            "metavar": "CODES",
            "help": "codes, prefixes or names to enable (replaces the default set)",
        },
    ),
    (
        "rule selection",
        ("--extend-select",),
        {
            "type": "csv",
            "action": "append",
            "metavar": "CODES",
            "help": "codes, prefixes or names to add",
        },
    ),
    (
        "rule selection",
        ("--ignore",),
        {
            "type": "csv",
            "action": "append",
            "metavar": "CODES",
            "help": "codes, prefixes or names to disable",
        },
    ),
    (
        "rule selection",
        ("--per-file-ignores",),
        {"action": "append", "metavar": "GLOB:CODES", "help": "e.g. 'tests/*:NN2'"},
    ),
    (
        "rule selection",
        ("--exclude",),
        {
            "type": "csv",
            "action": "append",
            "metavar": "GLOBS",
            "help": "paths to skip when walking directories",
        },
    ),
    (
        "file selection",
        ("--extend-exclude",),
        {"type": "csv", "action": "append", "metavar": "GLOBS", "help": "more paths to skip"},
    ),
    (
        "file selection",
        ("--extend-include",),
        {"type": "csv", "action": "append", "metavar": "GLOBS", "help": "more files to lint"},
    ),
    (
        "file selection",
        ("--force-exclude",),
        {"action": "store_true", "help": "apply exclusions to paths given explicitly too"},
    ),
    (
        "file selection",
        ("--no-respect-gitignore",),
        {"action": "store_true", "help": "also lint what .gitignore files ignore"},
    ),
    (
        "file selection",
        ("--show-files",),
        {"action": "store_true", "help": "list the files that would be linted and exit"},
    ),
    (
        "file selection",
        ("--show-settings",),
        {"action": "store_true", "help": "print the settings in effect and exit"},
    ),
    (
        "rule selection",
        ("--fail-level",),
        {
            "choices": [str(s) for s in Severity],
            "help": "lowest severity that makes the exit code 1 (default warning)",
        },
    ),
    ("fixes", ("--fix",), {"action": "store_true", "help": "apply the safe fixes"}),
    (
        "fixes",
        ("--unsafe-fixes",),
        {"action": "store_true", "help": "also offer and apply the fixes marked unsafe"},
    ),
    (
        "fixes",
        ("--diff",),
        {"action": "store_true", "help": "print the fixes as a unified diff; change no file"},
    ),
    (
        "fixes",
        ("--fix-only",),
        {"action": "store_true", "help": "apply fixes and report nothing of what is left"},
    ),
    (
        "adoption",
        ("--add-noqa",),
        {"action": "store_true", "help": "write `# noqa: CODE` on the line of each finding"},
    ),
    (
        "adoption",
        ("--baseline",),
        {"metavar": "FILE", "help": "do not report the findings recorded in FILE"},
    ),
    (
        "adoption",
        ("--update-baseline",),
        {"action": "store_true", "help": "record the current findings in the --baseline FILE"},
    ),
    (
        "output",
        ("--format", "--output-format"),
        {"choices": FORMATS, "default": "text", "help": "output format (default text)"},
    ),
    (
        "other",
        ("--stdin-filename",),
        {"metavar": "PATH", "help": "lint stdin as this file (its config, its display name)"},
    ),
    ("output", ("-o", "--output-file"), {"metavar": "PATH", "help": "write the report to a file"}),
    ("output", ("--statistics",), {"action": "store_true", "help": "count findings per rule"}),
    (
        "output",
        ("--report",),
        {"metavar": "PATH", "help": "also write a self-contained HTML report with charts"},
    ),
    (
        "output",
        ("--stats",),
        {"action": "store_true", "help": "print per-layer statistics after one training step"},
    ),
    (
        "output",
        ("--timings",),
        {"action": "store_true", "help": "list each phase's and check's time, slowest first"},
    ),
    (
        "output",
        ("-q", "--quiet"),
        {"action": "store_true", "help": "print findings only: no summary, no progress"},
    ),
    (
        "output",
        ("-v", "--verbose"),
        {"action": "store_true", "help": "also report checks that did not apply"},
    ),
    (
        "output",
        ("--exit-zero",),
        {"action": "store_true", "help": "exit 0 even when there are findings"},
    ),
    ("output", ("--debug",), {"action": "store_true", "help": "show full tracebacks"}),
    (
        "other",
        ("--config",),
        {"metavar": "PATH", "help": "config file (default: nearest nnlint.toml or pyproject.toml)"},
    ),
    (
        "other",
        ("--no-cache",),
        {"action": "store_true", "help": "lint every file again, ignoring .nnlint_cache"},
    ),
    ("other", ("--isolated",), {"action": "store_true", "help": "ignore all configuration files"}),
    (
        "other",
        ("-j", "--jobs"),
        {"type": int, "metavar": "N", "help": "parallel workers for script rules (default: cores)"},
    ),
    ("other", ("--list-rules",), {"action": "store_true", "help": "list every rule and exit"}),
    ("other", ("--explain",), {"metavar": "CODE", "help": "show a rule's documentation and exit"}),
    ("other", ("--version",), {"action": "version", "version": f"nnlint {__version__}"}),
)
# Settings copied from a flag as given, when the flag is given.
_PLAIN = ("model", "script", "data", "task", "loss", "optimizer", "input_dtype", "device")
_PLAIN += ("capture_timeout", "jobs")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="nnlint",
        description="Lint PyTorch training scripts and models. `nnlint rule CODE` explains "
        "a rule; `nnlint server` is a language server for editors.",
    )
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="files or directories (default: config paths, else .)",
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    for group, names, options in FLAGS:
        if group not in groups:
            groups[group] = parser.add_argument_group(group)
        if options.get("type") == "csv":
            options = {**options, "type": _csv}
        groups[group].add_argument(*names, **options)
    return parser


def _flatten(groups: list[list[str]] | None) -> list[str] | None:
    return None if groups is None else [item for group in groups for item in group]


def _per_file(entries: list[str]) -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}
    for entry in entries:
        pattern, sep, codes = entry.rpartition(":")
        if not sep or not pattern or not codes:
            raise UsageError(f"--per-file-ignores {entry!r}: expected GLOB:CODES")
        table.setdefault(pattern, []).extend(_csv(codes))
    return table


def _config_file(args: argparse.Namespace) -> Path | None:
    if args.config:
        path = Path(args.config)
        if (why := not_a_file(path)) is not None:
            raise UsageError(f"--config {args.config}: {why}")
        return path
    start = Path(args.stdin_filename).resolve().parent if args.stdin_filename else Path.cwd()
    return None if args.isolated else find_config(start)


def _model_kwargs(text: str) -> dict:
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--model-kwargs is not valid JSON: {exc}") from None
    if not isinstance(kwargs, dict):
        raise UsageError("--model-kwargs must be a JSON object such as '{\"dim\": 64}'")
    return kwargs


def _apply_selection(settings: Settings, args: argparse.Namespace) -> None:
    if args.select is not None:
        settings.select = _flatten(args.select)
        if not settings.select:
            raise UsageError("--select '': names no rule (use --select ALL for every rule)")
    settings.extend_select += _flatten(args.extend_select) or []
    settings.ignore += _flatten(args.ignore) or []
    settings.exclude += _flatten(args.exclude) or []
    settings.extend_exclude += _flatten(args.extend_exclude) or []
    settings.extend_include += _flatten(args.extend_include) or []
    settings.force_exclude = settings.force_exclude or args.force_exclude
    settings.respect_gitignore = settings.respect_gitignore and not args.no_respect_gitignore
    for pattern, codes in _per_file(args.per_file_ignores or []).items():
        settings.per_file_ignores.setdefault(pattern, []).extend(codes)
    if args.fail_level:
        settings.fail_level = Severity.parse(args.fail_level)
    if args.baseline is not None:
        if not args.baseline.strip():
            raise UsageError("--baseline '': needs a path")
        settings.baseline = Path(args.baseline)


def _apply_model_flags(settings: Settings, args: argparse.Namespace) -> None:
    for flag in _PLAIN:
        value = getattr(args, flag)
        if isinstance(value, str) and not value.strip():
            raise UsageError(f"--{flag.replace('_', '-')} '': needs a value")
        if value is not None:
            setattr(settings, flag, value)
    if args.model_kwargs is not None:
        settings.model_kwargs = _model_kwargs(args.model_kwargs)
    if args.script_args is not None:
        settings.script_args = split_args(args.script_args, "--script-args")
    if args.input_shape is not None:
        settings.input_shape = parse_shape(args.input_shape)
    if args.memory_limit is not None:
        settings.memory_limit = parse_size(args.memory_limit)
    if args.jobs is not None and args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    settings.capture = settings.capture and not args.no_capture
    settings.static_only = args.static_only or bool(settings.sources)
    settings.dynamic = not args.no_dynamic
    settings.verbose = args.verbose
    settings.debug = args.debug
    settings.quiet = args.quiet
    settings.cache = settings.cache and not args.no_cache
    settings.report = args.report
    settings.stats = args.stats
    for flag, value in (("-o", args.output_file), ("--report", args.report)):
        if value is not None and not value.strip():
            raise UsageError(f"{flag} '': needs a path")
    if args.report is not None:
        from nnlint.htmlreport import require_chart_library

        if not Path(args.report).resolve().parent.is_dir():
            raise UsageError(f"--report {args.report}: no such folder")
        require_chart_library()


def settings_from(args: argparse.Namespace) -> Settings:
    """Defaults, then the config file, then flags."""
    settings = Settings(root=Path.cwd())
    config_path = _config_file(args)
    if config_path is not None:
        for key, value in load_config(config_path).items():
            setattr(settings, key, value)
        settings.config_path = config_path
    if reads_stdin(args):
        take_stdin(settings, args)
    elif args.paths:
        settings.paths = list(args.paths)
    elif not settings.paths:
        settings.paths = ["."]
    _apply_selection(settings, args)
    _apply_model_flags(settings, args)
    if settings.script is None:
        scripts = [p for p in settings.paths if p.endswith((".py", ".ipynb")) and is_file(p)]
        if len(scripts) == 1 and len(settings.paths) == 1:
            settings.script = scripts[0]
    elif (why := not_a_file(settings.script)) is not None:
        raise UsageError(f"--script {settings.script}: {why}")
    if args.script_args is not None and settings.script is None:
        raise UsageError("--script-args: no training script to pass them to (use --script PATH)")
    if settings.model and not settings.static_only:
        from nnlint.setup.overrides import check_overrides

        check_overrides(settings)
    return settings


def _explain(target: str) -> str:
    """`nnlint rule CODE|NAME|PREFIX|--all`: each rule's documentation and its URL."""
    from nnlint.core.registry import load_registry
    from nnlint.docs import explain

    registry = load_registry()
    rule = registry.lookup(target)
    if rule is not None:
        rules = [rule]
    elif target == "--all":
        rules = list(registry.rules)
    else:
        try:
            rules = registry.matching(target)
        except UsageError:
            raise UsageError(f"unknown rule {target!r} (see nnlint --list-rules)") from None
    return "\n".join(f"{explain(r)}\nDocumentation: {r.url()}\n" for r in rules)


def _run(argv: Sequence[str]) -> int:
    argv = list(argv)
    if argv[:1] == ["server"]:
        from nnlint.lsp import serve

        return serve(argv[1:])
    if len(argv) >= 1 and argv[0] == "rule":
        if len(argv) != 2:
            raise UsageError("usage: nnlint rule CODE|NAME|PREFIX|--all")
        write_output(_explain(argv[1]), None)
        return EXIT_CLEAN
    args = build_parser().parse_args(argv)
    if args.paths and args.paths[0] == "rule" and not Path("rule").exists():
        if len(args.paths) != 2:
            raise UsageError("usage: nnlint rule CODE|NAME|PREFIX|--all")
        write_output(_explain(args.paths[1]), None)
        return EXIT_CLEAN
    if args.explain:
        write_output(_explain(args.explain), None)
        return EXIT_CLEAN
    from nnlint.core.registry import load_registry

    registry = load_registry()
    if args.list_rules:
        from nnlint.docs import plain_list, rules_json

        write_output(rules_json(registry) if args.format == "json" else plain_list(registry), None)
        return EXIT_CLEAN
    settings = settings_from(args)
    if args.show_files or args.show_settings:
        return show(args, settings)
    if args.add_noqa or args.update_baseline:
        return adopt(args, settings, registry)
    if args.diff or args.fix_only:
        return fix_only(args, settings, registry)
    result, fixed = lint(args, settings, registry)
    if not result.files and not settings.model and not result.findings:
        print("nnlint: no Python files to lint", file=sys.stderr)
    if settings.verbose and result.protection is not None:
        who = "the training script" if settings.script and settings.capture else "the model code"
        print(f"nnlint: {who} ran with {result.protection_detail}", file=sys.stderr)
    if settings.verbose and result.setup is not None:
        print(f"nnlint: {setup_line(result.setup)}", file=sys.stderr)
    full, color = styles(args)
    text = render(
        result,
        registry,
        args.format,
        quiet=args.quiet,
        color=color,
        full=full,
        statistics=args.statistics,
        unsafe_fixes=args.unsafe_fixes,
        fixed=fixed,
    )
    if args.fix and settings.sources and not args.output_file:
        sys.stderr.write(text)  # stdout holds the fixed source
    else:
        write_output(text, args.output_file)
    if settings.debug and not full:
        print_tracebacks(result)
    write_extras(args, result, registry, color)
    if any(f.code == "NN001" for f in result.findings):
        return EXIT_ERROR
    if args.exit_zero:
        return EXIT_CLEAN
    failing = [f for f in result.findings if f.severity >= settings.fail_level]
    return EXIT_FINDINGS if failing else EXIT_CLEAN


class Terminated(BaseException):
    """SIGTERM arrived: unwind like Ctrl-C, so children are killed and scratch removed."""


def _terminate(_signum: int, _frame: Any) -> None:
    raise Terminated()


def _default_term_in_child() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a forked child dies as it would have


@contextlib.contextmanager
def _unwinding_on_sigterm() -> Iterator[None]:
    """SIGTERM (a CI job cancelled, `timeout`, `kill`) raises `Terminated` in this
    process while `main` runs, where nobody else has set a handler."""
    global _fork_hook
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return
    if not _fork_hook:
        os.register_at_fork(after_in_child=_default_term_in_child)
        _fork_hook = True
    signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


_fork_hook = False


def main(argv: Sequence[str] | None = None) -> int:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        with _unwinding_on_sigterm():
            return _run(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        print(f"nnlint: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("nnlint: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("nnlint: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except Exception as exc:
        if debug:
            traceback.print_exc()
        else:
            print(
                f"nnlint: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
                file=sys.stderr,
            )
        return EXIT_ERROR

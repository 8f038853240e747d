"""The command line's modes beside plain linting: fixing, adoption, stdin, file listing.

`nnlint.cli` parses the flags and hands over here; as there, only these
functions print. Exit codes follow ruff's (`--diff` exits 1 when it would
change something; `--fix-only` and the adoption modes exit 0).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from nnlint.core.config import Settings
from nnlint.core.errors import UsageError
from nnlint.core.finding import Severity

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2
Progress = Callable[[str | None], None]


def styles(args: argparse.Namespace) -> tuple[bool, bool]:
    """(full text with source lines, colour) for `--format text` and `full`.

    A terminal gets both; `FORCE_COLOR` gets both in a pipe too (CI logs), and
    `NO_COLOR` (no-color.org: any non-empty value) turns colour off, not the
    source lines. A report written to a file is plain (`full` keeps its lines).
    """
    if args.format not in ("text", "full"):
        return False, False
    terminal = not args.output_file and (sys.stdout.isatty() or bool(os.environ.get("FORCE_COLOR")))
    full = terminal or args.format == "full"
    return full, terminal and not os.environ.get("NO_COLOR")


def reads_stdin(args: argparse.Namespace) -> bool:
    return args.paths == ["-"] or (bool(args.stdin_filename) and not args.paths)


def take_stdin(settings: Settings, args: argparse.Namespace) -> None:
    """Source from stdin, linted by the script rules as if it were `--stdin-filename`."""
    from nnlint.core.files import decode_source

    try:
        text = decode_source(sys.stdin.buffer.read())
    except ValueError as exc:
        raise UsageError(f"stdin: {exc}") from None
    name = args.stdin_filename or "-"
    settings.paths = [name]
    settings.sources = {Path(name).resolve(): text}
    settings.model = None
    settings.static_only = True


def write_output(text: str, output_file: str | None) -> None:
    if output_file:
        try:
            Path(output_file).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--output-file {output_file}: {exc.strerror}") from None
    else:
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError:
            # The reader left (`nnlint ... | head`): end quietly, as Unix tools do,
            # and keep Python from failing again when it flushes stdout at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def show(args: argparse.Namespace, settings: Settings) -> int:
    """`--show-files`: one linted path a line; `--show-settings`: the merged settings."""
    from nnlint.core.files import display_path
    from nnlint.engine import select_files

    if args.show_files:
        unsearchable: list[tuple[Path, str, str]] = []
        files = [display_path(p, settings.root) for p in select_files(settings, unsearchable)]
        write_output("".join(f"{f}\n" for f in files), args.output_file)
        for path, kind, reason in unsearchable:
            shown = display_path(path, settings.root)
            print(f"nnlint: {shown}: cannot read {kind} ({reason}), not listed", file=sys.stderr)
        return EXIT_CLEAN
    shown = {
        key: (str(value) if isinstance(value, Path | Severity) else value)
        for key, value in vars(settings).items()
        if key != "sources"
    }
    write_output(json.dumps(shown, indent=2, default=str) + "\n", args.output_file)
    return EXIT_CLEAN


def adopt(args: argparse.Namespace, settings: Settings, registry) -> int:
    """`--add-noqa` and `--update-baseline`: record today's findings, exit 0."""
    if args.update_baseline:
        from nnlint.core import baseline
        from nnlint.engine import run

        target, settings.baseline = settings.baseline, None
        if target is None:
            raise UsageError(
                "--update-baseline needs --baseline FILE (or `baseline` in the config)"
            )
        result = run(settings, registry)
        prints = baseline.Fingerprints(settings.root, target.parent, result.sources)
        n = baseline.write(target, result.findings, prints)
        print(f"nnlint: recorded {n} finding{'s' if n != 1 else ''} in {target}", file=sys.stderr)
        return EXIT_CLEAN
    from nnlint import fixing

    outcome = fixing.with_noqa(settings, registry)
    deliver(outcome, settings)
    n = outcome.count
    print(f"Added {n} noqa directive{'s' if n != 1 else ''}.", file=sys.stderr)
    return EXIT_CLEAN


def deliver(outcome, settings: Settings) -> None:
    """Write the fixed files; for stdin, print the fixed source (as ruff, for editors)."""
    from nnlint import fixing

    if not settings.sources:
        fixing.write(outcome)
        return
    for path, original in settings.sources.items():
        write_output(outcome.texts.get(path, original), None)


def fix_only(args: argparse.Namespace, settings: Settings, registry) -> int:
    """`--diff` prints what `--fix` would change and exits 1 if anything; `--fix-only`
    applies the fixes and exits 0, reporting nothing of what is left (as ruff)."""
    from nnlint import fixing

    with status_line(args, settings) as progress:
        outcome = fixing.fix(settings, registry, args.unsafe_fixes, progress)
    if any(f.code == "NN001" for f in outcome.result.findings):
        return EXIT_ERROR
    n = outcome.count
    noun = f"{n} finding{'s' if n != 1 else ''}"
    if args.diff:
        write_output(fixing.unified_diff(outcome, settings.root), args.output_file)
        if not args.quiet:
            print(f"Would fix {noun}." if n else "No fixes available.", file=sys.stderr)
        return EXIT_FINDINGS if n else EXIT_CLEAN
    deliver(outcome, settings)
    if not args.quiet:
        print(f"Fixed {noun}." if n else "No fixes available.", file=sys.stderr)
    return EXIT_CLEAN


@contextlib.contextmanager
def status_line(args: argparse.Namespace, settings: Settings) -> Iterator[Progress | None]:
    """A spinner on stderr naming what the model phases wait on (importing torch and
    the model, running the training script), gone when the wait is over.

    Only on a terminal and for the text formats, never with `-q`, nor with
    `--verbose`, where the model's own output goes to stderr and would be torn
    by it. The dynamic checks show their own progress bar instead.
    """
    wanted = (
        settings.model
        and not settings.static_only
        and not args.quiet
        and not settings.verbose
        and args.format in ("text", "full", "concise")
        and sys.stderr.isatty()
    )
    if not wanted:
        yield None
        return
    from rich.console import Console
    from rich.live import Live
    from rich.spinner import Spinner

    spinner = Spinner("dots", style="cyan")
    live = Live(
        spinner,
        console=Console(stderr=True),
        transient=True,
        redirect_stdout=False,
        redirect_stderr=False,
        refresh_per_second=12.5,
    )

    def show(text: str | None) -> None:
        if text is None:
            live.stop()
            return
        spinner.update(text=f"nnlint: {text}…")
        if live.is_started:
            live.refresh()
        else:
            live.start(refresh=True)

    try:
        yield show
    finally:
        live.stop()


def lint(args: argparse.Namespace, settings: Settings, registry) -> tuple:
    """The result to report and how many findings `--fix` fixed (writing the files)."""
    if not args.fix:
        from nnlint.engine import run

        with status_line(args, settings) as progress:
            return run(settings, registry, progress), 0
    from nnlint import fixing

    with status_line(args, settings) as progress:
        outcome = fixing.fix(settings, registry, args.unsafe_fixes, progress)
    deliver(outcome, settings)
    return outcome.result, outcome.count


def print_tracebacks(result) -> None:
    """NN001's traceback (`--debug`) on stderr, for the formats that do not show notes."""
    for f in result.findings:
        if f.code == "NN001" and f.note:
            print(f"{f.location()}: {f.code} {f.message}\n{f.note}", file=sys.stderr)


def write_extras(args: argparse.Namespace, result: Any, registry: Any, color: bool) -> None:
    """`--stats`, `--timings` and `--report`, after the findings.

    stdout holds one whole document in the machine formats, so there the
    tables go to stderr.
    """
    from nnlint.report import format_stats, format_timings

    documents = args.format not in ("text", "full", "concise") and not args.output_file
    tables = []
    if args.stats:
        tables.append(format_stats(result.stats, color=color))
    if args.timings:
        tables.append(format_timings(result.timings))
    for table in tables:
        print(table, end="", file=sys.stderr) if documents else write_output(table, None)
    if args.report is not None:
        from nnlint.htmlreport import render_report

        try:
            page = render_report(result, registry, result.stats)
            Path(args.report).write_text(page, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--report {args.report}: {exc.strerror or exc}") from None

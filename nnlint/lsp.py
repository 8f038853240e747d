"""`nnlint server`: a Language Server for the script rules, over stdio (pygls).

The editor's text is linted as it stands, unsaved edits included, never the
file on disk, with the settings of the project the document lies in (the
nearest nnlint.toml or pyproject.toml, found from the document's path as
`--stdin-filename` finds it), on open, change and save. Only the script rules
run: the server never imports torch and never runs the user's code. Each
finding's fix is a quick fix (a safe one is preferred, an unsafe one says so
in its title), beside a `# noqa: CODE` for its line; `source.fixAll.nnlint`
applies every safe fix at once. Notebooks are left to `nnlint` itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnlint import __version__
from nnlint.core.addnoqa import add_noqa
from nnlint.core.config import Settings, find_config, load_config
from nnlint.core.errors import UsageError
from nnlint.core.finding import Finding, Severity
from nnlint.core.fix import Edit
from nnlint.core.registry import Registry, load_registry
from nnlint.engine import run

SOURCE = "nnlint"
FIX_ALL = "source.fixAll.nnlint"
SUFFIXES = (".py", ".pyi")


def settings_for(path: Path, text: str, folder: Path | None = None) -> Settings:
    """The settings `nnlint --stdin-filename PATH` would use for `text`.

    Paths in the report (and `per-file-ignores` patterns) are relative to the
    config file's folder, else to the workspace folder, else to the file's own.
    Exclusions apply to the document as to a walked file (as `--force-exclude`),
    so a file `nnlint .` skips shows no diagnostics either.
    """
    config = find_config(path.parent)
    settings = Settings(root=config.parent if config else (folder or path.parent))
    if config is not None:
        for key, value in load_config(config).items():
            setattr(settings, key, value)
        settings.config_path = config
    settings.paths = [str(path)]
    settings.sources = {path.resolve(): text}
    settings.model = None
    settings.static_only = True
    settings.force_exclude = True
    settings.cache = False
    settings.jobs = 1
    return settings


def lint_text(
    path: Path, text: str, registry: Registry, folder: Path | None = None
) -> list[Finding]:
    """The script findings of `text` as the file at `path`. Raises UsageError (bad config)."""
    return run(settings_for(path, text, folder), registry).findings


def fix_all(path: Path, text: str, registry: Registry, folder: Path | None = None) -> str:
    """`text` with every safe fix applied, as `nnlint --fix` would leave it."""
    from nnlint import fixing

    settings = settings_for(path, text, folder)
    outcome = fixing.fix(settings, registry)
    return outcome.texts.get(path.resolve(), text)


def noqa_edit(text: str, finding: Finding) -> Edit | None:
    """The edit that puts the finding's code in its line's `# noqa` (merged with one there)."""
    changed, count = add_noqa(text, [finding])
    if not count:
        return None
    before = text.splitlines(keepends=True)[finding.line - 1]
    after = changed.splitlines(keepends=True)[finding.line - 1]
    return Edit(finding.line, 1, finding.line, len(before.rstrip("\r\n")) + 1, after.rstrip("\r\n"))


@dataclass
class Linted:
    """The findings of one version of a document."""

    version: int | None
    findings: list[Finding]


def build_server() -> Any:
    """The pygls server with nnlint's features. Raises UsageError without pygls."""
    try:
        from lsprotocol import types
        from pygls.lsp.server import LanguageServer
        from pygls.workspace.position_codec import ServerTextPosition, ServerTextRange
    except ImportError:
        raise UsageError("nnlint server needs pygls: pip install 'nnlint[lsp]'") from None

    server = LanguageServer("nnlint", __version__)
    registry = load_registry()
    state: dict[str, Linted] = {}
    told: set[str] = set()  # config errors already shown, not again on every keystroke
    severities = {
        Severity.ERROR: types.DiagnosticSeverity.Error,
        Severity.WARNING: types.DiagnosticSeverity.Warning,
        Severity.INFO: types.DiagnosticSeverity.Information,
    }

    def folder_of(path: Path) -> Path | None:
        root = server.workspace.root_path
        if root and path.resolve().is_relative_to(Path(root).resolve()):
            return Path(root)
        return None

    def document_path(doc: Any) -> Path | None:
        """Where the document's config is looked for; None for what is not served."""
        if doc.uri.startswith("vscode-notebook-cell:"):
            return None  # a notebook's cells: `nnlint` lints the notebook as a whole
        path = Path(doc.path)
        if path.suffix not in SUFFIXES and doc.language_id != "python":
            return None
        if not path.is_absolute():  # an untitled buffer: the default settings
            path = Path.cwd() / (path.name or "untitled.py")
        return path

    def span(doc: Any, line: int, column: int, end_line: int, end_column: int) -> Any:
        start = ServerTextPosition(line - 1, max(column - 1, 0))
        end = ServerTextPosition(end_line - 1, max(end_column - 1, 0))
        return doc.range_to_client_units(ServerTextRange(start, end))

    def finding_range(doc: Any, f: Finding) -> Any:
        if f.end_line is not None and f.end_column is not None:
            return span(doc, f.line, f.column, f.end_line, f.end_column)
        lines = doc.lines
        text = lines[f.line - 1].rstrip("\r\n") if f.line <= len(lines) else ""
        return span(doc, f.line, f.column, f.line, len(text) + 1)

    def diagnostic(doc: Any, f: Finding) -> Any:
        rule = registry.by_code.get(f.code)
        return types.Diagnostic(
            range=finding_range(doc, f),
            message=f.message,
            severity=severities[f.severity],
            code=f.code,
            code_description=types.CodeDescription(href=rule.url()) if rule else None,
            source=SOURCE,
        )

    def linted(doc: Any) -> Linted:
        known = state.get(doc.uri)
        if known is not None and known.version == doc.version:
            return known
        path = document_path(doc)
        findings: list[Finding] = []
        if path is not None:
            try:
                findings = lint_text(path, doc.source, registry, folder_of(path))
            except UsageError as exc:
                if str(exc) not in told:
                    told.add(str(exc))
                    server.window_show_message(
                        types.ShowMessageParams(
                            type=types.MessageType.Error, message=f"nnlint: {exc}"
                        )
                    )
        state[doc.uri] = Linted(doc.version, [f for f in findings if f.cell is None])
        return state[doc.uri]

    def publish(uri: str) -> None:
        doc = server.workspace.get_text_document(uri)
        found = linted(doc)
        server.text_document_publish_diagnostics(
            types.PublishDiagnosticsParams(
                uri=uri,
                version=doc.version,
                diagnostics=[diagnostic(doc, f) for f in found.findings],
            )
        )

    def text_edits(doc: Any, edits: Sequence[Edit]) -> list:
        return [
            types.TextEdit(span(doc, e.line, e.column, e.end_line, e.end_column), e.content)
            for e in edits
        ]

    def workspace_edit(uri: str, edits: list) -> Any:
        return types.WorkspaceEdit(changes={uri: edits})

    def wanted(kind: str, only: Sequence[str] | None) -> bool:
        return not only or any(kind == k or kind.startswith(f"{k}.") for k in only)

    def overlaps(a: Any, b: Any) -> bool:
        def key(p: Any) -> tuple[int, int]:
            return p.line, p.character

        return key(a.start) <= key(b.end) and key(b.start) <= key(a.end)

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(params: types.DidOpenTextDocumentParams) -> None:
        publish(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(params: types.DidChangeTextDocumentParams) -> None:
        publish(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(params: types.DidSaveTextDocumentParams) -> None:
        state.pop(params.text_document.uri, None)  # the config may have changed with it
        publish(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(params: types.DidCloseTextDocumentParams) -> None:
        state.pop(params.text_document.uri, None)
        server.text_document_publish_diagnostics(
            types.PublishDiagnosticsParams(uri=params.text_document.uri, diagnostics=[])
        )

    @server.feature(
        types.TEXT_DOCUMENT_CODE_ACTION,
        types.CodeActionOptions(
            code_action_kinds=[types.CodeActionKind.QuickFix, FIX_ALL],
            resolve_provider=False,
        ),
    )
    def code_action(params: types.CodeActionParams) -> list:
        uri = params.text_document.uri
        doc = server.workspace.get_text_document(uri)
        only = params.context.only
        actions = []
        if wanted(types.CodeActionKind.QuickFix, only):
            for f in linted(doc).findings:
                diag = diagnostic(doc, f)
                if not overlaps(diag.range, params.range):
                    continue
                if f.fix is not None:
                    label = "" if f.fix.safe else " (unsafe)"
                    actions.append(
                        types.CodeAction(
                            title=f"{f.code}: {f.fix.message}{label}",
                            kind=types.CodeActionKind.QuickFix,
                            diagnostics=[diag],
                            is_preferred=f.fix.safe,
                            edit=workspace_edit(uri, text_edits(doc, f.fix.edits)),
                        )
                    )
                edit = noqa_edit(doc.source, f)
                if edit is not None:
                    actions.append(
                        types.CodeAction(
                            title=f"{f.code}: add `# noqa: {f.code}` on this line",
                            kind=types.CodeActionKind.QuickFix,
                            diagnostics=[diag],
                            edit=workspace_edit(uri, text_edits(doc, [edit])),
                        )
                    )
        path = document_path(doc)
        if path is not None and only and wanted(FIX_ALL, only):
            fixed = fix_all(path, doc.source, registry, folder_of(path))
            if fixed != doc.source:
                whole = Edit(1, 1, len(doc.lines) + 1, 1, fixed)
                actions.append(
                    types.CodeAction(
                        title="nnlint: fix all safe fixes",
                        kind=FIX_ALL,
                        edit=workspace_edit(uri, text_edits(doc, [whole])),
                    )
                )
        return actions

    return server


def serve(argv: Sequence[str]) -> int:
    """`nnlint server [--stdio]`: serve until the editor says exit."""
    extra = [a for a in argv if a != "--stdio"]
    if extra:
        raise UsageError(f"nnlint server: unknown argument {extra[0]!r} (it speaks LSP on stdio)")
    build_server().start_io()
    return 0

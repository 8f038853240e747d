"""`nnlint server`, driven over stdio by pygls's own language client.

One server process serves the whole module: documents in folders with their
own pyproject.toml show that each document gets its project's config.
"""

from __future__ import annotations

import ast
import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("pygls")

from lsprotocol import types  # noqa: E402
from pygls.lsp.client import LanguageClient  # noqa: E402

# Generous: a test must not depend on the machine's speed.
WAIT = 600.0

BUGGY = textwrap.dedent(
    """\
    import torch
    import torch.nn.functional as F
    from torch import nn

    model = nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.CrossEntropyLoss()

    for x, y in [(torch.randn(2, 4), torch.tensor([0, 1]))]:
        probs = F.softmax(model.forward(x), dim=1)
        loss = loss_fn(probs, y)
        loss.backward()
        optimizer.step()
    """
)

FIXED = BUGGY.replace(
    "    probs = F.softmax(model.forward(x), dim=1)\n    loss = loss_fn(probs, y)\n",
    "    optimizer.zero_grad()\n    loss = loss_fn(model(x), y)\n",
)


class Session:
    """The client, its event loop, and the diagnostics the server published."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.loop = asyncio.new_event_loop()
        self.client = LanguageClient("nnlint-test", "1")
        self.published: dict[str, list[types.PublishDiagnosticsParams]] = {}
        self.messages: list[str] = []
        self.versions: dict[str, int] = {}

        @self.client.feature(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        def on_diagnostics(params: types.PublishDiagnosticsParams) -> None:
            self.published.setdefault(params.uri, []).append(params)

        @self.client.feature(types.WINDOW_SHOW_MESSAGE)
        def on_message(params: types.ShowMessageParams) -> None:
            self.messages.append(params.message)

    def do(self, coroutine):
        return self.loop.run_until_complete(asyncio.wait_for(coroutine, WAIT))

    def start(self) -> None:
        self.do(self.client.start_io(sys.executable, "-m", "nnlint", "server", cwd=str(self.root)))
        self.do(
            self.client.initialize_async(
                types.InitializeParams(
                    capabilities=types.ClientCapabilities(),
                    root_uri=self.root.as_uri(),
                    workspace_folders=[types.WorkspaceFolder(uri=self.root.as_uri(), name="root")],
                )
            )
        )
        self.client.initialized(types.InitializedParams())

    def stop(self) -> None:
        self.do(self.client.shutdown_async(None))
        self.client.exit(None)
        self.do(self.client.stop())
        self.loop.close()

    async def _next(self, uri: str, count: int) -> types.PublishDiagnosticsParams:
        while len(self.published.get(uri, [])) <= count:
            await asyncio.sleep(0.01)
        return self.published[uri][count]

    def diagnostics(self, uri: str, send) -> list[types.Diagnostic]:
        """What the server publishes for `uri` after `send()`."""
        count = len(self.published.get(uri, []))
        send()
        return list(self.do(self._next(uri, count)).diagnostics)

    def open(self, path: Path, text: str) -> list[types.Diagnostic]:
        uri = path.as_uri()
        self.versions[uri] = 1
        item = types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)
        return self.diagnostics(
            uri,
            lambda: self.client.text_document_did_open(
                types.DidOpenTextDocumentParams(text_document=item)
            ),
        )

    def change(self, path: Path, text: str) -> list[types.Diagnostic]:
        uri = path.as_uri()
        self.versions[uri] += 1
        params = types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(
                version=self.versions[uri], uri=uri
            ),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)],
        )
        return self.diagnostics(uri, lambda: self.client.text_document_did_change(params))

    def save(self, path: Path) -> list[types.Diagnostic]:
        uri = path.as_uri()
        params = types.DidSaveTextDocumentParams(
            text_document=types.TextDocumentIdentifier(uri=uri)
        )
        return self.diagnostics(uri, lambda: self.client.text_document_did_save(params))

    def actions(
        self, path: Path, diagnostic: types.Diagnostic, only: list[str] | None = None
    ) -> list[types.CodeAction]:
        params = types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(path.as_uri()),
            range=diagnostic.range,
            context=types.CodeActionContext(diagnostics=[diagnostic], only=only),
        )
        return self.do(self.client.text_document_code_action_async(params)) or []


def apply_edit(text: str, edit: types.WorkspaceEdit, uri: str) -> str:
    """The text after a WorkspaceEdit's changes to `uri` (ASCII: code units are characters)."""
    lines = text.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))

    def offset(position: types.Position) -> int:
        if position.line >= len(lines):
            return len(text)
        return starts[position.line] + position.character

    spans = sorted(
        ((offset(e.range.start), offset(e.range.end), e.new_text) for e in edit.changes[uri]),
        reverse=True,
    )
    for start, end, new in spans:
        text = text[:start] + new + text[end:]
    return text


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    root = tmp_path_factory.mktemp("editor")
    (root / "pyproject.toml").write_text('[project]\nname = "demo"\n')
    for name, table in (("ignoring", 'ignore = ["NN204"]'), ("selecting", 'select = ["NN201"]')):
        (root / name).mkdir()
        (root / name / "pyproject.toml").write_text(f"[tool.nnlint]\n{table}\n")
    session = Session(root)
    session.start()
    yield session
    session.stop()


def by_code(diagnostics: list[types.Diagnostic]) -> dict[str, types.Diagnostic]:
    return {d.code: d for d in diagnostics}


def test_open_publishes_the_script_findings(session):
    path = session.root / "train.py"
    found = by_code(session.open(path, BUGGY))
    assert set(found) == {"NN201", "NN204", "NN210"}
    softmax = found["NN204"]
    # `probs` in `loss = loss_fn(probs, y)`, line 11 (0-based 10)
    assert softmax.range == types.Range(types.Position(10, 11), types.Position(10, 28))
    assert softmax.severity == types.DiagnosticSeverity.Error
    assert softmax.source == "nnlint"
    assert softmax.code_description.href.endswith("#nn204-softmax-before-cross-entropy")
    assert found["NN201"].range.start == types.Position(12, 4)
    assert found["NN210"].severity == types.DiagnosticSeverity.Warning


def test_the_unsaved_text_is_linted_not_the_file(session):
    path = session.root / "unsaved.py"
    path.write_text(FIXED)  # on disk: clean
    assert {d.code for d in session.open(path, BUGGY)} == {"NN201", "NN204", "NN210"}
    assert session.change(path, FIXED) == []
    assert {d.code for d in session.change(path, BUGGY)} >= {"NN201"}
    assert {d.code for d in session.save(path)} >= {"NN201"}  # the buffer still, on save


def fix_action(actions: list[types.CodeAction], code: str) -> types.CodeAction:
    (action,) = [a for a in actions if a.title.startswith(code) and "noqa" not in a.title]
    return action


def test_code_actions_fix_the_finding(session):
    path = session.root / "fixme.py"
    found = by_code(session.open(path, BUGGY))
    for code, safe in (("NN210", True), ("NN204", False), ("NN201", False)):
        actions = session.actions(path, found[code])
        action = fix_action(actions, code)
        assert action.kind == types.CodeActionKind.QuickFix
        assert bool(action.is_preferred) is safe
        assert ("(unsafe)" in action.title) is not safe
        assert action.diagnostics[0].code == code
        fixed = apply_edit(BUGGY, action.edit, path.as_uri())
        ast.parse(fixed)
        left = {d.code for d in session.change(path, fixed)}
        assert code not in left
        assert left  # the other findings stay
        session.change(path, BUGGY)


def test_the_noqa_quick_fix_silences_the_line(session):
    path = session.root / "noqa.py"
    text = BUGGY.replace("loss.backward()", "loss.backward()  # keep").replace(
        "optimizer.step()", "optimizer.step()  # noqa: E501"
    )
    found = by_code(session.open(path, text))
    actions = session.actions(path, found["NN201"])
    (noqa,) = [a for a in actions if "noqa" in a.title]
    fixed = apply_edit(text, noqa.edit, path.as_uri())
    assert "optimizer.step()  # noqa: E501, NN201\n" in fixed
    assert fixed.replace("  # noqa: E501, NN201", "  # noqa: E501") == text
    assert "NN201" not in {d.code for d in session.change(path, fixed)}


def test_fix_all_applies_the_safe_fixes(session):
    path = session.root / "fixall.py"
    found = session.open(path, BUGGY)
    (action,) = session.actions(path, found[0], only=["source.fixAll"])
    fixed = apply_edit(BUGGY, action.edit, path.as_uri())
    assert "model(x)" in fixed and "softmax" in fixed  # the safe NN210 only
    assert {d.code for d in session.change(path, fixed)} == {"NN201", "NN204"}


def test_each_document_gets_its_projects_config(session):
    ignoring = {d.code for d in session.open(session.root / "ignoring" / "train.py", BUGGY)}
    assert ignoring == {"NN201", "NN210"}
    selecting = {d.code for d in session.open(session.root / "selecting" / "train.py", BUGGY)}
    assert selecting == {"NN201"}


def test_a_broken_config_is_one_message(session):
    folder = session.root / "broken"
    folder.mkdir()
    (folder / "nnlint.toml").write_text("no-such-key = 1\n")
    assert session.open(folder / "train.py", BUGGY) == []
    assert session.change(folder / "train.py", FIXED) == []
    told = [m for m in session.messages if "unknown config key 'no-such-key'" in m]
    assert len(told) == 1, session.messages


def test_the_server_never_imports_torch(session):
    maps = Path(f"/proc/{session.client._server.pid}/maps")
    if not maps.exists():
        pytest.skip("no /proc on this system")
    session.open(session.root / "static.py", BUGGY)
    assert "libtorch" not in maps.read_text()


def test_without_pygls_the_server_says_how_to_install_it():
    code = "import sys; sys.modules['pygls'] = None; from nnlint.cli import main; sys.exit(main(['server']))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "pip install 'nnlint[lsp]'" in done.stderr

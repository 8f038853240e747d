"""The graph phase: capture the model once, run every graph rule on the graph."""

from __future__ import annotations

import linecache
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnlint.core.diagnostics import CaptureFailed, run_rule
from nnlint.core.files import display_path
from nnlint.core.finding import Finding, Phase
from nnlint.graph.graph import Graph, Node
from nnlint.graph.record import CaptureError, capture
from nnlint.setup.sites import Site, site_for


@dataclass
class GraphContext:
    """What a graph rule gets: the model, its graph, and the loss the script trains with.

    `model_site` is the model's class (or factory) line, where findings point when
    a submodule's construction line is unknown.
    """

    model: Any
    graph: Graph
    loss: str | None
    root: Path
    model_site: Site | None = None

    def module_site(self, name: str | None) -> Site | None:
        """The construction line of a submodule (`self.conv = nn.Conv2d(...)`)."""
        site = site_for(self.model, name or "")
        return site or self.model_site

    def op_site(self, node: Node) -> Site | None:
        """Where to fix an op: the construction line of the torch module that ran it
        (`nn.Softmax(dim=1)`), the forward line when user code called it directly
        (`F.softmax(x, 1)`), else the construction line of the module it ran in."""
        module_type = type(node.module).__module__ if node.module is not None else ""
        if node.in_user_code and node.location and not module_type.startswith("torch.nn."):
            return Site(*node.location)
        return self.module_site(node.module_name)

    def forward_line(self, name: str | None) -> str | None:
        """'called at path:line' for the first call of a submodule, as a note."""
        for call in self.graph.calls:
            if call.name == name and call.location:
                return f"called at {self.display(call.location[0])}:{call.location[1]}"
        return None

    def label(self, name: str | None) -> str:
        """How a finding names a submodule: `conv (Conv2d)`, `0 (Linear)`."""
        module = self.model.get_submodule(name) if name else self.model
        return f"{name} ({type(module).__name__})" if name else type(module).__name__

    def display(self, path: str) -> str:
        return display_path(Path(path), self.root)

    def report(
        self, rule: Any, at: Site | None, /, note: str | None = None, **fields: Any
    ) -> Finding:
        """`rule`'s finding at `at` (a site from `module_site`/`op_site`), else the model's line."""
        site = at or Site(str(self.root / "<model>"), 1)
        text = "; ".join(n for n in (note, site.note) if n) or None
        source = linecache.getline(site.path, site.line)
        column = len(source) - len(source.lstrip()) + 1 if source.strip() else 1
        return rule.make(self.display(site.path), site.line, column, note=text, **fields)


def run_graph_phase(
    model: Any,
    batch: Any,
    loss: str | None,
    rules: Sequence[Any],
    settings: Any,
    model_site: Site | None = None,
) -> Iterator[Finding]:
    """Capture `model` once and run every graph rule on it; a failed capture is one NN004."""
    graph_rules = [r for r in rules if r.kind is Phase.GRAPH]
    if not graph_rules:
        return
    root = Path(getattr(settings, "root", Path.cwd()))
    where = model_site or Site(str(root / "<model>"), 1)
    try:
        graph = capture(model, batch)
    except CaptureError as exc:
        yield CaptureFailed.make(display_path(Path(where.path), root), where.line, reason=str(exc))
        return
    if graph.fx_reason:
        path = display_path(Path(where.path), root)
        yield CaptureFailed.make(path, where.line, reason=graph.fx_reason)
    ctx = GraphContext(model, graph, loss, root, model_site)
    display = display_path(Path(model_site.path if model_site else str(root)), root)
    for rule in graph_rules:
        yield from run_rule(rule, ctx, display, settings.debug)

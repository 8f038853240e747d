"""The normalized model graph that every graph rule loops over, and the graph phase.

Both capture backends (`nnlint.capture`: a recorded forward, or torch.fx)
produce the same `Graph`: a list of `Node`s in execution order, each with an
op kind, the module that ran it and its qualified name, tensor shapes when
known, the parameters it read and a source location. Rules never ask which
backend produced it; shape-aware rules check `graph.has_shapes`.
"""

from __future__ import annotations

import linecache
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnlint.diagnostics import CaptureFailed, run_rule
from nnlint.files import display_path
from nnlint.finding import Finding, Phase
from nnlint.sites import Site, site_for

# Ops that move or relabel data without computing anything new.
TRANSPARENT = frozenset(
    {
        "view",
        "reshape",
        "flatten",
        "permute",
        "transpose",
        "contiguous",
        "squeeze",
        "unsqueeze",
        "cast",
        "identity",
    }
)

_KINDS = {
    "conv": (
        "conv1d",
        "conv2d",
        "conv3d",
        "conv_transpose1d",
        "conv_transpose2d",
        "conv_transpose3d",
    ),
    "linear": ("linear", "bilinear"),
    "batch_norm": ("batch_norm",),
    "instance_norm": ("instance_norm",),
    "norm": ("layer_norm", "group_norm", "rms_norm", "local_response_norm"),
    "dropout": (
        "dropout",
        "dropout1d",
        "dropout2d",
        "dropout3d",
        "alpha_dropout",
        "feature_alpha_dropout",
    ),
    "softmax": ("softmax",),
    "log_softmax": ("log_softmax",),
    "view": ("view",),
    "reshape": ("reshape",),
    "flatten": ("flatten",),
    "permute": ("permute", "movedim"),
    "transpose": ("transpose", "t", "swapaxes", "swapdims"),
    "contiguous": ("contiguous",),
    "squeeze": ("squeeze",),
    "unsqueeze": ("unsqueeze",),
    "cast": ("to", "float", "half", "bfloat16", "double", "type_as", "type"),
    "activation": (
        "relu",
        "relu_",
        "relu6",
        "gelu",
        "silu",
        "silu_",
        "elu",
        "selu",
        "celu",
        "leaky_relu",
        "leaky_relu_",
        "hardtanh",
        "tanh",
        "sigmoid",
        "softplus",
        "mish",
        "hardswish",
        "hardsigmoid",
        "logsigmoid",
        "prelu",
        "rrelu",
        "glu",
        "softsign",
        "tanhshrink",
        "threshold",
        "sigmoid_",
        "tanh_",
    ),
    "embedding": ("embedding", "embedding_bag"),
    "matmul": (
        "matmul",
        "bmm",
        "mm",
        "__matmul__",
        "einsum",
        "baddbmm",
        "scaled_dot_product_attention",
    ),
}
KIND_OF_NAME = {name: kind for kind, names in _KINDS.items() for name in names}


def kind_of(name: str) -> str:
    """The normalized op kind of a torch function or Tensor method name."""
    return KIND_OF_NAME.get(name, "other")


@dataclass(slots=True)
class Node:
    """One op of the forward, in execution order."""

    index: int
    kind: str
    target: str
    module: Any = None
    module_name: str | None = None
    inputs: tuple[int, ...] = ()
    input_shapes: tuple[tuple[int, ...] | None, ...] = ()
    output_shape: tuple[int, ...] | None = None
    params: tuple[str, ...] = ()
    location: tuple[str, int] | None = None
    in_user_code: bool = False
    attrs: dict[str, Any] = field(default_factory=dict)
    users: list[int] = field(default_factory=list)


@dataclass
class ModuleCall:
    """A module's forward being entered, and the user line that called it."""

    name: str
    module: Any
    location: tuple[str, int] | None


@dataclass
class Graph:
    nodes: list[Node]
    outputs: list[int]
    calls: list[ModuleCall]
    params_read: set[str]
    backend: str
    has_shapes: bool
    fallback: str | None = None  # why the runtime capture failed, when fx stood in

    def link(self) -> Graph:
        for node in self.nodes:
            for source in node.inputs:
                self.nodes[source].users.append(node.index)
        return self

    def producer(self, node: Node, through: frozenset[str] = TRANSPARENT) -> Node | None:
        """The node that computed `node`'s first tensor input, skipping `through` ops."""
        while node.inputs:
            node = self.nodes[node.inputs[0]]
            if node.kind not in through:
                return node
        return None

    def consumers(self, node: Node, through: frozenset[str] = TRANSPARENT) -> list[Node]:
        """The nodes that use `node`'s output, looking past `through` ops."""
        found: list[Node] = []
        for index in node.users:
            user = self.nodes[index]
            found.extend(self.consumers(user, through) if user.kind in through else [user])
        return found

    def output_node(self) -> Node | None:
        """The op that produced the model's main output (the logits)."""
        return self.nodes[self.outputs[0]] if self.outputs else None


@dataclass
class GraphContext:
    """What a graph rule gets: the model, its graph, and the loss the script trains with."""

    model: Any
    graph: Graph
    loss: str | None
    root: Path
    fallback: Site | None = None

    def module_site(self, name: str | None) -> Site | None:
        """The construction line of a submodule (`self.conv = nn.Conv2d(...)`)."""
        site = site_for(self.model, name or "")
        return site or self.fallback

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

    def report(self, rule: Any, site: Site | None, *notes: str | None, **fields: Any) -> Finding:
        site = site or Site(str(self.root / "<model>"), 1)
        text = "; ".join(n for n in (*notes, site.note) if n) or None
        source = linecache.getline(site.path, site.line)
        column = len(source) - len(source.lstrip()) + 1 if source.strip() else 1
        return rule.make(self.display(site.path), site.line, column, note=text, **fields)


def run_graph_phase(
    model: Any,
    batch: Any,
    loss: str | None,
    rules: Sequence[Any],
    settings: Any,
    fallback: Site | None = None,
) -> Iterator[Finding]:
    """Capture `model` once and run every graph rule on it; a failed capture is one NN004."""
    from nnlint.capture import CaptureError, capture

    graph_rules = [r for r in rules if r.kind is Phase.GRAPH]
    if not graph_rules:
        return
    root = Path(getattr(settings, "root", Path.cwd()))
    try:
        graph = capture(model, batch)
    except CaptureError as exc:
        where = fallback or Site(str(root / "<model>"), 1)
        yield CaptureFailed.make(display_path(Path(where.path), root), where.line, reason=str(exc))
        return
    if graph.fallback:
        where = fallback or Site(str(root / "<model>"), 1)
        path = display_path(Path(where.path), root)
        yield CaptureFailed.make(path, where.line, reason=graph.fallback)
    ctx = GraphContext(model, graph, loss, root, fallback)
    for rule in graph_rules:
        where = fallback.path if fallback else str(root)
        yield from run_rule(rule, ctx, display_path(Path(where), root), settings.debug)

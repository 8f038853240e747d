"""The normalized model graph that every graph rule loops over.

Both capture backends (`nnlint.graph.record`: a recorded forward, or torch.fx)
produce the same `Graph`: a list of `Node`s in execution order, each with an
op kind, the module that ran it and its qualified name, tensor shapes when
known, the parameters it read and a source location. Rules never ask which
backend produced it; shape-aware rules check `graph.has_shapes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nnlint.graph import TRANSPARENT


@dataclass(frozen=True)
class Kind:
    """One node kind, as each capture backend sees it: the torch functions and Tensor
    methods a recorded forward meets, and the `torch.nn` classes a torch.fx trace
    meets as `call_module` (paths below `torch.nn`)."""

    functions: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()


# The one table of node kinds, shared by both capture backends. A new kind is
# one entry here; rules then match `node.kind`. Activation modules are told by
# the module that defines them (`torch.nn.modules.activation`), after the others.
KINDS: dict[str, Kind] = {
    "conv": Kind(
        (
            "conv1d",
            "conv2d",
            "conv3d",
            "conv_transpose1d",
            "conv_transpose2d",
            "conv_transpose3d",
        ),
        ("modules.conv._ConvNd",),
    ),
    "linear": Kind(("linear", "bilinear"), ("Linear",)),
    "batch_norm": Kind(("batch_norm",), ("modules.batchnorm._BatchNorm",)),
    "instance_norm": Kind(("instance_norm",), ("modules.instancenorm._InstanceNorm",)),
    "norm": Kind(
        ("layer_norm", "group_norm", "rms_norm", "local_response_norm"), ("LayerNorm", "GroupNorm")
    ),
    "dropout": Kind(
        (
            "dropout",
            "dropout1d",
            "dropout2d",
            "dropout3d",
            "alpha_dropout",
            "feature_alpha_dropout",
        ),
        ("modules.dropout._DropoutNd",),
    ),
    "softmax": Kind(("softmax",), ("Softmax",)),
    "log_softmax": Kind(("log_softmax",), ("LogSoftmax",)),
    "view": Kind(("view",)),
    "reshape": Kind(("reshape",)),
    "flatten": Kind(("flatten",), ("Flatten",)),
    "identity": Kind((), ("Identity",)),
    "permute": Kind(("permute", "movedim")),
    "transpose": Kind(("transpose", "t", "swapaxes", "swapdims")),
    "contiguous": Kind(("contiguous",)),
    "squeeze": Kind(("squeeze",)),
    "unsqueeze": Kind(("unsqueeze",)),
    "cast": Kind(("to", "float", "half", "bfloat16", "double", "type_as", "type")),
    "activation": Kind(
        (
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
        )
    ),
    "embedding": Kind(("embedding", "embedding_bag"), ("Embedding",)),
    "matmul": Kind(
        (
            "matmul",
            "bmm",
            "mm",
            "__matmul__",
            "einsum",
            "baddbmm",
            "scaled_dot_product_attention",
        )
    ),
}
KIND_OF_NAME = {name: kind for kind, entry in KINDS.items() for name in entry.functions}
_ACTIVATION_MODULE = "torch.nn.modules.activation"
_module_classes: list[tuple[type, str]] = []


def module_kind(module: Any) -> str:
    """The node kind of a module called as a whole (what torch.fx records)."""
    if not _module_classes:
        import torch.nn as nn

        for kind, entry in KINDS.items():
            for path in entry.modules:
                cls: Any = nn
                for part in path.split("."):
                    cls = getattr(cls, part)
                _module_classes.append((cls, kind))
    for cls, kind in _module_classes:
        if isinstance(module, cls):
            return kind
    if type(module).__module__ == _ACTIVATION_MODULE:
        return "activation"
    return "other"


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
    fx_reason: str | None = None  # why the recorded forward failed, when torch.fx stood in

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

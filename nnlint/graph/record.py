"""Capture a model's forward as a `nnlint.graph.graph.Graph`.

The main path records one real forward (train mode, `no_grad`) with a
`TorchFunctionMode` and module forward hooks: it sees every op with its real
shapes, the module running it, the parameters it reads and the user line
that called it, whatever Python the forward runs (HF `**kwargs` forwards,
data-dependent branches). `TorchDispatchMode` is not used: below autograd,
dropout is already decomposed away on CPU.

Without an input, or when the recorded forward fails, `torch.fx` traces the
model symbolically (no shapes). The model, its modes, buffers and the global
RNGs are left as they were (`nnlint.setup.preserve`).
"""

from __future__ import annotations

import sys
import weakref
from typing import Any

from nnlint.core.diagnostics import one_line
from nnlint.graph.graph import KIND_OF_NAME, Graph, ModuleCall, Node, kind_of, module_kind
from nnlint.setup.inputs import Batch, call
from nnlint.setup.preserve import preserved
from nnlint.setup.sites import is_user_file, user_caller
from nnlint.setup.tensors import tensors

# Tensor metadata reads: no data flows through them.
_METADATA = frozenset(
    {
        "__get__",
        "size",
        "dim",
        "numel",
        "stride",
        "is_contiguous",
        "__len__",
        "__bool__",
        "item",
        "tolist",
        "data_ptr",
        "element_size",
        "is_floating_point",
        "__format__",
        "__repr__",
        "get_device",
        "__index__",
        "__int__",
        "__float__",
        "storage_offset",
    }
)


# Ops whose findings point at the forward line that called them; the others are
# reported at their module's construction line, so their caller is not looked up.
_LOCATED = frozenset({"view", "reshape", "softmax", "log_softmax", "activation", "dropout"})


class CaptureError(Exception):
    """Neither backend could capture the model; the message says why."""


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any = None) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def _attrs(kind: str, name: str, args: tuple, kwargs: dict) -> dict[str, Any]:
    """What rules need to know about an op beyond its kind."""
    if kind == "conv" and len(args) > 1:
        weight = args[1]
        transposed = name.startswith("conv_transpose")
        groups = _arg(args, kwargs, 6, "groups", 1)
        out_ch = weight.shape[1] * groups if transposed else weight.shape[0]
        in_ch = weight.shape[0] if transposed else weight.shape[1] * groups
        bias = _arg(args, kwargs, 2, "bias")
        return {"groups": groups, "in": in_ch, "out": out_ch, "bias": bias is not None}
    if kind == "linear" and name == "addmm":
        return {"in": args[2].shape[0], "out": args[2].shape[1], "bias": True}
    if kind == "linear" and len(args) > 1:
        bias = _arg(args, kwargs, 2, "bias")
        return {"in": args[1].shape[-1], "out": args[1].shape[0], "bias": bias is not None}
    if kind == "dropout":
        p = _arg(args, kwargs, 1, "p", 0.5)
        return {"p": p, "active": bool(_arg(args, kwargs, 2, "training", True)) and p > 0}
    if kind in ("softmax", "log_softmax"):
        return {"dim": _arg(args, kwargs, 1, "dim")}
    return {}


class _Recorder:
    """Builds the graph from TorchFunctionMode callbacks and module hooks."""

    def __init__(self, model: Any) -> None:
        # One walk for both tables; the first name of a shared module or parameter wins.
        self.names: dict[int, str] = {}
        self.params: dict[int, str] = {}
        for name, module in model.named_modules(remove_duplicate=False):
            self.names.setdefault(id(module), name)
            for local, param in module._parameters.items():
                if param is not None:
                    self.params.setdefault(id(param), f"{name}.{local}" if name else local)
        self.stack: list[tuple[str, Any]] = []
        self.nodes: list[Node] = []
        self.calls: list[ModuleCall] = []
        self.read: set[str] = set()
        self.producers: dict[int, tuple[Any, int]] = {}
        import torch

        self.tensor: type = torch.Tensor

    def enter(self, module: Any, args: Any) -> None:
        name = self.names.get(id(module))
        if name is None:
            return
        frame = user_caller(sys._getframe(1))
        where = (frame.f_code.co_filename, frame.f_lineno) if frame else None
        self.calls.append(ModuleCall(name, module, where))
        self.stack.append((name, module))

    def leave(self, module: Any, args: Any, output: Any) -> None:
        if self.stack and self.stack[-1][1] is module:
            self.stack.pop()

    def op(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        # Called for every torch function the forward runs: kept lean on purpose.
        name = getattr(func, "__name__", "")
        if name in _METADATA:
            if name == "__get__" and args and isinstance(out, self.tensor):
                param = self.params.get(id(args[0]))
                if param is not None:
                    self.read.add(param)  # through a property: `w.T`, `w.mT`, `w.data`
            return
        tensor = self.tensor
        if isinstance(out, tensor):
            outs: Any = (out,)
        elif isinstance(out, tuple | list):
            outs = [o for o in out if isinstance(o, tensor)]
            if not outs:
                return
        else:
            return
        inputs: list[int] = []
        shapes: list[tuple[int, ...]] = []
        params: list[str] = []
        producers, param_names = self.producers, self.params
        for value in (*args, *kwargs.values()) if kwargs else args:
            for item in value if isinstance(value, tuple | list) else (value,):
                if not isinstance(item, tensor):
                    continue
                key = id(item)
                shapes.append(tuple(item.shape))
                entry = producers.get(key)
                if entry is not None and entry[0]() is item:
                    inputs.append(entry[1])
                param = param_names.get(key)
                if param is not None:
                    params.append(param)
        kind = KIND_OF_NAME.get(name, "other")
        if params:
            self.read.update(params)
            if name == "addmm":
                kind = "linear"
        index = len(self.nodes)
        node = Node(
            index,
            kind,
            name,
            inputs=tuple(inputs),
            input_shapes=tuple(shapes),
            output_shape=tuple(outs[0].shape),
            params=tuple(params),
        )
        if self.stack:
            node.module_name, node.module = self.stack[-1]
        if kind != "other":
            node.attrs = _attrs(kind, name, args, kwargs)
            if kind in _LOCATED:
                self._locate(node, sys._getframe(2))
        self.nodes.append(node)
        ref = weakref.ref
        for item in outs:
            producers[id(item)] = (ref(item), index)

    @staticmethod
    def _locate(node: Node, frame: Any) -> None:
        """The user line that called the op, if user code called it (not torch, not HF)."""
        caller = user_caller(frame)
        if caller is not None:
            node.in_user_code = True
            node.location = (caller.f_code.co_filename, caller.f_lineno)

    def outputs(self, result: Any) -> list[int]:
        found: list[int] = []
        for tensor in tensors(result):
            entry = self.producers.get(id(tensor))
            if entry is not None and entry[0]() is tensor and entry[1] not in found:
                found.append(entry[1])
        return found


_MODE: Any = None


def _recording_mode() -> Any:
    """The TorchFunctionMode class that feeds a recorder, made once."""
    global _MODE
    if _MODE is None:
        from torch.overrides import TorchFunctionMode

        class RecordingMode(TorchFunctionMode):
            def __init__(self, recorder: _Recorder) -> None:
                super().__init__()
                self.recorder = recorder

            def __torch_function__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                self.recorder.op(func, args, kwargs or {}, out)
                return out

        _MODE = RecordingMode
    return _MODE


def record(model: Any, batch: Batch) -> Graph:
    """One real forward in train mode under no_grad, recorded op by op.

    The model's modes and buffers and the torch RNG are restored. Python's and
    NumPy's global RNGs are not saved here: the model phase restores them once
    around everything it runs (`nnlint.setup.preserve.global_rngs`).
    """
    import torch

    recorder = _Recorder(model)
    mode = _recording_mode()(recorder)
    hooks = torch.nn.modules.module
    pre = hooks.register_module_forward_pre_hook(recorder.enter)
    post = hooks.register_module_forward_hook(recorder.leave)
    try:
        with preserved(model, rngs=False), torch.no_grad():
            model.train()
            with mode:
                result = call(model, batch)
    except Exception as exc:
        raise CaptureError(f"the forward on the example input raised {one_line(exc)}") from exc
    finally:
        pre.remove()
        post.remove()
    if not tensors(result):
        kind = type(result).__name__
        raise CaptureError(f"the forward returned a {kind} that holds no tensor")
    graph = Graph(
        recorder.nodes,
        recorder.outputs(result),
        recorder.calls,
        recorder.read,
        "runtime",
        has_shapes=True,
    )
    return graph.link()


def _module_attrs(kind: str, module: Any) -> dict[str, Any]:
    if kind == "conv":
        return {
            "groups": module.groups,
            "in": module.in_channels,
            "out": module.out_channels,
            "bias": module.bias is not None,
        }
    if kind == "linear":
        return {
            "in": module.in_features,
            "out": module.out_features,
            "bias": module.bias is not None,
        }
    if kind == "dropout":
        return {"p": module.p, "active": module.p > 0}
    if kind in ("softmax", "log_softmax"):
        return {"dim": module.dim}
    return {}


def _stack_location(stack: str | None) -> tuple[tuple[str, int] | None, bool]:
    """The innermost user frame of an fx stack trace, and whether the op's own frame is user code."""
    import re

    frames = re.findall(r'File "([^"]+)", line (\d+)', stack or "")
    user = [(path, int(line)) for path, line in frames if is_user_file(path)]
    innermost = bool(frames) and is_user_file(frames[-1][0])
    return (user[-1] if user else None), innermost


def trace(model: Any) -> Graph:
    """A symbolic trace with torch.fx: no shapes, same node kinds."""
    import torch.fx

    tracer = torch.fx.Tracer()
    tracer.record_stack_traces = True
    try:
        fx_graph = tracer.trace(model)
    except Exception as exc:
        raise CaptureError(f"torch.fx could not trace the model: {one_line(exc)}") from exc
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    index: dict[Any, int] = {}
    nodes: list[Node] = []
    calls: list[ModuleCall] = []
    read: set[str] = set()
    outputs: list[int] = []
    for fx_node in fx_graph.nodes:
        if fx_node.op == "get_attr" and fx_node.target in params:
            read.add(fx_node.target)
        if fx_node.op == "output":
            outputs = [index[n] for n in fx_node.all_input_nodes if n in index]
            if not fx_node.all_input_nodes:
                raise CaptureError("torch.fx: the forward returns no tensor")
        if fx_node.op not in ("call_module", "call_function", "call_method"):
            continue
        location, in_user = _stack_location(fx_node.stack_trace)
        node = Node(
            len(nodes),
            "other",
            str(fx_node.target),
            location=location,
            in_user_code=in_user,
            inputs=tuple(index[n] for n in fx_node.all_input_nodes if n in index),
        )
        if fx_node.op == "call_module":
            module = modules[fx_node.target]
            node.kind, node.target = module_kind(module), type(module).__name__.lower()
            node.module, node.module_name = module, fx_node.target
            node.attrs = _module_attrs(node.kind, module)
            node.params = tuple(f"{fx_node.target}.{n}" for n, _ in module.named_parameters())
            read.update(node.params)
            calls.append(ModuleCall(fx_node.target, module, location))
        else:
            name = fx_node.target if isinstance(fx_node.target, str) else fx_node.target.__name__
            node.kind, node.target = kind_of(name), name
            stack = fx_node.meta.get("nn_module_stack") or {}
            if stack:
                owner = next(reversed(stack))
                node.module_name = owner
                node.module = modules.get(owner)
        index[fx_node] = node.index
        nodes.append(node)
    return Graph(nodes, outputs, calls, read, "fx", has_shapes=False).link()


def capture(model: Any, batch: Batch | None) -> Graph:
    """The recorded forward when there is a batch, else (or when it fails) an fx trace.

    When the forward on the batch fails but the trace works, the graph's
    `fx_reason` says why, so that the user learns the shape-aware rules were skipped.
    """
    if batch is not None:
        try:
            return record(model, batch)
        except CaptureError as runtime:
            try:
                graph = trace(model)
            except CaptureError:
                raise runtime from None
            graph.fx_reason = f"{runtime}; used a torch.fx trace without shapes instead"
            return graph
    return trace(model)

from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import ScriptRule
from nnlint.script import edits
from nnlint.script.values import values


class ForwardCalledDirectly(ScriptRule):
    """A module's `forward` is called directly instead of calling the module.

    ## What it does
    Flags `model.forward(x)` and `self.encoder.forward(x)`. Calls that must
    name `forward` are left alone: `super().forward(x)`,
    `Base.forward(self, x)`, `type(module).forward(module, x)` and
    `self.forward(x)`.

    ## Why is this bad?
    `model(x)` runs the forward pre-hooks and hooks around `forward`;
    `model.forward(x)` skips them. Anything built on hooks (FSDP and DDP
    wrappers, quantization observers, `torch.utils.checkpoint`, activation
    logging, pruning masks) silently does not happen.

    ## Example
    ```python
    logits = model.forward(x)
    ```

    ## Use instead
    ```python
    logits = model(x)
    ```

    ## Fix
    Safe: `model.forward(x)` becomes `model(x)`.

    ## Known problems
    The `forward` of other libraries' networks (OpenCV's `cv2.dnn`, ONNX
    Runtime, ...) and `.forward()` with no input are left alone.
    """

    code = "NN210"
    name = "forward-called-directly"
    message = (
        "`{receiver}.forward(...)` bypasses the module's hooks; call `{receiver}(...)` instead"
    )
    severity = Severity.WARNING
    needs = (".forward(",)
    needs_all = ("torch",)

    invalid = (
        """
import torch
model = torch.nn.Linear(4, 2)
logits = model.forward(torch.randn(1, 4))
""",
    )
    fixes = (
        (
            """
import torch
model = torch.nn.Linear(4, 2)
logits = model.forward(torch.randn(1, 4))
""",
            """
import torch
model = torch.nn.Linear(4, 2)
logits = model(torch.randn(1, 4))
""",
        ),
    )
    valid = (
        """
import cv2
net = cv2.dnn.readNetFromONNX("model.onnx")
net.setInput(blob)
detections = net.forward()
scores = cv2.dnn.readNet("m.pb").forward(["out"])
""",
        """
import torch

class Head(torch.nn.Linear):
    def forward(self, x):
        return super().forward(x).relu()

class Twice(Head):
    def forward(self, x):
        return Head.forward(self, x) + self.forward_once(x)
def unhooked(module, x):
    return type(module).forward(module, x)

model = Head(4, 2)
logits = model(torch.randn(1, 4))
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        tracker = values(ctx)
        for call in tracker.calls:
            func = call.func
            if not isinstance(func, cst.Attribute) or func.attr.value != "forward":
                continue
            receiver = func.value
            if _names_forward_on_purpose(receiver) or not call.args:
                continue  # `net.forward()` with no input is not a torch module's forward
            if _foreign(tracker, receiver):
                continue
            autofix = edits.fix(
                "Call the module", edits.replace(ctx, func, edits.code(ctx, receiver)), safe=True
            )
            yield ctx.report(self, call, receiver=tracker.code(receiver), autofix=autofix)


def _names_forward_on_purpose(receiver: cst.BaseExpression) -> bool:
    """`super()`, `self` and classes (`Base.forward(self, x)`) must name `forward`."""
    if isinstance(receiver, cst.Call):  # super().forward(x), type(m).forward(m, x)
        return isinstance(receiver.func, cst.Name) and receiver.func.value in ("super", "type")
    if isinstance(receiver, cst.Attribute):
        last = receiver.attr.value
    elif isinstance(receiver, cst.Name):
        last = receiver.value
    else:
        return not isinstance(receiver, cst.Subscript)
    return last in ("self", "cls") or last[:1].isupper()


# Inference engines whose networks have their own `forward` (OpenCV's dnn, ONNX Runtime, ...).
_FOREIGN = (
    "cv2.",
    "onnxruntime.",
    "openvino.",
    "tensorflow.",
    "keras.",
    "jax.",
    "tensorrt.",
    "caffe.",
    "mxnet.",
    "paddle.",
)


def _foreign(tracker, receiver: cst.BaseExpression) -> bool:
    """Whether `receiver` is built by a library that is not torch."""
    if not isinstance(receiver, cst.Name):
        return False
    for value in tracker.assigned_values(receiver):
        while isinstance(value, cst.Call):
            names = tracker.ctx.qualified_name_strings(value.func)
            if any(q.startswith(_FOREIGN) for q in names):
                return True
            value = value.func.value if isinstance(value.func, cst.Attribute) else None
    return False

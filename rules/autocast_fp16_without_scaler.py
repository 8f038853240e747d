from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import ScriptRule
from nnlint.script.cstwalk import is_name
from nnlint.script.loops import BACKWARD, analyze

_AUTOCAST = ("torch.autocast", "torch.amp.autocast", "torch.amp.autocast_mode.autocast")
_CUDA_AUTOCAST = ("torch.cuda.amp.autocast", "torch.cuda.amp.autocast_mode.autocast")
_FP16 = ("torch.float16", "torch.half")
# Libraries that scale the loss themselves (Accelerate, DeepSpeed, Lightning, apex).
_SCALING = ("accelerate", "deepspeed", "lightning", "pytorch_lightning", "apex", "fabric")


class AutocastFp16WithoutScaler(ScriptRule):
    """A training step runs under float16 autocast without a `GradScaler`.

    ## What it does
    Flags `torch.autocast("cuda")`, `torch.autocast(..., dtype=torch.float16)`
    and `torch.cuda.amp.autocast()` (all float16) around the forward of a
    function or loop that calls `backward()`, in a file that never builds a
    `GradScaler`. bfloat16 autocast needs no scaler and is left alone.

    ## Why is this bad?
    float16 cannot represent gradients below about 6e-8: small gradients
    underflow to zero, and parts of the model silently stop learning.
    `GradScaler` multiplies the loss before `backward()` and divides the
    gradients back before the step so that they survive.

    ## Example
    ```python
    with torch.autocast("cuda", dtype=torch.float16):
        loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    ```

    ## Use instead
    ```python
    scaler = torch.amp.GradScaler("cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    ```

    ## Known problems
    A device or dtype held in a variable is not followed, and files that use
    Accelerate, DeepSpeed, Lightning or apex (which scale the loss for you)
    are left alone.
    """

    needs_all = ("torch", "autocast", "backward")
    code = "NN215"
    name = "autocast-fp16-without-scaler"
    message = (
        "float16 autocast in a training step without a `GradScaler`; small gradients "
        "underflow to zero: scale the loss with `torch.amp.GradScaler` (or use bfloat16)"
    )
    severity = Severity.WARNING

    invalid = (
        """
import torch
model = torch.nn.Linear(4, 2).cuda()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for x, y in loader:
    optimizer.zero_grad()
    with torch.autocast(device_type="cuda", dtype=torch.float16):
        loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    optimizer.step()
""",
        """
import torch
from torch.cuda.amp import autocast
def train_step(model, optimizer, x, y):
    with autocast():
        loss = model(x).sum()
    loss.backward()
    optimizer.step()
""",
    )
    valid = (
        """
import torch
model = torch.nn.Linear(4, 2).cuda()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for x, y in loader:
    optimizer.zero_grad()
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
        loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    optimizer.step()
""",
        """
import torch
model = torch.nn.Linear(4, 2).cuda()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    optimizer.zero_grad()
    with torch.autocast("cuda"):
        loss = torch.nn.functional.mse_loss(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        if "scaler" in ctx.source.lower() or _scales_elsewhere(ctx.module):
            return  # a scaler is built or handed in, or a library scales the loss
        loops = analyze(ctx)
        tracker = loops.values
        training = [u.node for u in loops.units if u.of(BACKWARD)]
        for node in tracker.walk(ctx.module):
            if not isinstance(node, cst.With):
                continue
            for item in node.items:
                if not _fp16_autocast(ctx, item.item):
                    continue
                unit = tracker.enclosing(node, cst.For | cst.While | cst.FunctionDef)
                if unit in training and not tracker.grad_disabled(node, callers=False):
                    yield ctx.report(self, item.item)


def _scales_elsewhere(module: cst.Module) -> bool:
    """Whether the file imports a library that scales the loss itself."""
    for statement in module.body:
        if not isinstance(statement, cst.SimpleStatementLine):
            continue
        for small in statement.body:
            if isinstance(small, cst.Import):
                roots = {module.code_for_node(a.name).split(".")[0] for a in small.names}
            elif isinstance(small, cst.ImportFrom) and small.module is not None:
                roots = {module.code_for_node(small.module).split(".")[0]}
            else:
                continue
            if roots & set(_SCALING):
                return True
    return False


def _fp16_autocast(ctx, expr: cst.BaseExpression) -> bool:
    """Whether `expr` is an autocast that certainly casts to float16 on CUDA."""
    if not isinstance(expr, cst.Call):
        return False
    names = ctx.qualified_name_strings(expr.func)
    cuda_only = any(q in _CUDA_AUTOCAST for q in names)
    if not cuda_only and not any(q in _AUTOCAST for q in names):
        return False
    keywords = {a.keyword.value: a.value for a in expr.args if a.keyword is not None}
    positional = [a.value for a in expr.args if a.keyword is None]
    if any(a.star for a in expr.args) or is_name(keywords.get("enabled"), "False"):
        return False
    if not cuda_only:
        device = keywords.get("device_type", positional[0] if positional else None)
        if not (isinstance(device, cst.SimpleString) and device.value in ('"cuda"', "'cuda'")):
            return False
    dtype = keywords.get("dtype", positional[1] if len(positional) > 1 and not cuda_only else None)
    if dtype is None:
        return True
    return bool(ctx.qualified_name_strings(dtype) & set(_FP16))

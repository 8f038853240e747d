"""What the report and `--stats` show: the inputs, each layer, and a short training run.

`collect(ctx)` measures on copies of the user's model, as the checks do, and
returns plain data (numbers, lists, strings) that crosses a process boundary
and renders without torch:

* `inputs`: per input tensor its shape, dtype, range, mean, std, NaN/Inf counts,
  per-channel mean/std for images, and the first images themselves;
* `labels`: the histogram of integer targets beside the model's number of outputs;
* `layers`: per leaf module, in forward order, after one real optimizer step of a
  copy: activation mean/std, dead and saturated fractions, weight norm, gradient
  mean/max/norm and the update/weight ratio (about 1e-3 is healthy);
* `overfit`: the loss over a few steps on the one batch, with the target line
  the cannot-overfit check uses; `init_loss` against its expected value.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from nnlint.dynamic.context import DynamicContext, reseed
from nnlint.setup.preserve import preserved
from nnlint.setup.tensors import input_names, main_output

OVERFIT_STEPS = 40
MAX_IMAGES = 16
MAX_CLASSES = 200
_SATURATING = (torch.nn.Tanh, torch.nn.Sigmoid, torch.nn.Hardtanh, torch.nn.Softsign)


def collect(ctx: DynamicContext, overfit_steps: int = OVERFIT_STEPS) -> dict[str, Any]:
    """Everything the report draws; a part that cannot be measured is left out, with why."""
    stats: dict[str, Any] = {"inputs": _inputs(ctx), "missing": {}}
    with preserved(ctx.model):
        for key, part in (("labels", _labels), ("layers", _layers), ("overfit", _overfit)):
            try:
                reseed()
                stats[key] = part(ctx) if key != "overfit" else part(ctx, overfit_steps)
            except Exception as exc:  # the report shows what it could not measure, and why
                stats["missing"][key] = f"{type(exc).__name__}: {exc}"
    return stats


def _float(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _inputs(ctx: DynamicContext) -> list[dict[str, Any]]:
    found = []
    for key, name in input_names(ctx.args, ctx.kwargs):
        x = ctx.args[key] if isinstance(key, int) else ctx.kwargs[key]
        entry: dict[str, Any] = {"name": name, "shape": list(x.shape), "dtype": str(x.dtype)}
        values = x.detach().float()
        finite = values[torch.isfinite(values)]
        entry["nan"] = int(torch.isnan(values).sum())
        entry["inf"] = int(torch.isinf(values).sum())
        if finite.numel():
            entry.update(
                min=_float(finite.min()),
                max=_float(finite.max()),
                mean=_float(finite.mean()),
                std=_float(finite.std()) if finite.numel() > 1 else 0.0,
            )
        if x.is_floating_point() and x.dim() == 4 and x.shape[1] in (1, 3):
            per = values.transpose(0, 1).reshape(x.shape[1], -1)
            entry["channels"] = [
                {"mean": _float(c.mean()), "std": _float(c.std())} for c in per.unbind(0)
            ]
            entry["images"] = [_image(img) for img in values[:MAX_IMAGES]]
        found.append(entry)
    return found


def _image(img: torch.Tensor) -> list:
    """One image scaled to [0, 1] for display, as nested lists (H, W) or (H, W, 3)."""
    low, high = float(img.min()), float(img.max())
    scaled = (img - low) / (high - low) if high > low else torch.zeros_like(img)
    scaled = scaled.nan_to_num(0.0)
    if scaled.shape[0] == 1:
        return [[round(float(v), 3) for v in row] for row in scaled[0]]
    return [[[round(float(v), 3) for v in px] for px in row] for row in scaled.permute(1, 2, 0)]


def _outputs(ctx: DynamicContext) -> int | None:
    """The model's number of outputs (classes), from the shared forward's output."""
    out = main_output(ctx.passes().output)
    if out is None or out.dim() < 2 or not out.is_floating_point():
        return None
    return int(out.shape[-1] if ctx.loss is None or ctx.loss.name == "model" else out.shape[1])


def _labels(ctx: DynamicContext) -> dict[str, Any] | None:
    target = ctx.loss.target if ctx.loss is not None else None
    if not isinstance(target, torch.Tensor) or target.is_floating_point():
        return None
    kept = target[target >= 0].flatten()
    if not kept.numel():
        return None
    top = int(kept.max()) + 1
    outputs = _outputs(ctx)
    width = min(max(top, outputs or 0), MAX_CLASSES)
    counts = torch.bincount(kept.clamp_max(width - 1), minlength=width)
    return {"counts": counts.tolist(), "outputs": outputs, "synthesized": ctx.loss.synthesized}


def _layers(ctx: DynamicContext) -> list[dict[str, Any]]:
    """One real optimizer step of a copy, watched per leaf module."""
    if ctx.loss is None:
        raise ValueError("no loss: pass loss_fn, --loss or --task")
    model = ctx.fresh(train=True)
    rows: dict[str, dict[str, Any]] = {}
    names = {m: n for n, m in model.named_modules()}

    def watch(module: Any, _inputs: Any, output: Any) -> None:
        out = main_output(output)
        name = names[module]
        if out is None or not out.is_floating_point() or name in rows:
            return
        act = out.detach().float()
        row = rows[name] = {"name": name, "type": type(module).__name__}
        row["act_mean"], row["act_std"] = _float(act.mean()), _float(act.std())
        row["dead"] = _float((act == 0).float().mean())
        if isinstance(module, _SATURATING):
            row["saturated"] = _float((act.abs() > 0.99 * act.abs().max()).float().mean())

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(watch) for m in leaves]
    try:
        loss = ctx.loss_of(ctx.run(model))
    finally:
        for handle in handles:
            handle.remove()
    if not loss.requires_grad:
        raise ValueError("the loss does not depend on any parameter")
    optimizer, _, _ = ctx.optimizer_for(model)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer.step()
    for name, param in model.named_parameters():
        module, _, leaf = name.rpartition(".")
        row = rows.get(module)
        if row is None or leaf != "weight" or name not in before:
            continue
        weight = before[name]
        grad = param.grad
        row["weight_norm"] = _float(weight.norm())
        if grad is not None:
            g = grad.detach().abs()
            row.update(grad_mean=_float(g.mean()), grad_max=_float(g.max()))
            row["grad_norm"] = _float(grad.norm())
        update = (param.detach() - weight).norm()
        if float(weight.norm()) > 0:
            row["update_ratio"] = _float(update / weight.norm())
    order = [n for n, m in model.named_modules() if m in leaves]
    return [rows[n] for n in order if n in rows]


def _overfit(ctx: DynamicContext, steps: int) -> dict[str, Any]:
    if ctx.loss is None:
        raise ValueError("no loss: pass loss_fn, --loss or --task")
    done = ctx.measured.get("overfit")
    if done is not None and done["losses"]:  # cannot-overfit's own run, to its target
        _, described, _ = ctx.optimizer_for(ctx.model)
        losses = [_float(v) for v in done["losses"]]
        return {
            "losses": losses,
            "target": _float(done["target"]),
            "optimizer": described,
            "samples": done["samples"],
            "init": _init(ctx, _init_loss(ctx)),
        }
    model = ctx.fresh(train=True, dropout=False)
    optimizer, described, _ = ctx.optimizer_for(model)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = ctx.loss_of(ctx.run(model))
        value = _float(loss.detach())
        losses.append(value)
        if value is None or not loss.requires_grad:
            break
        loss.backward()
        optimizer.step()
    start = losses[0] if losses else None
    target = 0.5 * start if start is not None else None  # cannot-overfit's default target
    return {"losses": losses, "target": target, "optimizer": described, "init": _init(ctx, start)}


def _init_loss(ctx: DynamicContext) -> float | None:
    """The loss at init on the whole batch, from the shared forward the checks made."""
    loss = ctx.passes().loss
    return loss if loss is not None and math.isfinite(loss) else None


def _init(ctx: DynamicContext, measured: float | None) -> dict[str, Any] | None:
    """The loss at init against ln(classes) for cross-entropy over near-uniform predictions."""
    if measured is None or ctx.loss is None or ctx.loss.name != "cross_entropy":
        return None
    outputs = _outputs(ctx)
    if not outputs or outputs < 2:
        return None
    return {"measured": measured, "expected": math.log(outputs), "classes": outputs}

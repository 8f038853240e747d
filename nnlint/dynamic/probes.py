"""Tensor plumbing for the dynamic checks: subsets, perturbations, losses, recordings.

Imported only once torch is: the dynamic phase and its rules call in here. The
basic plumbing shared with the setup (the main output, tensor flattening, the
inputs of a batch) lives in `nnlint.setup.tensors` and is re-exported here, so
a rule needs one import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from nnlint.setup.specs import LossSpec
from nnlint.setup.tensors import (
    batch_size,
    get_input,
    input_names,
    main_output,
    map_tensors,
    primary_key,
    tensors,
    with_input,
)

__all__ = [
    "batch_size",
    "get_input",
    "input_names",
    "main_output",
    "map_tensors",
    "primary_key",
    "tensors",
    "with_input",
]

ACTIVATIONS = ("relu", "relu6", "sigmoid", "tanh")


def take(obj: Any, n: int, index: Any) -> Any:
    """Rows `index` of every tensor whose first dimension is the batch size `n`."""
    return map_tensors(obj, lambda t: t[index] if t.dim() and t.shape[0] == n else t)


def repeat(obj: Any, n: int, times: int) -> Any:
    """Every batch tensor stacked `times` times along the batch dimension."""
    return map_tensors(obj, lambda t: torch.cat([t] * times) if t.dim() and t.shape[0] == n else t)


def random_like(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """New values of the same kind: tokens from the batch's range, or noise of its scale."""
    if x.is_floating_point():
        scale = x.float().std().item() if x.numel() > 1 else 1.0
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float32) * (scale or 1.0)
        return (noise + x.float().mean()).to(x.dtype).to(x.device)
    if x.dtype == torch.bool:
        return torch.randint(0, 2, x.shape, generator=generator).bool().to(x.device)
    low, high = int(x.min()), int(x.max())
    if high <= low:
        high = low + 1
    values = torch.randint(low, high + 1, x.shape, generator=generator, dtype=torch.int64)
    return values.to(x.dtype).to(x.device)


def perturb_sample(x: torch.Tensor, generator: torch.Generator, sample: int = 0) -> torch.Tensor:
    """`x` with only row `sample` replaced by new values that differ from the old."""
    new = x.clone()
    fresh = random_like(x[sample], generator)
    if not x.is_floating_point():
        same = fresh == x[sample]
        fresh[same] = torch.where(x[sample][same] == x.min(), x.max(), x.min()).to(x.dtype)
    new[sample] = fresh
    return new


def differs(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-5) -> float:
    """Largest difference of `a` and `b` relative to their scale; 0.0 when identical."""
    a, b = a.detach().double(), b.detach().double()
    finite = torch.isfinite(a) & torch.isfinite(b)
    diff = (a - b).abs()[finite]
    if diff.numel() == 0:
        return 0.0
    scale = max(a[finite].abs().max().item(), 1e-12)
    value = diff.max().item() / scale
    return value if value > rtol else 0.0


def fit_to(output: torch.Tensor, shape: tuple | None) -> torch.Tensor:
    """Map the model output onto the shape the script gave its loss."""
    if shape is None or tuple(output.shape) == tuple(shape):
        return output
    if output.numel() == _numel(shape) and shape and output.shape[-1] == shape[-1]:
        return output.reshape(-1, *shape[1:]) if len(shape) > 1 else output.reshape(-1)
    if output.dim() >= 3 and tuple(output.transpose(1, -1).shape) == tuple(shape):
        return output.transpose(1, -1)
    shifted = output[:, :-1] if output.dim() >= 3 else None
    if shifted is not None and shifted.numel() == _numel(shape) and shape[-1] == output.shape[-1]:
        return shifted.reshape(-1, *shape[1:])
    return output.reshape(-1, *shape[1:]) if output.numel() == _numel(shape) else output


def _numel(shape: tuple) -> int:
    total = 1
    for d in shape:
        total *= d
    return total


def loss_target(loss: LossSpec, n: int, index: Any = None, times: int = 1) -> Any:
    """The loss target for a subset (`index`) or a replication (`times`) of the batch."""
    target = loss.target
    if not isinstance(target, torch.Tensor) or target.dim() == 0:
        return target
    per = target.reshape(n, -1) if target.shape[0] != n and target.numel() % n == 0 else target
    if index is not None:
        per = per[index]
    if times > 1:
        per = torch.cat([per] * times)
    return per.reshape(-1, *target.shape[1:]) if per is not target and target.shape[0] != n else per


def compute_loss(
    loss: LossSpec, out: Any, n: int, index: Any = None, times: int = 1
) -> torch.Tensor:
    """The loss of a forward over the batch, a subset of it or a replication of it."""
    if loss.name == "model":
        value = getattr(out, "loss", None)
        if value is None and isinstance(out, dict):
            value = out.get("loss")
        if not isinstance(value, torch.Tensor):
            raise ValueError("the model returned no `.loss` for the given labels")
        return value
    target = loss_target(loss, n, index, times)
    if loss.name == "custom":
        # The user's own loss reads the output as their script hands it over: a
        # ModelOutput, a dict or a tuple, not only its main tensor.
        return loss.fn(out, target)
    output = main_output(out)
    shape = loss.input_shape
    m = output.shape[0]
    if shape and m != n and shape[0] % n == 0:
        shape = (shape[0] // n * m, *shape[1:])
    logits = fit_to(output, shape)
    return getattr(F, loss.name)(logits, target, **loss.kwargs)


def class_probabilities(loss: LossSpec, out: Any) -> torch.Tensor | None:
    """Predicted class probabilities, one row per labelled position (classification only)."""
    if not loss.classification:
        return None
    logits = main_output(out)
    if logits is None or not logits.is_floating_point() or logits.dim() < 2:
        return None
    if loss.name != "model":
        logits = fit_to(logits, loss.input_shape).movedim(1, -1)
    rows = logits.detach().reshape(-1, logits.shape[-1]).float()
    if loss.name == "nll_loss":
        return rows.exp()
    return rows.softmax(-1)


def labels(loss: LossSpec) -> torch.Tensor | None:
    """The integer class labels of the batch, with ignored positions dropped."""
    target = loss.target
    if not isinstance(target, torch.Tensor) or target.is_floating_point():
        return None
    flat = target.reshape(-1)
    return flat[flat != loss.kwargs.get("ignore_index", -100)]


class Recorder:
    """Forward hooks that keep each module's main output, in the order modules finish."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.names = {m: n for n, m in model.named_modules()}
        self.outputs: list[tuple[str, torch.Tensor]] = []
        self.handles = [m.register_forward_hook(self._hook) for m in model.modules()]

    def _hook(self, module: Any, _inputs: Any, output: Any) -> None:
        tensor = main_output(output)
        if isinstance(tensor, torch.Tensor):
            self.outputs.append((self.names[module], tensor.detach()))

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def record(
    model: torch.nn.Module, run: Callable[[], Any]
) -> tuple[Any, list[tuple[str, torch.Tensor]]]:
    recorder = Recorder(model)
    try:
        out = run()
    finally:
        recorder.close()
    return out, recorder.outputs


def first_difference(a: list, b: list, rows: Any = None, rtol: float = 1e-5) -> str | None:
    """The first module (in finishing order) whose outputs differ between two recorded runs."""
    for (name, x), (_, y) in zip(a, b, strict=False):
        if x.shape != y.shape:
            continue
        if rows is not None:
            if not x.dim() or x.shape[0] <= 1:
                continue
            x, y = x[rows], y[rows]
        if differs(x, y, rtol):
            return name
    return None

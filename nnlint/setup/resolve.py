"""From what the user gave (or the training script showed) to a `Setup` the checks replay.

`resolve(...)` settles the loss, the targets, the task and the optimizer:
the training script's loss, a given `loss_fn` or `--loss` wins; HF-style
models given `labels` use their own `.loss`; otherwise the loss is inferred
from the target and the output (class indices -> cross-entropy, same-shaped
floats -> MSE), and without a target from the task (`nnlint.setup.task`) with
synthesized targets that fit the output. With neither a target nor a task the
loss is a guess, and says so (`LossSpec.guessed`). Each loss records what
chose it (`origin`), for `--verbose` and the JSON summary.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from nnlint.setup import tensors
from nnlint.setup.specs import (
    CLASSIFICATION_LOSSES,
    LossSpec,
    OptimizerSpec,
    Setup,
    default_optimizer,
    loss_from_callable,
    loss_from_spec,
    unwrap_optimizer,
)
from nnlint.setup.task import IGNORE_INDEX, infer_task, next_token_labels


def _output(model: Any, args: tuple, kwargs: dict) -> Any:
    model = _copy(model)
    with torch.no_grad():
        return model(*args, **kwargs)


def _copy(model: Any) -> Any:
    import copy

    clone = copy.deepcopy(model)
    clone.eval()
    return clone


def _fit_known(loss: LossSpec, logits: torch.Tensor | None) -> LossSpec:
    """Sequence logits (N, T, C) with targets (N, T), flattened (N*T,) or sliced to the
    next tokens (N, T-1): map both as the training loop does, flattened."""
    target = loss.target
    if not (
        loss.input_shape is None
        and isinstance(logits, torch.Tensor)
        and isinstance(target, torch.Tensor)
        and loss.name in ("cross_entropy", "nll_loss")
        and logits.dim() == 3
        and target.dim() in (1, 2)
        and target.shape[0] in (logits.shape[0], target.numel())
    ):
        return loss
    n, t, classes = logits.shape
    for positions in (t, t - 1):  # every position, or all but the last (sliced targets)
        if target.numel() == n * positions and (target.dim() == 1 or target.shape[1] == positions):
            loss.input_shape = (n * positions, classes)
            loss.target = target.reshape(-1)
            break
    return loss


def infer_loss(
    logits: Any,
    target: Any,
    args: tuple,
    kwargs: dict,
    task: str | None,
    generator: torch.Generator,
) -> LossSpec | None:
    """A loss for the output: from the target when there is one, else from the task;
    a guess (`origin` "guessed") when neither says."""
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        return None
    if isinstance(target, torch.Tensor):
        if not target.is_floating_point() and logits.dim() >= 2:
            spec = LossSpec("cross_entropy", target=target, origin="the batch's class targets")
            return _fit_known(spec, logits)
        if target.is_floating_point() and target.shape == logits.shape:
            return LossSpec("mse_loss", target=target, origin="the batch's float targets")
        return None
    origin = "guessed" if task is None else f"the task {task}"
    for name in ("cross_entropy", "mse_loss"):
        spec = LossSpec(name, origin=origin)
        spec.target, spec.synthesized = synthesized_target(
            spec, logits, args, kwargs, task, generator
        )
        if spec.target is not None:
            return _fit_known(spec, logits)
    return None


def synthesized_target(
    loss: LossSpec,
    logits: Any,
    args: tuple,
    kwargs: dict,
    task: str | None,
    generator: torch.Generator,
) -> tuple[Any, bool]:
    """A target for `loss` when the batch has none, and whether it is made up (random)
    rather than read from the input (next tokens). Class labels lie in the output's
    range and leave positions out with the loss's own `ignore_index`."""
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        return None, False
    if loss.name in CLASSIFICATION_LOSSES:
        if task in ("causal-lm", None):
            ignore = loss.kwargs.get("ignore_index", IGNORE_INDEX)
            labels = next_token_labels(args, kwargs, logits, ignore)
            if labels is not None:
                return labels, False
        if task in ("classification", None) and logits.dim() == 2 and logits.shape[1] > 1:
            n, classes = logits.shape
            labels = torch.randint(0, classes, (n,), generator=generator)
            return labels.to(logits.device), True
        return None, False
    if loss.name in CLASSIFICATION_LOSSES + ("model", "custom") or task not in ("regression", None):
        return None, False
    if loss.name.startswith("binary_cross_entropy"):
        values = torch.randint(0, 2, logits.shape, generator=generator).to(logits.dtype)
    else:
        values = torch.randn(logits.shape, generator=generator).to(logits.dtype)
    return values.to(logits.device), True


def resolve(
    model: Any,
    args: tuple,
    kwargs: dict,
    target: Any = None,
    loss_fn: Any = None,
    optimizer: Any = None,
    settings: Any = None,
    loss: LossSpec | None = None,
) -> Setup:
    """The `Setup` for a model, its inputs and whatever the user said about training."""
    given_task = getattr(settings, "task", None)
    out = _output(model, args, kwargs)
    logits = tensors.main_output(out)
    if loss is not None:
        loss.origin = loss.origin or "the training script"
    elif isinstance(loss_fn, LossSpec):  # a framework's loss, as an integration read it
        loss = loss_fn
        loss.target = target if loss.target is None else loss.target
        loss.origin = loss.origin or "the loss given"
    elif loss_fn is not None:
        loss = loss_from_callable(loss_fn)
        loss.target, loss.origin = target, "the loss_fn given"
    elif getattr(settings, "loss", None):
        loss = loss_from_spec(settings.loss)
        loss.target, loss.origin = target, "--loss"
    elif "labels" in kwargs and isinstance(getattr(out, "loss", None), torch.Tensor):
        loss = LossSpec("model", target=kwargs["labels"], origin="the model's own loss on `labels`")
    labels = loss.target if loss is not None else target
    task, source = infer_task(
        model, args, kwargs, labels, given_task, loss is not None and loss.name == "model"
    )
    generator = torch.Generator().manual_seed(0)
    if loss is not None and loss.name != "model":
        if loss.target is None:
            loss.target, loss.synthesized = synthesized_target(
                loss, logits, args, kwargs, task, generator
            )
        loss = _fit_known(loss, logits)
    if loss is None:
        loss = infer_loss(logits, target, args, kwargs, task, generator)
    setup = Setup(model, args, kwargs, loss, None, task, source)
    setup.optimizer = _optimizer(model, optimizer, settings)
    return setup


def _optimizer(model: Any, optimizer: Any, settings: Any) -> OptimizerSpec | None:
    """The user's optimizer as a spec; None when nnlint has to pick one (Adam by default)."""
    if optimizer is None:
        return None
    optimizer = unwrap_optimizer(optimizer)
    if isinstance(optimizer, OptimizerSpec):
        return optimizer
    if isinstance(optimizer, torch.optim.Optimizer):
        return OptimizerSpec.from_optimizer(optimizer, model)
    if inspect.isclass(optimizer) and issubclass(optimizer, torch.optim.Optimizer):
        return OptimizerSpec.from_optimizer(optimizer(model.parameters()), model)
    if callable(optimizer):
        return OptimizerSpec.from_optimizer(optimizer(model.parameters()), model)
    raise TypeError(
        f"optimizer must be a torch.optim.Optimizer, class or factory, not {type(optimizer).__name__}"
    )


def training_optimizer(setup: Setup, settings: Any = None) -> tuple[OptimizerSpec, bool]:
    """The optimizer to train with and whether it is the user's own."""
    if setup.optimizer is not None:
        return setup.optimizer, True
    return default_optimizer(setup.model, getattr(settings, "optimizer", None)), False

"""From what the user gave (or the training script showed) to a `Setup` the checks replay.

`resolve(...)` settles the loss, the targets, the task and the optimizer:
a given `loss_fn` or `--loss` wins; HF-style models given `labels` use their
own `.loss`; otherwise the loss is inferred from the target and the output
(class indices -> cross-entropy, same-shaped floats -> MSE), and without a
target from `--task` with synthesized labels.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from nnlint.setup import tensors
from nnlint.setup.specs import (
    LossSpec,
    OptimizerSpec,
    Setup,
    default_optimizer,
    loss_from_callable,
    loss_from_spec,
    unwrap_optimizer,
)

TASKS = ("classification", "causal-lm", "regression")
_CAUSAL_CLASS_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def declared_task(
    model: Any, args: tuple, kwargs: dict, target: Any, task: str | None
) -> str | None:
    """The task when something says it: `--task`, an HF causal-LM class, or next-token targets."""
    if task:
        return task
    config = getattr(model, "config", None)
    if type(model).__name__.endswith(_CAUSAL_CLASS_SUFFIXES) or getattr(
        config, "is_decoder", False
    ):
        return "causal-lm"
    key = tensors.primary_key(args, kwargs)
    x = tensors.get_input(args, kwargs, key) if key is not None else None
    if (
        isinstance(x, torch.Tensor)
        and isinstance(target, torch.Tensor)
        and not x.is_floating_point()
        and x.dim() == 2
        and x.shape[1] > 1
    ):
        return "causal-lm" if _next_tokens(x, target) else None
    return None


def _next_tokens(x: torch.Tensor, target: torch.Tensor) -> bool:
    """Whether `target` is `x` shifted by one token: (N, T) with the last position
    free, or sliced to (N, T-1); either one flattened as loss calls do."""
    n, t = x.shape
    for shape in ((n, t), (n, t - 1)):
        if target.numel() != n * shape[1]:
            continue
        shifted = target.reshape(shape)[:, : t - 1]
        if torch.equal(shifted, x[:, 1:]):
            return True
    return False


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
    """Sequence logits (N, T, C) with targets (N, T): flatten both, as training loops do."""
    target = loss.target
    if (
        loss.input_shape is None
        and isinstance(logits, torch.Tensor)
        and isinstance(target, torch.Tensor)
        and loss.name in ("cross_entropy", "nll_loss")
        and logits.dim() == 3
        and target.dim() == 2
        and tuple(target.shape) == tuple(logits.shape[:2])
    ):
        loss.input_shape = (logits.shape[0] * logits.shape[1], logits.shape[2])
        loss.target = target.reshape(-1)
    return loss


def infer_loss(
    logits: Any,
    target: Any,
    args: tuple,
    kwargs: dict,
    task: str | None,
    generator: torch.Generator,
) -> LossSpec | None:
    """A loss for the output: from the target when there is one, else from the task."""
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        return None
    if isinstance(target, torch.Tensor):
        if not target.is_floating_point() and logits.dim() >= 2:
            return _fit_known(LossSpec("cross_entropy", target=target), logits)
        if target.is_floating_point() and target.shape == logits.shape:
            return LossSpec("mse_loss", target=target)
        return None
    n = logits.shape[0]
    if task == "causal-lm" or (task is None and logits.dim() == 3):
        key = tensors.primary_key(args, kwargs)
        x = tensors.get_input(args, kwargs, key) if key is not None else None
        if (
            isinstance(x, torch.Tensor)
            and x.dim() == 2
            and not x.is_floating_point()
            and logits.dim() == 3
        ):
            labels = torch.cat([x[:, 1:], torch.full_like(x[:, :1], -100)], dim=1)
            return _fit_known(LossSpec("cross_entropy", target=labels), logits)
    if task in ("classification", None) and logits.dim() == 2 and logits.shape[1] > 1:
        labels = torch.randint(0, logits.shape[1], (n,), generator=generator).to(logits.device)
        return LossSpec("cross_entropy", target=labels, synthesized=True)
    if task in ("regression", None):
        noise = torch.randn(logits.shape, generator=generator).to(logits.device, logits.dtype)
        return LossSpec("mse_loss", target=noise, synthesized=True)
    return None


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
    task = getattr(settings, "task", None)
    out = _output(model, args, kwargs)
    logits = tensors.main_output(out)
    if loss is None and loss_fn is not None:
        loss = loss_from_callable(loss_fn)
        loss.target = target
    elif loss is None and getattr(settings, "loss", None):
        loss = loss_from_spec(settings.loss)
        loss.target = target
    elif (
        loss is None and "labels" in kwargs and isinstance(getattr(out, "loss", None), torch.Tensor)
    ):
        loss = LossSpec("model", target=kwargs["labels"])
    if loss is not None and loss.name != "model":
        loss = _fit_known(loss, logits)
    if loss is None:
        loss = infer_loss(logits, target, args, kwargs, task, torch.Generator().manual_seed(0))
    labels_for_task = loss.target if loss is not None else target
    setup = Setup(
        model, args, kwargs, loss, None, declared_task(model, args, kwargs, labels_for_task, task)
    )
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

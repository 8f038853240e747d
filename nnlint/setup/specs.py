"""The training setup the dynamic checks replay: inputs, loss and optimizer.

It comes from the training script (`nnlint.capture`), from `nnlint.check(...)`
arguments, or from `--task`/`--loss`/`--optimizer` when neither says. Everything
here is rebuilt on a fresh copy of the model, so no check touches the user's objects.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# torch.nn.functional losses nnlint knows how to replay, by name.
KNOWN_LOSSES = (
    "cross_entropy",
    "nll_loss",
    "mse_loss",
    "l1_loss",
    "smooth_l1_loss",
    "huber_loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
)
CLASSIFICATION_LOSSES = ("cross_entropy", "nll_loss")
_MODULE_LOSSES = {
    "CrossEntropyLoss": "cross_entropy",
    "NLLLoss": "nll_loss",
    "MSELoss": "mse_loss",
    "L1Loss": "l1_loss",
    "SmoothL1Loss": "smooth_l1_loss",
    "HuberLoss": "huber_loss",
    "BCELoss": "binary_cross_entropy",
    "BCEWithLogitsLoss": "binary_cross_entropy_with_logits",
}
_MODULE_LOSS_ATTRS = (
    "ignore_index",
    "label_smoothing",
    "reduction",
    "delta",
    "beta",
    "pos_weight",
    "weight",
)


@dataclass
class LossSpec:
    """How the loss is computed from the model's (main) output.

    `name` is a torch.nn.functional loss, "model" for HF-style models that
    return `.loss` when given `labels`, or "custom" for any other callable
    `fn(output, target)`, handed the output as the model returned it (a
    tensor, a tuple, a dict, an HF `ModelOutput`). `input_shape` is the shape the script passed as the
    loss input, so the output can be mapped onto it again (flattened LM logits).
    """

    name: str
    kwargs: dict = field(default_factory=dict)
    target: Any = None
    fn: Callable | None = None
    input_shape: tuple | None = None
    site: tuple[str, int] | None = None
    synthesized: bool = False
    origin: str = ""  # what chose it, in words: "the training script", "--loss", "guessed"
    computes: str | None = None  # the functional loss a "model" loss applies, for graph rules

    @property
    def guessed(self) -> bool:
        """Whether nnlint picked the loss with nothing to go by (no target, no task)."""
        return self.origin == "guessed"

    @property
    def classification(self) -> bool:
        return self.name in CLASSIFICATION_LOSSES or self.name == "model"

    def describe(self) -> str:
        if self.name in ("model", "custom"):
            return "the model's own loss" if self.name == "model" else "the custom loss"
        args = ", ".join(f"{k}={v!r}" for k, v in sorted(self.kwargs.items()) if not _is_tensor(v))
        return f"{self.name}({args})" if args else self.name


@dataclass
class OptimizerSpec:
    """An optimizer's type and hyperparameters, per group of parameter names."""

    cls: type
    groups: list[tuple[list[str], dict]]
    site: tuple[str, int] | None = None

    @property
    def held(self) -> set[str]:
        return {name for names, _ in self.groups for name in names}

    @property
    def lr(self) -> float | None:
        return self.groups[0][1].get("lr") if self.groups else None

    def describe(self) -> str:
        lr = self.lr
        return (
            f"{self.cls.__name__}(lr={lr:g})" if isinstance(lr, float | int) else self.cls.__name__
        )

    def build(self, model: Any) -> Any:
        """The same optimizer on `model` (a copy): groups are matched by parameter name.

        Where torch has a fused implementation of the same algorithm (Adam, AdamW,
        SGD, Adagrad on CPU and CUDA) and the user left the choice to torch, the
        copy uses it: the same update, in one kernel instead of a Python loop
        over the parameters, a third faster per step on small models.
        """
        params = dict(model.named_parameters())
        groups = [
            {"params": [params[n] for n in names if n in params], **options}
            for names, options in self.groups
        ]
        groups = [g for g in groups if g["params"]]
        if _can_fuse(self.cls, groups):
            try:
                return self.cls([{**g, "fused": True} for g in groups])
            except (RuntimeError, ValueError, TypeError):
                pass  # this torch, device or dtype has no fused kernel
        return self.cls(groups)

    @classmethod
    def from_optimizer(
        cls, optimizer: Any, model: Any, site: tuple[str, int] | None = None
    ) -> OptimizerSpec:
        optimizer = unwrap_optimizer(optimizer)
        names = {id(p): n for n, p in model.named_parameters()}
        groups = []
        for group in optimizer.param_groups:
            options = {k: v for k, v in group.items() if k != "params" and not _is_tensor(v)}
            groups.append(([names[id(p)] for p in group["params"] if id(p) in names], options))
        return cls(type(optimizer), groups, site)


def unwrap_optimizer(optimizer: Any) -> Any:
    """The torch optimizer inside a framework's wrapper (Accelerate's, the one the HF
    Trainer hands to callbacks, a scheduler-free shim): whatever holds a torch
    Optimizer as `.optimizer`. Rebuilding the wrapper's own class would fail."""
    import torch

    for _ in range(4):  # wrappers of wrappers, but never a loop
        inner = getattr(optimizer, "optimizer", None)
        if not isinstance(inner, torch.optim.Optimizer) or inner is optimizer:
            break
        optimizer = inner
    return optimizer


@dataclass
class Setup:
    """The model and how it is trained, as the dynamic checks replay it."""

    model: Any
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    loss: LossSpec | None = None
    optimizer: OptimizerSpec | None = None
    task: str | None = None
    task_source: str = ""  # what says so (`nnlint.setup.task`)
    # The batch is the user's data (the training script's, `--data`, the batch given
    # to `nnlint.check`), not inputs nnlint made up: checks that judge the data need it.
    real_batch: bool = False
    # Whether the DataLoader that gave the batch draws in random order (None: not known,
    # as for a batch handed to `nnlint.check`): one batch of one class means little
    # when it may be chance.
    shuffled: bool | None = None

    def describe(self) -> dict[str, str | None]:
        """The task and the loss the checks use, and what chose each, for `--verbose`
        and the JSON summary."""
        loss = self.loss
        return {
            "task": self.task,
            "task_from": self.task_source,
            "loss": loss.describe() if loss is not None else None,
            "loss_from": (loss.origin or None) if loss is not None else None,
        }


_FUSABLE_DTYPES = ("float16", "bfloat16", "float32", "float64")


def _can_fuse(cls: type, groups: list[dict]) -> bool:
    """Whether `cls` has a fused kernel, and every group left `fused`/`foreach` to torch
    and holds dense float tensors."""
    try:
        if "fused" not in inspect.signature(cls).parameters:
            return False
    except (TypeError, ValueError):
        return False
    for group in groups:
        if group.get("fused") is not None or group.get("foreach"):
            return False
        if group.get("differentiable") or group.get("capturable"):
            return False
        for p in group["params"]:
            if p.is_sparse or str(p.dtype).removeprefix("torch.") not in _FUSABLE_DTYPES:
                return False
            if p.device.type not in ("cpu", "cuda"):
                return False
    return True


def _is_tensor(value: Any) -> bool:
    return type(value).__name__ in ("Tensor", "Parameter")


def loss_from_callable(fn: Any) -> LossSpec:
    """A LossSpec for a `loss_fn` given to `nnlint.check`."""
    import torch

    if isinstance(fn, torch.nn.Module) and type(fn).__name__ in _MODULE_LOSSES:
        kwargs = {}
        for attr in _MODULE_LOSS_ATTRS:
            value = getattr(fn, attr, None)
            if value is not None:
                kwargs[attr] = value
        if kwargs.get("label_smoothing") == 0.0:
            kwargs.pop("label_smoothing")
        if kwargs.get("ignore_index") == -100:
            kwargs.pop("ignore_index")
        return LossSpec(_MODULE_LOSSES[type(fn).__name__], kwargs)
    name = getattr(fn, "__name__", "")
    if name in KNOWN_LOSSES and getattr(torch.nn.functional, name, None) is fn:
        return LossSpec(name)
    return LossSpec("custom", fn=fn, site=_site(fn))


def loss_from_spec(text: str) -> LossSpec:
    """`--loss module:fn` or a functional name such as `cross_entropy`."""
    if ":" not in text:
        if text not in KNOWN_LOSSES:
            raise ValueError(f"unknown loss {text!r} (known: {', '.join(KNOWN_LOSSES)})")
        return LossSpec(text)
    from nnlint.setup.load import TargetSpec, import_target

    target = import_target(TargetSpec.parse(text, "--loss"), [])
    if inspect.isclass(target):
        target = target()
    return loss_from_callable(target)


def optimizer_from_spec(text: str | None) -> tuple[type, dict]:
    """`--optimizer Adam`, `SGD:lr=0.1,momentum=0.9`; Adam(lr=3e-3) by default."""
    import torch

    if not text:
        return torch.optim.Adam, {"lr": 3e-3}
    name, _, rest = text.partition(":")
    cls = getattr(torch.optim, name, None)
    if not inspect.isclass(cls) or not issubclass(cls, torch.optim.Optimizer):
        raise ValueError(
            f"unknown optimizer {name!r}: expected a torch.optim class such as Adam or SGD"
        )
    options: dict = {}
    defaults = _defaults(cls)
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, _, value = item.partition("=")
        key, parsed = key.strip(), _value(value.strip())
        default = defaults.get(key)
        numeric = isinstance(default, int | float) and not isinstance(default, bool)
        if isinstance(parsed, str) and (numeric or key == "lr"):
            raise ValueError(f"{key}={value.strip()}: expected a number")
        options[key] = parsed
    options.setdefault("lr", 1e-3)
    return cls, options


def _defaults(cls: type) -> dict[str, Any]:
    """The optimizer's keyword defaults (lr's may be a tensor or missing)."""
    try:
        parameters = inspect.signature(cls.__init__).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def _value(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return {"true": True, "false": False}.get(text.lower(), text)


def default_optimizer(model: Any, text: str | None = None) -> OptimizerSpec:
    cls, options = optimizer_from_spec(text)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    return OptimizerSpec(cls, [(names, options)])


def _site(obj: Any) -> tuple[str, int] | None:
    try:
        return inspect.getsourcefile(obj), inspect.getsourcelines(obj)[1]
    except (OSError, TypeError):
        return None

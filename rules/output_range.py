from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import DynamicRule

_SQUASH = ("sigmoid", "softmax")
# Ops that move values around without changing them: a probability stays one.
_SHAPE_OPS = frozenset(
    "view reshape squeeze unsqueeze flatten permute transpose contiguous clone to float "
    "double half bfloat16 __getitem__ select narrow view_as reshape_as detach".split()
)


class OutputRange(DynamicRule):
    """Probabilities outside [0, 1] fed to BCE or NLL, or a sigmoid/softmax applied twice.

    ## What it does
    Runs one forward of the batch and the loss, watching the torch calls:

    * `binary_cross_entropy` (`nn.BCELoss`) given values outside [0, 1], raw
      logits rather than probabilities (torch raises, with no word about why);
    * `nll_loss` (`nn.NLLLoss`) given positive values: raw scores or
      probabilities, not log-probabilities (it trains silently, towards
      infinite scores);
    * `sigmoid` or `softmax` (or `log_softmax`) applied to what a sigmoid or
      softmax just made, in the forward or in the loss.

    A loss replayed from the training script is judged only by the forward: the
    script's own ops between the model and the loss are not replayed.

    ## Why is this bad?
    A second sigmoid squeezes every probability into [0.5, 0.73], a second
    softmax flattens the distribution towards uniform: the model can no longer
    say anything confidently and its gradients shrink. `nll_loss` on raw scores
    is minimised by making the true class's score infinite, not by learning.

    ## Example
    ```python
    self.head = nn.Sequential(nn.Linear(64, 1), nn.Sigmoid())
    loss = F.binary_cross_entropy(torch.sigmoid(model(x)), y)
    ```

    ## Use instead
    ```python
    self.head = nn.Linear(64, 1)                              # logits
    loss = F.binary_cross_entropy_with_logits(model(x), y)
    ```
    """

    code = "NN318"
    name = "output-range"
    message = "{what}; {hint}"
    severity = Severity.ERROR
    needs_finite = False  # what it watches is wrong whatever the values
    explains_failure = True  # binary_cross_entropy raises on values outside [0, 1]

    valid = (
        """
import torch
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
batch = (torch.randn(16, 8), torch.randint(0, 2, (16, 1)).float())
loss_fn = torch.nn.BCEWithLogitsLoss()
""",
        """
import torch
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4),
                            torch.nn.LogSoftmax(dim=1))
batch = (torch.randn(16, 8), torch.randint(0, 4, (16,)))
loss_fn = torch.nn.NLLLoss()
""",
    )
    invalid = (
        """
import torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
batch = (torch.randn(16, 8), torch.randint(0, 2, (16, 4)).float())
loss_fn = torch.nn.BCELoss()  # the model returns logits
""",
        """
import torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
batch = (torch.randn(16, 8), torch.randint(0, 4, (16,)))
loss_fn = torch.nn.NLLLoss()  # the model returns logits, not log_softmax
""",
        """
import torch
import torch.nn.functional as F
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1),
                            torch.nn.Sigmoid())

def loss_fn(out, y):
    return F.binary_cross_entropy(torch.sigmoid(out), y)

batch = (torch.randn(16, 8), torch.randint(0, 2, (16, 1)).float())
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        import torch

        from nnlint.dynamic.context import Skip

        replayed = ctx.loss is not None and ctx.loss.origin == "the training script"
        model = ctx.fresh(train=False)
        watch = _Watch(judge_losses=not replayed)
        inside = [False]
        handles = (
            model.register_forward_pre_hook(lambda *_: inside.__setitem__(0, True)),
            model.register_forward_hook(lambda *_: inside.__setitem__(0, False)),
        )
        watch.inside = inside
        try:
            with torch.no_grad(), watch:
                out = ctx.run(model)
                if ctx.loss is not None and not ctx.loss.synthesized:
                    ctx.loss_of(out)
        except Exception:
            if not watch.found:
                raise Skip("the forward or the loss raised before any finding") from None
        finally:
            for handle in handles:
                handle.remove()
        softmax_rule = {"softmax-output", "NN102"} & ctx.selected
        for kind, what, hint, site, in_model in watch.found:
            if kind == "nll-probabilities" and in_model and softmax_rule:
                continue  # softmax-output reports the model's softmax into NLLLoss
            path, line = site or (ctx.loss.site if ctx.loss and ctx.loss.site else ctx.locate())
            yield self.make(path, line, 1, what=what, hint=hint)
            return


class _Watch:
    """A TorchFunctionMode noting double sigmoid/softmax and out-of-range loss inputs."""

    def __init__(self, judge_losses: bool) -> None:
        self.judge_losses = judge_losses
        self.found: list[tuple[str, str, str, Any, bool]] = []
        self.made: dict[int, tuple[str, Any, bool, Any]] = {}  # id -> (op, dim, in model, tensor)
        self.inside = [False]

    def __enter__(self) -> _Watch:
        from torch.overrides import TorchFunctionMode

        watch = self

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                name = getattr(func, "__name__", "").rstrip("_")
                first = args[0] if args else kwargs.get("input")
                watch.before(name, first, args, kwargs)
                out = func(*args, **kwargs)
                watch.after(name, first, args, kwargs, out)
                return out

        self.mode = Mode()
        self.mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.mode.__exit__(*exc)

    def _site(self) -> Any:
        from nnlint.setup.sites import user_frame

        frame = user_frame(sys._getframe(4))  # the caller of __torch_function__
        return (frame.f_code.co_filename, frame.f_lineno) if frame is not None else None

    def note(self, kind: str, what: str, hint: str, in_model: bool) -> None:
        self.found.append((kind, what, hint, self._site(), in_model))

    def before(self, name: str, first: Any, args: tuple, kwargs: dict) -> None:
        import torch

        if not isinstance(first, torch.Tensor):
            return
        made = self.made.get(id(first))
        if made is not None and made[3] is first and name in (*_SQUASH, "log_softmax"):
            op, dim = made[0], made[1]
            if (
                op == "softmax"
                and name != "sigmoid"
                and not _same_dim(dim, _dim(args, kwargs), first)
            ):
                return
            self.note(
                "twice",
                f"`{name}` is applied to the output of a `{op}`",
                "apply it once: drop one of the two (a loss on logits applies its own)",
                made[2] or self.inside[0],
            )
            return
        if name not in _JUDGED or not self.judge_losses or not first.is_floating_point():
            return
        values = first.detach()
        values = values[values.isfinite()]
        if not values.numel():
            return
        low, high = float(values.min()), float(values.max())
        from nnlint.dynamic.context import rounded

        if name == "binary_cross_entropy" and (low < 0 or high > 1):
            self.note(
                "bce-logits",
                f"`binary_cross_entropy` gets values in [{rounded(low)}, {rounded(high)}], not probabilities",
                "pass the raw logits to `binary_cross_entropy_with_logits` (BCEWithLogitsLoss)",
                made is not None and made[2],
            )
        elif name == "nll_loss" and high > 1e-4:
            probabilities = made is not None and made[0] == "softmax" and low >= 0
            what = "probabilities (softmax)" if probabilities else f"values up to {rounded(high)}"
            self.note(
                "nll-probabilities" if probabilities else "nll-scores",
                f"`nll_loss` gets {what}, not log-probabilities",
                "apply `log_softmax` first, or pass the logits to `cross_entropy`",
                made is not None and made[2],
            )

    def after(self, name: str, first: Any, args: tuple, kwargs: dict, out: Any) -> None:
        import torch

        if not isinstance(out, torch.Tensor):
            return
        if name in _SQUASH:
            self.made[id(out)] = (name, _dim(args, kwargs), self.inside[0], out)
        elif name in _SHAPE_OPS and isinstance(first, torch.Tensor):
            made = self.made.get(id(first))
            if made is not None and made[3] is first and out.shape == first.shape:
                self.made[id(out)] = (*made[:3], out)
            elif made is not None and made[3] is first and made[0] == "sigmoid":
                self.made[id(out)] = ("sigmoid", None, made[2], out)  # elementwise: any shape


_JUDGED = ("binary_cross_entropy", "nll_loss")  # the losses whose input range is judged


def _dim(args: tuple, kwargs: dict) -> Any:
    if "dim" in kwargs:
        return kwargs["dim"]
    return args[1] if len(args) > 1 and isinstance(args[1], int) else None


def _same_dim(a: Any, b: Any, x: Any) -> bool:
    """Whether two softmax dims are the same axis of `x` (unknown counts as the same)."""
    if a is None or b is None:
        return True
    return a % x.dim() == b % x.dim()

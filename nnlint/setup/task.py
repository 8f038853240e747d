"""What the model is trained for, and what says so.

`infer_task(...)` answers `(task, source)`: the task ("causal-lm", or None when
nothing says) and, in words, what told: `--task`, an HF causal-LM class, HF
`labels` equal to `input_ids` (the model shifts them itself), or targets that
are the input shifted by one token (also flattened or sliced, as loss calls
pass them). Masked-LM labels (-100 except at the masked positions) are not
next tokens, and the source says so. `--verbose` and the JSON summary show it.
"""

from __future__ import annotations

from typing import Any

import torch

from nnlint.setup import tensors

TASKS = ("classification", "causal-lm", "regression")
_CAUSAL_CLASS_SUFFIXES = ("ForCausalLM", "LMHeadModel")
IGNORE_INDEX = -100  # what torch's cross-entropy and HF's labels leave out


def infer_task(
    model: Any,
    args: tuple,
    kwargs: dict,
    target: Any,
    task: str | None,
    shifted_by_model: bool = False,
) -> tuple[str | None, str]:
    """The task and what says so. `shifted_by_model`: the target is HF `labels`,
    which the model's own loss shifts by one position."""
    if task:
        return task, "--task"
    name = type(model).__name__
    if name.endswith(_CAUSAL_CLASS_SUFFIXES):
        return "causal-lm", f"the model class {name}"
    if getattr(getattr(model, "config", None), "is_decoder", False):
        return "causal-lm", "the model's config (is_decoder)"
    key = tensors.primary_key(args, kwargs)
    x = tensors.get_input(args, kwargs, key) if key is not None else None
    if not (
        isinstance(x, torch.Tensor)
        and isinstance(target, torch.Tensor)
        and not x.is_floating_point()
        and not target.is_floating_point()
        and x.dim() == 2
        and x.shape[1] > 1
    ):
        return None, "nothing says (no --task, no sequence targets)"
    if shifted_by_model and _same_tokens(x, target):
        return "causal-lm", "HF `labels` equal to `input_ids` (the model shifts them)"
    if _next_tokens(x, target):
        return "causal-lm", "next-token targets"
    if _masked(target):
        return None, "masked-LM targets (-100 except at masked positions): not causal"
    return None, "nothing says (the targets are not next tokens)"


def declared_task(
    model: Any, args: tuple, kwargs: dict, target: Any, task: str | None
) -> str | None:
    """The task when something says it: `--task`, an HF causal-LM class, or next-token targets."""
    return infer_task(model, args, kwargs, target, task)[0]


def _kept(target: torch.Tensor) -> torch.Tensor:
    return target != IGNORE_INDEX


def _same_tokens(x: torch.Tensor, labels: torch.Tensor) -> bool:
    """HF causal-LM labels: `input_ids` itself, padding set to -100 (most positions kept)."""
    if labels.numel() != x.numel():
        return False
    labels = labels.reshape(x.shape)
    kept = _kept(labels)
    return bool(kept.float().mean() > 0.5) and torch.equal(labels[kept], x[kept])


def _next_tokens(x: torch.Tensor, target: torch.Tensor) -> bool:
    """Whether `target` is `x` shifted by one token: (N, T) with the last position
    free, or sliced to (N, T-1); either one flattened as loss calls do. Positions
    left out (-100) do not count, but most must be kept."""
    n, t = x.shape
    for width in (t, t - 1):
        if target.numel() != n * width:
            continue
        shifted = target.reshape(n, width)[:, : t - 1]
        kept = _kept(shifted)
        if kept.float().mean() > 0.5 and torch.equal(shifted[kept], x[:, 1:][kept]):
            return True
    return False


def _masked(target: torch.Tensor) -> bool:
    """Masked-LM labels: most positions left out, the rest the original tokens."""
    kept = _kept(target)
    return bool(kept.any()) and bool(kept.float().mean() <= 0.5)


def next_token_labels(
    args: tuple, kwargs: dict, logits: Any, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor | None:
    """Labels for a sequence model without targets: each position's next input token,
    the last left out. Tokens the output cannot predict (an embedding with more rows
    than the head has classes, padding ids) are left out too, with the loss's own
    `ignore_index`, so the labels always lie in the output's range."""
    key = tensors.primary_key(args, kwargs)
    x = tensors.get_input(args, kwargs, key) if key is not None else None
    if not (
        isinstance(x, torch.Tensor)
        and isinstance(logits, torch.Tensor)
        and x.dim() == 2
        and not x.is_floating_point()
        and logits.dim() == 3
        and tuple(logits.shape[:2]) == tuple(x.shape)
    ):
        return None
    labels = torch.cat([x[:, 1:], torch.full_like(x[:, :1], ignore_index)], dim=1).long()
    labels[(labels < 0) | (labels >= logits.shape[-1])] = ignore_index
    return labels

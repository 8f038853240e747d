"""Tensor plumbing shared by the setup, the capture and the dynamic checks.

The main output of a model (what a loss reads), tensors in nested batches and
outputs, and the inputs of a batch by position or keyword.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def main_output(out: Any) -> torch.Tensor | None:
    """The tensor a loss would read: the output itself, `.logits`, or the first tensor."""
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, dict):
        if isinstance(out.get("logits"), torch.Tensor):
            return out["logits"]
        out = list(out.values())
    if isinstance(out, list | tuple):
        for item in out:
            found = main_output(item)
            if found is not None:
                return found
    return None


def map_tensors(obj: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, tuple | list):
        return type(obj)(map_tensors(o, fn) for o in obj)
    if isinstance(obj, dict):
        return {k: map_tensors(v, fn) for k, v in obj.items()}
    return obj


def tensors(value: Any, depth: int = 0) -> list[torch.Tensor]:
    """The tensors in a batch or an output (a tensor, tuple, list, dict or HF ModelOutput),
    `logits` first, at most 4 levels deep."""
    if isinstance(value, torch.Tensor):
        return [value]
    if depth > 4:
        return []
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: k != "logits")
        return [t for k in keys for t in tensors(value[k], depth + 1)]
    if isinstance(value, tuple | list):
        return [t for v in value for t in tensors(v, depth + 1)]
    return []


def input_names(args: tuple, kwargs: dict) -> list[tuple[Any, str]]:
    """(key, display name) of each tensor input: an index into args or a kwarg name."""
    named = [(i, f"argument {i}") for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
    named += [
        (k, f"`{k}`") for k, v in kwargs.items() if isinstance(v, torch.Tensor) and k != "labels"
    ]
    return named


def get_input(args: tuple, kwargs: dict, key: Any) -> torch.Tensor:
    return args[key] if isinstance(key, int) else kwargs[key]


def with_input(args: tuple, kwargs: dict, key: Any, value: torch.Tensor) -> tuple[tuple, dict]:
    if isinstance(key, int):
        return args[:key] + (value,) + args[key + 1 :], kwargs
    return args, {**kwargs, key: value}


def primary_key(args: tuple, kwargs: dict) -> Any:
    """The input that carries the data: `input_ids`, else the first tensor."""
    if isinstance(kwargs.get("input_ids"), torch.Tensor):
        return "input_ids"
    named = input_names(args, kwargs)
    return named[0][0] if named else None


def batch_size(args: tuple, kwargs: dict) -> int | None:
    key = primary_key(args, kwargs)
    if key is None:
        return None
    x = get_input(args, kwargs, key)
    return x.shape[0] if x.dim() else None

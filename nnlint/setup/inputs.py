"""One example batch for the model, shared by the graph and dynamic phases.

`provide_batch(model, settings, captured=None)` tries, in order:

1. `--data module:fn` (a batch, a DataLoader, a Dataset, or a callable or
   generator giving one of those);
2. `captured`: a batch the dynamic phase took from the training script;
3. the model's own `example_inputs` / `dummy_inputs` (HF) /
   `example_input_array` (Lightning);
4. synthesis from the first layer: token ids for an Embedding, images for a
   Conv (common sizes are tried until a forward succeeds), features for a
   Linear; `--input-shape` and `--input-dtype` override the guess.

It returns `(Batch, None)` or `(None, reason)`; the reason goes into an NN005
finding. `as_batch(raw, model, origin)` splits a raw batch as a DataLoader
yields it (`(x, y)`, a dict of keyword arguments, a tensor) into the model's
arguments and the target, and `call(model, batch)` runs one forward on it.
"""

from __future__ import annotations

import inspect
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

from nnlint.core.errors import UsageError
from nnlint.setup.load import TargetSpec, import_target, search_dirs
from nnlint.setup.preserve import preserved

BATCH_SIZE = 4
_TOKEN_LENGTHS = (16, 8, 32, 4, 64, 128)
_IMAGE_SIZES = {
    1: ((128,), (64,), (256,), (32,), (1000,), (16,)),
    2: ((32, 32), (28, 28), (64, 64), (224, 224), (96, 96), (128, 128), (16, 16), (299, 299)),
    3: ((16, 32, 32), (8, 64, 64), (16, 112, 112), (4, 16, 16)),
}
_LABEL_KEYS = ("labels", "label", "target", "targets", "y")


@dataclass
class Batch:
    """Model arguments (`model(*args, **kwargs)`), where they came from, and the target if known."""

    args: tuple
    kwargs: dict = field(default_factory=dict)
    origin: str = ""
    target: Any = None
    made_up: bool = False  # nnlint's own inputs (synthesized, `--input-shape`, the model's example)
    shuffled: bool | None = None  # drawn by a loader in random order; None: not known


# torch's words when a conv gets images whose channels are last: (N, H, W, C) for C channels
_CHANNELS_LAST = re.compile(
    r"expected input\[(\d+), (\d+), (\d+), (\d+)\] to have (\d+) channels, but got (\d+)"
)


def channels_last_hint(exc: BaseException) -> str:
    """A word for a conv that raised on channels-last images, to go after its error."""
    match = _CHANNELS_LAST.search(str(exc))
    if match is None or match[4] != match[5] or match[2] == match[5]:
        return ""
    shape = ", ".join(match.groups()[:4])
    return f" (the images ({shape}) look channels-last: pass `x.permute(0, 3, 1, 2)`)"


def call(model: Any, batch: Batch) -> Any:
    return model(*batch.args, **batch.kwargs)


def _forward_params(model: Any) -> tuple[int, set[str], bool]:
    """(required positional count, keyword names, accepts **kwargs) of `model.forward`."""
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return 1, set(), True
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = sum(1 for p in params if p.kind in positional and p.default is p.empty)
    names = {p.name for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL}
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    return required, names, var_kw


def as_batch(raw: Any, model: Any, origin: str) -> Batch:
    """Split what a DataLoader yields into the model's arguments and the target."""
    if isinstance(raw, Batch):
        return raw
    required, names, var_kw = _forward_params(model)
    if isinstance(raw, dict):
        kwargs = {k: v for k, v in raw.items() if var_kw or k in names}
        rest = {k: v for k, v in raw.items() if k not in kwargs}
        target = next((raw[k] for k in _LABEL_KEYS if k in raw), None)
        return Batch((), kwargs, origin, target if target is not None else (rest or None))
    if isinstance(raw, tuple | list) and not hasattr(raw, "_fields"):
        count = max(required, 1)
        if len(raw) <= count:
            return Batch(tuple(raw), {}, origin)
        target = raw[count] if len(raw) == count + 1 else tuple(raw[count:])
        return Batch(tuple(raw[:count]), {}, origin, target)
    return Batch((raw,), {}, origin)


def _unwrap(value: Any, depth: int = 0) -> Any:
    """A batch from a DataLoader, a Dataset, an iterator or a callable giving one."""
    import torch

    if depth > 3:
        raise ValueError("--data keeps returning callables")
    if isinstance(value, str | bytes):
        raise ValueError(f"it gave a {type(value).__name__}, not a batch, DataLoader or Dataset")
    if isinstance(value, torch.Tensor | dict | tuple | list):
        return value
    if isinstance(value, torch.utils.data.DataLoader) or inspect.isgenerator(value):
        return next(iter(value))
    if hasattr(value, "__getitem__") and hasattr(value, "__len__"):
        items = [value[i] for i in range(min(len(value), BATCH_SIZE))]
        return torch.utils.data.default_collate(items)
    if hasattr(value, "__next__") or hasattr(value, "__iter__"):
        return next(iter(value))
    if callable(value):
        return _unwrap(value(), depth + 1)
    raise ValueError(f"--data gave a {type(value).__name__}, not a batch, DataLoader or Dataset")


def from_data(spec: str, model: Any, settings: Any) -> Batch:
    """The batch `--data module:fn` gives. Import errors are UsageErrors; runtime ones ValueErrors."""
    target = import_target(TargetSpec.parse(spec, "--data"), search_dirs(settings))
    try:
        raw = _unwrap(target)
    except ValueError as exc:
        raise ValueError(f"--data {spec!r}: {exc}") from None
    except Exception as exc:
        raise ValueError(f"--data {spec!r} raised {type(exc).__name__}: {exc}") from None
    if not _has_tensor(raw):
        kind = type(raw).__name__
        raise ValueError(f"--data {spec!r} gave a {kind} that holds no tensor")
    return as_batch(raw, model, f"--data {spec}")


def _has_tensor(value: Any, depth: int = 0) -> bool:
    import torch

    if isinstance(value, torch.Tensor):
        return True
    if depth > 4:
        return False
    if isinstance(value, dict):
        return any(_has_tensor(v, depth + 1) for v in value.values())
    if isinstance(value, tuple | list):
        return any(_has_tensor(v, depth + 1) for v in value)
    return False


def from_model(model: Any) -> Batch | None:
    """The model's own example: `example_inputs`, `dummy_inputs` or `example_input_array`."""
    for attr in ("example_inputs", "dummy_inputs", "example_input_array"):
        try:
            value = getattr(model, attr, None)
            if callable(value) and not hasattr(value, "shape"):
                value = value()
        except Exception:
            continue
        if value is not None:
            batch = as_batch(value, model, f"model.{attr}")
            batch.made_up = True  # an example for tracing, not the data it trains on
            return batch
    return None


def dtype_named(name: str | None) -> Any:
    import torch

    if name is None:
        return None
    dtype = getattr(torch, name.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise UsageError(f"--input-dtype {name!r} is not a torch dtype (e.g. float32, long)")
    return dtype


def _first_layer(model: Any) -> Any:
    import torch.nn as nn

    for module in model.modules():
        if isinstance(module, nn.Embedding | nn.EmbeddingBag | nn.Linear | nn.modules.conv._ConvNd):
            return module
    return None


def _device(model: Any) -> Any:
    import torch

    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def _make(shape: tuple[int, ...], dtype: Any, high: int, device: Any) -> Any:
    import torch

    generator = torch.Generator().manual_seed(0)
    if dtype.is_floating_point or dtype.is_complex:
        return torch.randn((BATCH_SIZE, *shape), generator=generator).to(device=device, dtype=dtype)
    return torch.randint(0, max(high, 1), (BATCH_SIZE, *shape), generator=generator).to(
        device, dtype
    )


def _candidates(layer: Any) -> tuple[list[tuple[int, ...]], Any, int] | None:
    import torch
    import torch.nn as nn

    if isinstance(layer, nn.Embedding | nn.EmbeddingBag):
        return [(n,) for n in _TOKEN_LENGTHS], torch.long, layer.num_embeddings
    if isinstance(layer, nn.modules.conv._ConvNd):
        dims = len(layer.kernel_size)
        return [(layer.in_channels, *s) for s in _IMAGE_SIZES.get(dims, ())], torch.float32, 2
    if isinstance(layer, nn.Linear):
        return [(layer.in_features,)], torch.float32, 2
    return None


def synthesize(model: Any, settings: Any) -> tuple[Batch | None, str | None]:
    """A random batch shaped for the model's first layer; the first shape whose forward runs."""
    import torch

    layer = _first_layer(model)
    guess = _candidates(layer) if layer is not None else None
    dtype = dtype_named(getattr(settings, "input_dtype", None))
    shape = getattr(settings, "input_shape", None)
    device = _device(model)
    if shape:
        default_dtype, high = (guess[1], guess[2]) if guess else (torch.float32, 2)
        tensor = _make(tuple(shape), dtype or default_dtype, high, device)
        origin = f"--input-shape {','.join(map(str, shape))}"
        return Batch((tensor,), {}, origin, made_up=True), None
    if guess is None:
        first = type(layer).__name__ if layer is not None else "none"
        return None, f"cannot synthesize one (first layer: {first})"
    shapes, default_dtype, high = guess
    error = "no candidate shape"
    with preserved(model), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a wrong guess is not the user's problem
        model.eval()
        for sample in shapes:
            tensor = _make(sample, dtype or default_dtype, high, device)
            try:
                model(tensor)
            except Exception as exc:
                error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                continue
            return Batch((tensor,), {}, f"synthesized {tuple(tensor.shape)}", made_up=True), None
    return None, f"synthesized inputs for {type(layer).__name__} failed ({error})"


def provide_batch(
    model: Any, settings: Any, captured: Any = None
) -> tuple[Batch | None, str | None]:
    """An example batch for `model`, or the reason there is none."""
    data = getattr(settings, "data", None)
    if data:
        try:
            return from_data(data, model, settings), None
        except ValueError as exc:
            return None, str(exc)
    if captured is not None:
        return as_batch(captured, model, "training script"), None
    own = from_model(model)
    if own is not None:
        return own, None
    return synthesize(model, settings)

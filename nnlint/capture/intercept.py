"""What the capture child intercepts while the training script runs.

The `--model` target is caught as it is built: the named class or factory is
patched in its module before the script imports it; a class of that name
defined in `__main__` is caught by name, and for a factory defined there the
outermost modules built inside its frame are. Each caught model's call that
looks like training (grad enabled, train mode; Lightning's summary forward of
`example_input_array` runs in eval mode under no_grad) is recorded, with the
losses from `torch.nn.functional` applied outside the model, the tensor
`backward()` ran on, and the optimizer at its first step, where the script is
stopped.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

import torch
import torch.nn.functional as F
from torch.optim.optimizer import register_optimizer_step_pre_hook

from nnlint.setup.load import TargetSpec
from nnlint.setup.sites import user_frame
from nnlint.setup.specs import KNOWN_LOSSES
from nnlint.setup.tensors import map_tensors


class StepReached(BaseException):
    """Raised at the first optimizer step to stop the script."""


class State:
    def __init__(self) -> None:
        self.models: list[Any] = []  # caught by class or factory, in the order built
        self.made_at: dict[int, tuple[str, int, int]] = {}  # id -> where it was built
        self.script = ""  # the training script's path, as its frames name it
        self.built: list[Any] = []  # built inside a factory defined in `__main__`
        self.roots: set[int] = set()  # ids of those that are no submodule of another
        self.roots_of = 0  # how many of `built` the roots were computed from
        self.factory: Any = None  # the code object of that factory
        self.calls: dict[int, tuple] = {}  # id -> the recorded call's (args, kwargs)
        self.training: set[int] = set()  # ids whose recorded call was a training call
        self.pending: set[int] = set()  # ids whose running call is the recorded one
        self.outputs: dict[int, Any] = {}
        self.losses: list[tuple] = []
        self.backward: Any = None
        self.optimizer: Any = None
        self.loaders: list[Any] = []  # DataLoaders the script iterated, in that order
        self.depth = 0
        self.undo: list[Any] = []
        self.guard: Any = None

    def watched(self, module: Any) -> bool:
        if any(m is module for m in self.models):
            return True
        if self.roots_of != len(self.built):
            inner = {id(m) for b in self.built for m in b.modules() if m is not b}
            self.roots = {id(b) for b in self.built if id(b) not in inner}
            self.roots_of = len(self.built)
        return id(module) in self.roots

    def candidates(self) -> list[Any]:
        """The caught models, then the roots built by a `__main__` factory."""
        self.watched(None)
        return [*self.models, *(b for b in self.built if id(b) in self.roots)]


def patch_model(spec: TargetSpec, script: str, state: State) -> None:
    """Catch the model the spec names when the script builds it."""
    state.script = script
    holder, leaf = sys.modules.get(spec.module_name), spec.attr.split(".")[-1]
    for part in spec.attr.split(".")[:-1]:
        holder = getattr(holder, part, None)
    target = getattr(holder, leaf, None) if holder is not None else None
    if isinstance(target, type) and issubclass(target, torch.nn.Module):
        original_init = target.__init__

        @functools.wraps(original_init)
        def init(self: Any, *args: Any, **kwargs: Any) -> None:
            original_init(self, *args, **kwargs)
            catch(self, state, sys._getframe(1))

        target.__init__ = init
        state.undo.append(lambda: setattr(target, "__init__", original_init))
    elif callable(target) and holder is not None:

        @functools.wraps(target)
        def factory(*args: Any, **kwargs: Any) -> Any:
            made = target(*args, **kwargs)
            if isinstance(made, torch.nn.Module):
                catch(made, state, sys._getframe(1))
            return made

        setattr(holder, leaf, factory)
        state.undo.append(lambda: setattr(holder, leaf, target))
    module_init = torch.nn.Module.__init__

    def any_init(self: Any, *args: Any, **kwargs: Any) -> None:
        module_init(self, *args, **kwargs)
        if type(self).__name__ == leaf and type(self).__module__ == "__main__":
            catch(self, state)
        elif target is None:
            code = _factory_code(sys._getframe(1), script, leaf)
            if code is not None:
                state.factory = code
                state.built.append(self)
                _hook(self, state)

    torch.nn.Module.__init__ = any_init
    state.undo.append(lambda: setattr(torch.nn.Module, "__init__", module_init))


def _factory_code(frame: Any, script: str, name: str) -> Any:
    """The code of the script's top-level function `name`, when inside a call of it."""
    while frame is not None:
        code = frame.f_code
        if code.co_qualname == name and code.co_filename == script:
            return code
        frame = frame.f_back
    return None


def catch(model: Any, state: State, caller: Any = None) -> None:
    """Watch `model`; `caller` is the frame that built it, when known."""
    if any(m is model for m in state.models):
        return
    state.models.append(model)
    frame = _in_script(caller, state.script) or user_frame(caller)
    if frame is not None:
        state.made_at[id(model)] = _position(frame)
    _hook(model, state)


def _in_script(frame: Any, script: str) -> Any:
    """The innermost frame at or above `frame` that runs the training script's own code."""
    while frame is not None and frame.f_code.co_filename != script:
        frame = frame.f_back
    return frame


def _position(frame: Any) -> tuple[str, int, int]:
    """The file, line and (1-based) column of the call `frame` is making."""
    column = 1
    positions = list(frame.f_code.co_positions())
    index = frame.f_lasti // 2
    if 0 <= index < len(positions) and positions[index][2] is not None:
        column = positions[index][2] + 1
    return frame.f_code.co_filename, frame.f_lineno, column


def _hook(model: Any, state: State) -> None:
    def before(module: Any, args: tuple, kwargs: dict) -> None:
        if not state.watched(module):
            return
        state.depth += 1
        key = id(module)
        training = torch.is_grad_enabled() and module.training
        if key in state.calls and (key in state.training or not training):
            return
        state.calls[key] = map_tensors((args, kwargs), lambda t: t.detach().clone())
        state.pending.add(key)
        if training:
            state.training.add(key)

    def after(module: Any, _args: tuple, _kwargs: dict, output: Any) -> None:
        if not state.watched(module):
            return
        state.depth -= 1
        if id(module) in state.pending:
            state.pending.discard(id(module))
            state.outputs[id(module)] = output

    handles = (
        model.register_forward_pre_hook(before, with_kwargs=True),
        model.register_forward_hook(after, with_kwargs=True),
    )
    state.undo.extend(h.remove for h in handles)


def patch_losses(state: State) -> None:
    for name in KNOWN_LOSSES:
        original = getattr(F, name)

        def wrapper(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            result = _original(*args, **kwargs)
            if state.depth == 0 and len(args) >= 2 and isinstance(args[0], torch.Tensor):
                frame = user_frame(sys._getframe(1))
                site = (frame.f_code.co_filename, frame.f_lineno) if frame else None
                extra = {k: v for k, v in kwargs.items() if v is not None}
                target = args[1].detach().clone() if isinstance(args[1], torch.Tensor) else args[1]
                state.losses.append((_name, extra, target, tuple(args[0].shape), site, id(result)))
            return result

        setattr(F, name, functools.wraps(original)(wrapper))
        state.undo.append(lambda n=name, o=original: setattr(F, n, o))


def patch_loaders(state: State) -> None:
    """Note each DataLoader the script starts iterating: the last one gave the batch."""
    from torch.utils.data import DataLoader

    original = DataLoader.__iter__

    def iterate(self: Any) -> Any:
        state.loaders.append(self)
        return original(self)

    DataLoader.__iter__ = iterate
    state.undo.append(lambda: setattr(DataLoader, "__iter__", original))


def drawn_at_random(loader: Any) -> bool | None:
    """Whether `loader` draws its samples in random order; None when its sampler is
    one nnlint does not know (a custom sampler or batch sampler, an iterable dataset)."""
    from torch.utils.data import (
        BatchSampler,
        IterableDataset,
        RandomSampler,
        SequentialSampler,
        SubsetRandomSampler,
        WeightedRandomSampler,
    )
    from torch.utils.data.distributed import DistributedSampler

    if loader is None or isinstance(getattr(loader, "dataset", None), IterableDataset):
        return None
    sampler = getattr(loader, "batch_sampler", None)
    if sampler is not None and not isinstance(sampler, BatchSampler):
        return None
    sampler = sampler.sampler if sampler is not None else getattr(loader, "sampler", None)
    if isinstance(sampler, RandomSampler | SubsetRandomSampler | WeightedRandomSampler):
        return True
    if isinstance(sampler, DistributedSampler):
        return bool(sampler.shuffle)
    if type(sampler) is SequentialSampler:
        return False
    return None


def patch_backward(state: State) -> None:
    original = torch.Tensor.backward

    def backward(self: Any, *args: Any, **kwargs: Any) -> Any:
        state.backward = id(self)
        return original(self, *args, **kwargs)

    torch.Tensor.backward = backward
    state.undo.append(lambda: setattr(torch.Tensor, "backward", original))


def stop_at_first_step(state: State) -> None:
    """Stop the script at its first optimizer step, after the step's closure.

    Lightning (and any `optimizer.step(closure)`, as LBFGS takes) computes the
    loss inside the step: the closure runs `training_step` and `backward`, so
    it runs here first. Models caught but not yet called for training get
    their direct submodules watched before it, for a `training_step` that calls
    `self.net(x)` rather than `self(x)`.
    """

    def hook(optimizer: Any, args: tuple, kwargs: dict) -> None:
        closure = kwargs.get("closure", args[0] if args else None)
        if callable(closure):
            for model in list(state.models):
                if id(model) not in state.training:
                    for child in model.children():
                        if any(True for _ in child.parameters()):  # not a loss or a metric
                            catch(child, state)
            with torch.enable_grad():
                closure()
        state.optimizer = optimizer
        raise StepReached()

    handle = register_optimizer_step_pre_hook(hook)
    state.undo.append(handle.remove)

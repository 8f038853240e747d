"""Let torch's optimizers run without importing `torch._dynamo` while nothing compiles.

Every optimizer's `add_param_group`, `zero_grad` and `state_dict` are wrapped
in `torch._disable_dynamo`, which imports `torch._dynamo` on their first call
to build the "do not compile this" wrapper: about a second of CPU, the largest
single cost of running a training script to its first step, paid for nothing
when the script never compiles. While `torch._dynamo` has not been imported no
frame can be compiling, so calling the function itself is exactly what the
disabled wrapper would do; the deferral below does that, and builds the real
wrapper on the first call after anything imports `torch._dynamo`.
"""

from __future__ import annotations

import functools
import sys
import types
from typing import Any


class _UntilDynamo:
    """Stands in for `torch._dynamo.disable(fn)` until `torch._dynamo` is imported."""

    def __init__(self, fn: Any, recursive: bool) -> None:
        self.fn, self.recursive = fn, recursive

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if "torch._dynamo" not in sys.modules:
            return self.fn(*args, **kwargs)
        import torch._dynamo

        real = torch._dynamo.disable(self.fn, self.recursive, wrapping=False)
        self.fn.__dynamo_disable = real
        return real(*args, **kwargs)


def defer_dynamo_import() -> int:
    """Defer the import in torch's own optimizers; returns how many functions were deferred."""
    if "torch._dynamo" in sys.modules:
        return 0
    import torch
    import torch.optim
    import torch.optim.optimizer as optimizer

    disable = {_sample_code(torch._disable_dynamo)}
    compile_module = sys.modules.get("torch._compile")
    if compile_module is not None:
        disable.add(_sample_code(compile_module._disable_dynamo))
    grad_mode = _sample_code(optimizer._use_grad_for_differentiable)
    deferred = 0
    for owner, name, value in _candidates(torch.optim):
        if getattr(value, "__code__", None) is grad_mode:
            setattr(owner, name, _grad_mode_step(value))
            deferred += 1
        for wrapper in [value, *_closure_functions(value)]:
            if getattr(wrapper, "__code__", None) in disable:
                deferred += _defer(wrapper)
    return deferred


def _defer(wrapper: Any) -> int:
    fn = getattr(wrapper, "__wrapped__", None)
    if fn is None or hasattr(fn, "__dynamo_disable"):
        return 0
    fn.__dynamo_disable = _UntilDynamo(fn, _recursive(wrapper))
    return 1


def _grad_mode_step(original: Any) -> Any:
    """`_use_grad_for_differentiable`'s step without its import: grad mode as the
    optimizer's `differentiable` asks, around the step (the graph breaks it adds
    mean nothing while nothing compiles)."""
    import torch

    func = original.__wrapped__

    @functools.wraps(func)
    def step(*args: Any, **kwargs: Any) -> Any:
        if "torch._dynamo" in sys.modules:
            return original(*args, **kwargs)
        previous = torch.is_grad_enabled()
        try:
            torch.set_grad_enabled(args[0].defaults["differentiable"])
            return func(*args, **kwargs)
        finally:
            torch.set_grad_enabled(previous)

    return step


def _sample_code(decorator: Any) -> Any:
    return decorator(_sample).__code__


def _sample() -> None:
    return None


def _recursive(wrapper: Any) -> bool:
    names = wrapper.__code__.co_freevars
    if "recursive" not in names or wrapper.__closure__ is None:
        return True
    return bool(wrapper.__closure__[names.index("recursive")].cell_contents)


def _closure_functions(value: Any) -> list[Any]:
    cells = getattr(value, "__closure__", None) or ()
    found = []
    for cell in cells:
        try:
            content = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if isinstance(content, types.FunctionType):
            found.append(content)
    return found


def _candidates(optim: Any) -> list[tuple[Any, str, Any]]:
    """(owner, name, value) for the methods of torch's optimizers and the functions of
    their modules (`adam`, `sgd`, ...), which the optimizers call through globals."""
    base = optim.Optimizer
    classes = {base}
    modules = set()
    for value in vars(optim).values():
        if isinstance(value, type) and issubclass(value, base):
            classes.add(value)
            module = sys.modules.get(value.__module__)
            if module is not None:
                modules.add(module)
    found = []
    for owner in [*sorted(classes, key=lambda c: c.__qualname__), *modules]:
        for name, value in list(vars(owner).items()):
            if isinstance(value, types.FunctionType):
                found.append((owner, name, value))
    return found

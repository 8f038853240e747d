"""Run the user's model and leave it, and the global RNGs, exactly as they were.

`preserved(model)` restores on exit: every module's train/eval flag, every
buffer (BatchNorm running statistics move in a train-mode forward), the torch
CPU and CUDA RNG states, and Python's and NumPy's global RNGs. Parameters are
not copied: callers run forwards under `torch.no_grad()`, which cannot change
them.

`global_rngs()` restores only Python's and NumPy's RNGs. The model phase runs
under it as a whole, so the forwards inside it can pass `rngs=False` and skip
saving NumPy's state each time (about 0.1 ms a forward, as much as a small
model's forward itself).
"""

from __future__ import annotations

import contextlib
import random
import sys
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def global_rngs() -> Iterator[None]:
    """Python's and NumPy's global RNGs as they were on entry, on exit."""
    py_state = random.getstate()
    # Not imported yet (NumPy 2 loads it on first use): no seed to keep, and importing
    # it costs 10-15 ms. If the code inside draws from it, it seeds it afresh from the OS.
    np_random = sys.modules.get("numpy.random")
    np_state = np_random.get_state() if np_random is not None else None
    try:
        yield
    finally:
        random.setstate(py_state)
        if np_state is not None:
            np_random.set_state(np_state)


@contextlib.contextmanager
def preserved(model: Any, rngs: bool = True) -> Iterator[None]:
    """The model's modes and buffers and the torch RNGs restored on exit, and with
    `rngs` Python's and NumPy's RNGs too (pass False only inside `global_rngs()`)."""
    import torch

    modes = [(m, m.training) for m in model.modules()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    torch_state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    outer = global_rngs() if rngs else contextlib.nullcontext()
    try:
        with outer:
            yield
    finally:
        for module, training in modes:
            module.training = training
        with torch.no_grad():
            for buffer, saved in buffers:
                if buffer.shape == saved.shape:
                    buffer.copy_(saved)
        torch.set_rng_state(torch_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state_all(cuda_state)

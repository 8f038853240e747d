"""Run the user's model and leave it, and the global RNGs, exactly as they were.

`preserved(model)` restores on exit: every module's train/eval flag, every
buffer (BatchNorm running statistics move in a train-mode forward), the torch
CPU and CUDA RNG states, and Python's and NumPy's global RNGs. Parameters are
not copied: callers run forwards under `torch.no_grad()`, which cannot change
them.
"""

from __future__ import annotations

import contextlib
import random
import sys
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def preserved(model: Any) -> Iterator[None]:
    import torch

    modes = [(m, m.training) for m in model.modules()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    torch_state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    py_state = random.getstate()
    numpy = sys.modules.get("numpy")
    np_state = numpy.random.get_state() if numpy is not None else None
    try:
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
        random.setstate(py_state)
        if np_state is not None:
            numpy.random.set_state(np_state)

"""The seed every check starts from, and which thread may reseed the global RNG.

Checks running alongside the others in a worker thread (`nnlint.dynamic.alongside`)
must not touch the global generators the main thread's checks draw from.
"""

from __future__ import annotations

import threading

import torch

SEED = 1234

_worker = threading.local()  # `running` in a worker thread running a check alongside the others


def in_worker() -> bool:
    """Whether this thread runs a check alongside the others (`nnlint.dynamic.alongside`)."""
    return getattr(_worker, "running", False)


def enter_worker() -> None:
    _worker.running = True


def reseed(seed: int = SEED) -> None:
    """Seed the global generators the checks draw from: the CPU's, and CUDA's once in use.

    `torch.manual_seed` also queues a seed for every lazily started backend
    (CUDA, XPU, MTIA) and records a stack trace for each, about 1.5 ms a call;
    the checks reseed often enough for that to count.
    """
    if in_worker():
        raise RuntimeError("a check running alongside the others cannot reseed the global RNG")
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)

"""Run a training script that asks for CUDA on a machine without it, on the CPU.

Scripts often hard-code `.cuda()`, `.to("cuda")` or `device="cuda"`: without
a GPU they stop at that line, and the setup they would train with is lost.
While the script runs, a torch function mode turns those requests into CPU
ones and remembers the first user line that made one, so the run can say
where it moved the script (an NN006 note), never silently. A script that
checks `torch.cuda.is_available()` picks the CPU itself and is left alone.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from nnlint.setup.sites import user_frame


def _is_cuda(value: Any) -> bool:
    if isinstance(value, torch.device):
        return value.type == "cuda"
    return isinstance(value, str) and value.split(":")[0] == "cuda"


class CudaOnCpu(TorchFunctionMode):
    """Every CUDA device asked for inside the block is the CPU.

    `asked` says whether any was; `site` is the user line of the first ask,
    when user code made it (not a library the script called).
    """

    def __init__(self) -> None:
        super().__init__()
        self.asked = False
        self.site: tuple[str, int] | None = None

    def __torch_function__(
        self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if func is torch.Tensor.cuda:
            self._note()
            return args[0]
        if _is_cuda(kwargs.get("device")):
            self._note()
            kwargs = {**kwargs, "device": "cpu"}
        if func is torch.Tensor.to and any(_is_cuda(a) for a in args[1:]):
            self._note()
            args = tuple("cpu" if _is_cuda(a) else a for a in args)
        return func(*args, **kwargs)

    def _note(self) -> None:
        if not self.asked:
            self.asked = True
            frame = user_frame(sys._getframe(2))
            if frame is not None:
                self.site = (frame.f_code.co_filename, frame.f_lineno)


def cuda_fallback() -> CudaOnCpu | None:
    """The mode to run the script in, where CUDA is missing; None where it is there."""
    return None if torch.cuda.is_available() else CudaOnCpu()

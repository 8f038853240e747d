"""A Lightning callback that checks the model at the first training batch.

```python
from nnlint.integrations.lightning import NNLintCallback

trainer = L.Trainer(callbacks=[NNLintCallback(fail_on="error")])
trainer.fit(model, loader)
```

At the first batch the callback runs `training_step` once on a copy of the
LightningModule (and of its optimizer), learns from it the batch the model is
called with and the loss the step computes, and runs nnlint's graph and
dynamic checks on the copy (`nnlint.integrations.common`). The findings go to
stderr and, as counts, to the Trainer's loggers; with `fail_on` set, a finding
at that level stops `fit` with `NNLintError`. The module the Trainer trains,
its optimizer and the global RNGs are left as they were, so training goes on
exactly as without the callback. The callback is one for `lightning.pytorch`
and `pytorch_lightning` alike, whichever of them is installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nnlint.api import Findings
from nnlint.integrations.common import (
    NNLintError,
    Options,
    Step,
    checked,
    copies,
    counts,
    detached,
    fail,
    loss_tensor,
    replay,
    report,
    run_checks,
    skipped,
)
from nnlint.setup.inputs import as_batch

# One class for both import names, so that either package's Trainer takes it.
_BASES: list[type] = []
try:
    import lightning.pytorch

    _BASES.append(lightning.pytorch.Callback)
except ImportError:
    pass
try:
    import pytorch_lightning

    _BASES.append(pytorch_lightning.Callback)
except ImportError:
    pass
if not _BASES:
    raise ImportError("nnlint.integrations.lightning needs Lightning: pip install lightning")

__all__ = ["NNLintCallback", "NNLintError"]

_MANUAL = (
    "the LightningModule uses manual optimization (automatic_optimization is False): "
    "its training_step steps the optimizer itself, so its loss cannot be replayed"
)
_NO_LOSS = (
    "training_step returned no loss for the first batch (None, or a dict without "
    "'loss'): Lightning skips that step, and there is no loss to check"
)


_NOT_CALLED = (
    "training_step called neither the LightningModule nor a direct submodule with "
    "parameters, so the model's inputs are unknown"
)
_UNKNOWN_LOSS = (
    "the loss training_step returned does not come from a torch.nn.functional loss "
    "nnlint knows, so the loss-based checks cannot replay it"
)


class NNLintCallback(*_BASES):
    """Check the LightningModule at the first training batch.

    `fail_on` ("warning" or "error") stops `fit` with `NNLintError` when a
    finding reaches that severity; `select` and `ignore` choose rules as on the
    command line; other keywords are `nnlint.check` settings (`dynamic=False`).
    The findings are kept in `findings` after the first batch.
    """

    def __init__(
        self,
        fail_on: str | None = None,
        select: Sequence[str] | None = None,
        ignore: Sequence[str] = (),
        **settings: Any,
    ) -> None:
        self.options = Options(fail_on, select, ignore, settings)
        self.findings: Findings | None = None

    def on_train_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.findings is not None:
            return
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        root = Path(self.options.settings.get("root", Path.cwd()))
        self.findings = checked(
            pl_module,
            self.options,
            root,
            lambda: self._check(trainer, pl_module, batch, batch_idx, optimizer),
        )
        report(self.findings, root)
        for logger in trainer.loggers:
            logger.log_metrics(counts(self.findings), step=trainer.global_step)
        fail(self.findings, self.options)

    def _check(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, optimizer: Any
    ) -> Findings:
        module, optimizer = copies(pl_module, optimizer, leave_out=(trainer,))
        if optimizer is None:
            optimizer = _configured(module)
        root = Path(self.options.settings.get("root", Path.cwd()))
        batch = detached(batch)
        if not module.automatic_optimization:
            graph_only = Step(
                module, as_batch(batch, module, "the first training batch"), None, None
            )
            return run_checks(graph_only, self.options, [skipped(module, root, _MANUAL)])
        origin = "the first training batch"
        step, result = replay(
            module, optimizer, lambda m: m.training_step(batch, batch_idx), origin
        )
        reason = None
        if loss_tensor(result) is None:
            reason = _NO_LOSS
        elif step.batch is None:
            reason = _NOT_CALLED
        elif step.loss is None:
            reason = _UNKNOWN_LOSS
        if reason is not None:
            graph_only = Step(step.model, step.batch or as_batch(batch, module, origin), None, None)
            return run_checks(graph_only, self.options, [skipped(module, root, reason)])
        step.loss.origin = "the LightningModule's training_step"
        return run_checks(step, self.options)


def _configured(module: Any) -> Any:
    """The first optimizer `configure_optimizers` builds for the copy, or None."""
    import torch

    built = module.configure_optimizers()
    for _ in range(3):  # [opt], ([opts], [scheds]), {"optimizer": opt}
        if isinstance(built, torch.optim.Optimizer) or built is None:
            return built
        if isinstance(built, dict):
            built = built.get("optimizer")
        elif isinstance(built, list | tuple) and built:
            built = built[0]
        else:
            return None
    return built if isinstance(built, torch.optim.Optimizer) else None

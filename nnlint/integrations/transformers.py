"""A Hugging Face `Trainer` callback that checks the model at the first step.

```python
from nnlint.integrations.transformers import NNLintCallback

trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[NNLintCallback()])
trainer.train()
```

Callbacks are not handed the batch, so at the first step the callback puts a
forward pre-hook on the model that keeps a detached copy of what the Trainer
calls it with (and changes nothing), and removes it at once. Before the first
optimizer step (`on_pre_optimizer_step`, when the parameters are still the
initial ones; after it, `on_step_end`, in a transformers without that event) it runs nnlint's graph and dynamic checks on a copy of the model
and of the optimizer, with that batch and the model's own loss (its `.loss`
given `labels`). The findings go to stderr and, as counts, to the Trainer's
log history (`trainer.state.log_history`); with `fail_on` set, a finding at
that level stops `train` with `NNLintError`. The model, optimizer and global
RNGs are left as they were.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

try:
    import transformers
except ImportError:
    raise ImportError(
        "nnlint.integrations.transformers needs transformers: pip install transformers"
    ) from None

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
    own_loss,
    report,
    run_checks,
    skipped,
)
from nnlint.setup.inputs import Batch
from nnlint.setup.specs import OptimizerSpec, unwrap_optimizer

__all__ = ["NNLintCallback", "NNLintError"]

_NO_LABELS = (
    "the Trainer's batch has no `labels`, so the loss is the Trainer's own "
    "(compute_loss), which a callback cannot replay"
)


class NNLintCallback(transformers.TrainerCallback):
    """Check the model at the first training step of a `transformers.Trainer`.

    `fail_on` ("warning" or "error") stops `train` with `NNLintError` when a
    finding reaches that severity; `select` and `ignore` choose rules as on the
    command line; other keywords are `nnlint.check` settings (`dynamic=False`).
    The findings are kept in `findings` after the first step.
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
        self._inputs: tuple[tuple, dict] | None = None
        self._hook: Any = None

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.findings is not None or self._hook is not None:
            return
        import torch

        def keep(module: Any, inputs: tuple, named: dict) -> None:
            if torch.is_grad_enabled() and module.training:
                self._inputs = detached((inputs, named))
                self._hook.remove()

        self._hook = kwargs["model"].register_forward_pre_hook(keep, with_kwargs=True)

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.findings is None and self._hook is not None:
            self._run(state, kwargs)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # a transformers without on_pre_optimizer_step: after the first step instead
        if self.findings is None and self._hook is not None:
            self._run(state, kwargs)

    def _run(self, state: Any, kwargs: dict) -> None:
        self._hook.remove()
        model, optimizer = kwargs["model"], kwargs.get("optimizer")
        root = Path(self.options.settings.get("root", Path.cwd()))
        self.findings = checked(model, self.options, root, lambda: self._check(model, optimizer))
        report(self.findings, root)
        state.log_history.append({**counts(self.findings), "step": state.global_step})
        fail(self.findings, self.options)

    def _check(self, model: Any, optimizer: Any) -> Findings:
        torch_optimizer = unwrap_optimizer(optimizer) if optimizer is not None else None
        model, torch_optimizer = copies(model, torch_optimizer)
        root = Path(self.options.settings.get("root", Path.cwd()))
        if self._inputs is None:
            reason = "the Trainer never called the model in training mode before its first step"
            return Findings(self.options.kept([skipped(model, root, reason)]))
        args, kwargs = self._inputs
        kwargs = {k: v for k, v in kwargs.items() if k != "num_items_in_batch"}
        loss = own_loss(model, args, kwargs)
        batch = Batch(tuple(args), kwargs, "the Trainer's first batch", kwargs.get("labels"))
        spec = None
        if torch_optimizer is not None:
            spec = OptimizerSpec.from_optimizer(torch_optimizer, model)
        if loss is None:
            return run_checks(
                Step(model, batch, None, None), self.options, [skipped(model, root, _NO_LABELS)]
            )
        loss.origin = "the model's own loss on `labels`"
        return run_checks(Step(model, batch, loss, spec), self.options)

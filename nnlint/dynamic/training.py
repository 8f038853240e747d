"""A copy of the model trained for a few real optimizer steps, one step at a time.

Zero and tiny initialisations (a residual branch's last BatchNorm gamma at
zero, adaLN-Zero, zero output layers, LoRA's B, layer scales of 1e-6) block
the gradient or the input only at init; checks that find a problem there look
again on this copy before reporting it.

A step of a large model costs as much as a check, so a check asks only for
the steps its question needs (`until`): a zero BatchNorm gamma opens after
one step, adaLN-Zero after two; what a later check asks continues from where
the last one stopped. The first step reuses the gradients of the shared
backward at init. Training draws its random numbers (dropout) from its own
generator state, so what a check sees does not depend on the checks run before.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from nnlint.dynamic.seeding import in_worker, reseed

# Enough for the gradient to pass a chain of a few zero-initialised layers.
TRAINING_STEPS = 5


@dataclass
class TrainedPasses:
    """The trained copy as it stands: `steps` optimizer steps taken so far."""

    model: Any  # train mode, after `steps` steps
    flowing: set[str]  # parameters whose gradient was nonzero at some step, init included
    grads: dict[str, Any]  # gradients at the current weights (None where none arrived)
    steps: int
    diverged: bool  # the loss stopped being finite before the last step
    stuck: bool = False  # the loss stopped requiring a gradient: no further step


class Trainer:
    """Trains the copy of a `DynamicContext` on demand; `get(until)` for the state."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.state: TrainedPasses | None = None
        self._optimizer: Any = None
        self._rng: Any = None

    def get(self, until: Callable[[TrainedPasses], bool] | None = None) -> TrainedPasses:
        """The copy after up to `TRAINING_STEPS` steps, fewer once `until(state)` holds."""
        if self.state is None:
            self.state = self._start()
        state = self.state
        while state.steps < TRAINING_STEPS and not (state.diverged or state.stuck):
            if state.steps and until is not None and until(state):
                break
            self.ctx.tick()  # here, not inside a step: a step runs whole or not at all
            try:
                self._advance(state)
            except BaseException:
                self.state = None  # half a step: start afresh if asked again
                raise
        return state

    def _start(self) -> TrainedPasses:
        # Kept for the whole run, so not one of the copies lent to a single check.
        ctx = self.ctx
        base = ctx.passes()
        model = ctx.set_mode(copy.deepcopy(ctx.model))
        self._optimizer, _, _ = ctx.optimizer_for(model)
        grads = dict(base.grads)
        for name, p in model.named_parameters():
            g = grads.get(name)
            p.grad = None if g is None else g.detach().clone()
        flowing = {n for n, g in grads.items() if g is not None and g.any()}
        diverged = base.loss is not None and not math.isfinite(base.loss)
        return TrainedPasses(model, flowing, grads, 0, diverged, stuck=not grads)

    def _advance(self, state: TrainedPasses) -> None:

        ctx, model = self.ctx, state.model
        cuda = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=cuda, enabled=not in_worker()):
            if not in_worker():
                if self._rng is None:
                    reseed()
                else:
                    _set_rng(self._rng)
            ctx.set_mode(model)  # a check may have switched dropout off to look at it
            self._optimizer.step()
            state.steps += 1
            self._optimizer.zero_grad(set_to_none=True)
            loss = ctx.loss_of(model(*ctx.args, **ctx.kwargs))
            if torch.isfinite(loss.detach()).all() and loss.requires_grad:
                loss.backward()
            if not in_worker():
                self._rng = _get_rng(cuda)
        if not torch.isfinite(loss.detach()).all():
            state.diverged = True
        elif not loss.requires_grad:
            state.stuck = True
        else:
            self._record(state)

    def _record(self, state: TrainedPasses) -> None:
        params = state.model.named_parameters()
        state.grads = {n: p.grad for n, p in params if p.requires_grad}
        state.flowing.update(n for n, g in state.grads.items() if g is not None and g.any())


def blocked_at_init(ctx: Any) -> bool:
    """Some trainable parameters get an exactly zero gradient at init: a zero-initialised
    layer (a residual branch's last BatchNorm gamma) blocks what lies behind it."""
    if ctx.loss is None:
        return False
    return any(g is not None and not g.any() for g in ctx.passes().grads.values())


def found_after_steps(ctx: Any, judge: Callable[[Any], Any]) -> Any:
    """`judge(model)` on the trained copy in eval mode after each of a few real steps,
    stopping at its first answer that is not None (None if it never gives one). For
    checks whose problem a zero-initialised layer hides at init."""
    seen: dict[int, Any] = {}

    def at(t: TrainedPasses) -> Any:
        if t.steps not in seen:
            seen[t.steps] = judge(ctx.set_mode(t.model, train=False))
        return seen[t.steps]

    trained = ctx.trained(until=lambda t: at(t) is not None)
    return at(trained) if trained.steps and not trained.diverged else None


def _get_rng(cuda: list[int]) -> tuple[Any, list[tuple[int, Any]]]:
    return torch.get_rng_state(), [(d, torch.cuda.get_rng_state(d)) for d in cuda]


def _set_rng(state: tuple[Any, list[tuple[int, Any]]]) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    for device, value in cuda:
        torch.cuda.set_rng_state(value, device)

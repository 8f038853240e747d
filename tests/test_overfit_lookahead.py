"""cannot-overfit's look-ahead: it restores the weights exactly, passes lr-bound models
sooner and never passes a model whose loss has a floor above the target."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from dynamic_models import MLP, LeNet, features, images  # noqa: E402
from nnlint.rules.cannot_overfit import CannotOverfit, _Lookahead  # noqa: E402
from test_dynamic_models import SigmoidMLP  # noqa: E402

import nnlint  # noqa: E402


def adam(lr):
    return lambda params: torch.optim.Adam(params, lr=lr)


def test_looking_ahead_restores_weights_and_buffers_bit_for_bit():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 5))
    x, y = features()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    ahead = _Lookahead(model, cap=300)
    looked = []
    for step in range(1, 21):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        if ahead.due(step, progress=0.5):
            before = {k: v.clone() for k, v in model.state_dict().items()}
            looked.append(ahead.loss(step, lambda: F.cross_entropy(model(x), y)))
            after = model.state_dict()
            assert all(torch.equal(before[k], after[k]) for k in before)
    assert len(looked) == 3  # steps 10, 15 and 20


def test_looking_ahead_waits_for_progress_and_skips_big_models():
    torch.manual_seed(0)
    ahead = _Lookahead(MLP(), cap=300)
    assert not ahead.due(10, progress=0.1) and not ahead.due(12, progress=0.9)
    assert ahead.due(15, progress=0.3)
    big = nn.Linear(4096, 4096 + 1024)  # 84 MiB of weights: two more copies cost too much
    assert not _Lookahead(big, cap=300).enabled


class SigmoidLeNet(LeNet):
    """Ten classes through a sigmoid: cross-entropy cannot go below log(1 + 9/e) = 0.63 ln 10."""

    def forward(self, x):
        return torch.sigmoid(super().forward(x))


def overfit_steps(model, optimizer, batch=None):
    """The steps the check trained for: counted with a forward pre-hook on the copy's head."""
    calls = []
    original = CannotOverfit.check

    def counting(self, ctx):
        fresh = ctx.fresh

        def fresh_counted(*args, **kwargs):
            copy = fresh(*args, **kwargs)
            copy.register_forward_pre_hook(lambda *_: calls.append(torch.is_grad_enabled()))
            return copy

        ctx.fresh = fresh_counted
        return original(self, ctx)

    CannotOverfit.check = counting
    try:
        found = nnlint.check(
            model,
            batch=batch or features(),
            loss_fn=F.cross_entropy,
            optimizer=optimizer,
            select=["NN309"],
        )
    finally:
        CannotOverfit.check = original
    return found, calls.count(True), calls.count(False)


def test_a_small_learning_rate_passes_in_fewer_steps_than_reaching_the_target():
    torch.manual_seed(0)
    found, trained, looked = overfit_steps(MLP(), adam(3e-4))
    assert found == [] and looked >= 1
    # Without looking ahead, the same model reaches the target only much later.
    torch.manual_seed(0)
    model = MLP()
    x, y = features()
    x, y = x[:8], y[:8]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
    losses = []
    while len(losses) < 300 and (not losses or losses[-1] > losses[0] / 2):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        losses.append(float(loss.detach()))
        loss.backward()
        optimizer.step()
    assert trained < 0.8 * len(losses)


@pytest.mark.parametrize(
    "build, batch, lr",
    [(SigmoidMLP, features, 3e-3), (SigmoidLeNet, images, 3e-4), (SigmoidLeNet, images, 1e-3)],
)
def test_a_loss_with_a_floor_above_the_target_never_passes_by_looking_ahead(build, batch, lr):
    torch.manual_seed(0)
    found, trained, looked = overfit_steps(build(), adam(lr), batch())
    assert [f.code for f in found] == ["NN309"]
    assert looked >= 1  # it looked ahead and still failed


def test_looking_ahead_goes_farther_only_while_the_loss_falls(monkeypatch):
    monkeypatch.setattr(_Lookahead, "AHEAD", (2, 4, 8))
    torch.manual_seed(0)
    model = MLP()
    ahead = _Lookahead(model, cap=300)
    ahead.last = [p.detach().clone() - 0.01 for p in ahead.params]
    rising = iter([2.0, 3.0, 1.0])  # the second look is worse: the third is not run
    calls = []

    def forward():
        calls.append(1)
        return torch.tensor(next(rising))

    assert ahead.loss(10, forward, goal=0.5, last=2.5) == 2.0
    assert len(calls) == 2
    calls.clear()
    assert ahead.loss(15, lambda: calls.append(1) or torch.tensor(4.0), last=2.5) == float("inf")
    assert len(calls) == 1  # no lower than the loss at this step: no farther look
    falling = iter([2.0, 1.5, 0.25])
    assert ahead.loss(20, lambda: torch.tensor(next(falling)), goal=0.5, last=2.5) == 0.25

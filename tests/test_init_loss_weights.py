"""init-loss (NN301) on binary losses that weigh their samples: ln 2 is not their value at init."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import torch.nn as nn  # noqa: E402

import nnlint  # noqa: E402


def findings(loss_fn):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 1))
    x = torch.randn(64, 20)
    y = (x[:, :1] > 0.5).float()  # about 30% positives
    return nnlint.check(model, select=["NN301"], batch=(x, y), loss_fn=loss_fn, verbose=True)


def test_pos_weight_is_not_a_large_init_loss():
    # at zero logits the loss is ln 2 * (1 + 2 * 30%), far above ln 2 but healthy
    found = findings(nn.BCEWithLogitsLoss(pos_weight=torch.tensor(3.0)))
    assert [f.code for f in found] == ["NN007"]
    assert "weighted (pos_weight)" in found[0].message


def test_unweighted_binary_loss_is_still_judged():
    assert [f.code for f in findings(nn.BCEWithLogitsLoss())] == []
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 1))
    nn.init.normal_(model[2].weight, std=3.0)
    x = torch.randn(64, 20)
    y = (x[:, :1] > 0.5).float()
    found = nnlint.check(model, select=["NN301"], batch=(x, y), loss_fn=nn.BCEWithLogitsLoss())
    assert [f.code for f in found] == ["NN301"]

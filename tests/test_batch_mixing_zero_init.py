"""batch-mixing behind a zero-initialised residual BatchNorm (zero_init_residual)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

import nnlint


class MixingBlock(nn.Module):
    """A residual block whose last BatchNorm gamma starts at zero; `mix` adds the batch mean."""

    def __init__(self, channels, mix):
        super().__init__()
        self.mix = mix
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        if self.mix:
            h = h + h.mean(0, keepdim=True)
        return F.relu(x + self.bn2(self.conv2(h)))


class Net(nn.Module):
    def __init__(self, mix):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.block = MixingBlock(8, mix)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.block(self.stem(x)).mean((2, 3)))


def _check(mix):
    g = torch.Generator().manual_seed(0)
    batch = (torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 4, (8,), generator=g))
    return nnlint.check(
        lambda: Net(mix),
        batch=batch,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
        select=["NN303"],
    )


def test_mixing_behind_a_zero_gamma_is_found_after_a_step():
    assert [f.code for f in _check(mix=True)] == ["NN303"]


def test_the_same_block_without_mixing_is_clean():
    assert _check(mix=False) == []

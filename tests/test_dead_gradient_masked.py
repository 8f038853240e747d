"""dead-gradient and a term a library masks out where the loss reads (Funnel's shape)."""

from __future__ import annotations

import sys
import textwrap

import torch

import nnlint

# An attention-like layer whose position bias is masked out at position 0, the only
# position the classifier reads: its gradient is exactly zero, while the layer's
# weight trains. Written here; installed below as a library or kept as user code.
LAYER = """
import torch
import torch.nn as nn


class MaskedBias(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.proj = nn.Parameter(torch.randn(dim, dim) / dim ** 0.5)
        self.pos_bias = nn.Parameter(torch.randn(dim) * 0.02)

    def forward(self, x):
        mask = torch.ones(x.shape[1], 1)
        mask[0] = 0.0
        return x @ self.proj + self.pos_bias * mask


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.layer = MaskedBias(8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.layer(self.embed(x))[:, 0])
"""


def _batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(16, 5, 4, generator=g), torch.randint(0, 3, (16,), generator=g)


def _install(tmp_path, monkeypatch, where, name):
    folder = tmp_path / where / name
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(textwrap.dedent(LAYER), encoding="utf-8")
    monkeypatch.syspath_prepend(str(folder.parent))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return __import__(name)


def test_a_term_a_library_masks_where_the_loss_reads_is_not_dead(tmp_path, monkeypatch):
    lib = _install(tmp_path, monkeypatch, "lib/site-packages", "zoolib_masked")
    found = nnlint.check(lib.Classifier, batch=_batch(), select=["NN306"])
    assert found == []


def test_the_same_term_in_the_users_own_module_is_reported(tmp_path, monkeypatch):
    mine = _install(tmp_path, monkeypatch, "project", "zoo_masked_mine")
    found = nnlint.check(mine.Classifier, batch=_batch(), select=["NN306"])
    assert [f.code for f in found] == ["NN306"]
    assert "`pos_bias`" in found[0].message and "exactly zero" in found[0].message

"""Bugs behind a zero-initialised residual BatchNorm (zero_init_residual): batch-mixing
and randomness left on in eval mode are judged again after a few real steps; so is the
update ratio of weights that all lie behind a zero output layer."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

import nnlint


class MixingBlock(nn.Module):
    """A residual block whose last BatchNorm gamma starts at zero; `mix` adds the batch mean."""

    def __init__(self, channels, mix, noise=False):
        super().__init__()
        self.mix, self.noise = mix, noise
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        if self.mix:
            h = h + float(self.mix) * h.mean(0, keepdim=True)
        if self.noise:
            h = F.dropout(h, 0.5, training=True)
        return F.relu(x + self.bn2(self.conv2(h)))


class Net(nn.Module):
    def __init__(self, mix, noise=False):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.block = MixingBlock(8, mix, noise)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.block(self.stem(x)).mean((2, 3)))


def _check(mix, noise=False, select=("NN303",)):
    g = torch.Generator().manual_seed(0)
    batch = (torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 4, (8,), generator=g))
    return nnlint.check(
        lambda: Net(mix, noise),
        batch=batch,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
        select=list(select),
    )


def test_mixing_behind_a_zero_gamma_is_found_after_a_step():
    assert [f.code for f in _check(mix=True)] == ["NN303"]


def test_faint_mixing_behind_a_zero_gamma_is_found_by_the_input_gradient():
    # After a few steps the gamma is still small: the outputs move by less than the
    # forward comparison resolves, the input gradient still reaches other samples.
    assert [f.code for f in _check(mix=1e-4)] == ["NN303"]


def test_the_same_block_without_mixing_is_clean():
    assert _check(mix=False) == []


def test_dropout_left_on_behind_a_zero_gamma_is_found_after_a_step():
    found = _check(mix=False, noise=True, select=("NN313",))
    assert [f.code for f in found] == ["NN313"]


def test_the_same_block_without_noise_is_deterministic_in_eval():
    assert _check(mix=False, select=("NN313",)) == []


class FaintTokenMixer(nn.Module):
    """Token ids in; a batch mean too faint to move the output at init (as a key
    projection's is behind near-uniform attention) mixes the samples."""

    def __init__(self, mix):
        super().__init__()
        self.mix = mix
        self.emb = nn.Embedding(32, 8)
        self.fc = nn.Linear(8, 4)

    def forward(self, tokens):
        h = self.emb(tokens)
        if self.mix:
            h = h + 1e-7 * h.mean(0, keepdim=True)
        return self.fc(h.mean(1))


def _tokens_check(mix):
    g = torch.Generator().manual_seed(0)
    batch = (torch.randint(0, 32, (8, 6), generator=g), torch.randint(0, 4, (8,), generator=g))
    return nnlint.check(lambda: FaintTokenMixer(mix), batch=batch, select=["NN303"])


def test_faint_mixing_of_token_models_is_found_through_the_embeddings():
    assert [f.code for f in _tokens_check(mix=True)] == ["NN303"]


def test_a_token_model_without_mixing_is_clean():
    assert _tokens_check(mix=False) == []


class ZeroOutput(nn.Module):
    """A body in front of a zero-initialised output layer (adaLN-Zero, a zero conv)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU())
        self.out = nn.Linear(32, 4)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x):
        return self.out(self.body(x))


def _update_ratio(lr):
    g = torch.Generator().manual_seed(0)
    batch = (torch.randn(16, 8, generator=g), torch.randint(0, 4, (16,), generator=g))
    return nnlint.check(
        ZeroOutput,
        batch=batch,
        optimizer=lambda params: torch.optim.SGD(params, lr=lr),
        select=["NN307"],
    )


def test_a_far_too_high_lr_behind_a_zero_output_layer_is_found_after_a_step():
    # At init only the zero layer gets a gradient, and its update ratio is not judged.
    found = _update_ratio(1e4)
    assert [f.code for f in found] == ["NN307"]
    assert "lower the learning rate" in found[0].message


def test_a_usual_lr_behind_a_zero_output_layer_is_clean():
    assert _update_ratio(0.05) == []

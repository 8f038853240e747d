"""Which task the dynamic checks assume, from what, and where the user reads it
(issue 13): next-token targets also flattened or sliced, HF `labels` (which the
model shifts itself), masked-LM labels are not causal; `--verbose` and the JSON
summary name the task and the loss and what chose each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

import nnlint  # noqa: E402
from nnlint.setup.task import infer_task  # noqa: E402


class LM(nn.Module):
    def __init__(self, vocab=20):
        super().__init__()
        self.emb = nn.Embedding(vocab, 16)
        self.head = nn.Linear(16, vocab)

    def forward(self, ids, labels=None):
        return self.head(self.emb(ids))


def tokens(n=4, t=9):
    return torch.randint(0, 20, (n, t), generator=torch.Generator().manual_seed(0))


def test_sliced_next_token_targets_with_left_out_positions_are_causal():
    x = tokens()
    y = x[:, 1:].clone()
    y[:, -2:] = -100  # padding left out of the loss
    assert infer_task(LM(), (x,), {}, y.reshape(-1), None) == ("causal-lm", "next-token targets")


def test_hf_labels_equal_to_the_input_are_causal_when_the_model_shifts_them():
    x = tokens()
    labels = x.clone()
    labels[:, -1] = -100
    task, source = infer_task(LM(), (), {"input_ids": x, "labels": labels}, labels, None, True)
    assert task == "causal-lm" and "labels" in source
    # the same labels as a plain target are not next tokens
    assert infer_task(LM(), (), {"input_ids": x}, labels, None)[0] is None


def test_masked_lm_labels_are_not_causal_and_the_source_says_why():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=30,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(config)
    x = tokens(t=12)
    labels = torch.full_like(x, -100)
    labels[:, 3] = x[:, 3]
    masked = x.clone()
    masked[:, 3] = 1  # the [MASK] id
    from nnlint.setup.resolve import resolve

    setup = resolve(model, (), {"input_ids": masked, "labels": labels})
    assert setup.task is None and "masked-LM" in setup.task_source
    assert setup.describe()["loss_from"] == "the model's own loss on `labels`"


LM_SOURCE = """
import torch
import torch.nn as nn


class Unmasked(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 20)

    def forward(self, t):
        h = self.emb(t)
        return self.head(h + self.attn(h, h, h, need_weights=False)[0])


def batch():
    tokens = torch.randint(0, 20, (8, 13), generator=torch.Generator().manual_seed(0))
    return tokens[:, :-1], tokens[:, 1:].reshape(-1)
"""


def test_verbose_and_the_json_summary_name_the_task_and_the_loss(tmp_path: Path):
    (tmp_path / "lm.py").write_text(textwrap.dedent(LM_SOURCE))
    result = subprocess.run(
        [sys.executable, "-m", "nnlint", "--isolated", "lm.py", "--model", "lm:Unmasked"]
        + ["--data", "lm:batch", "--no-capture", "--select", "NN304"]
        + ["--format", "json", "--verbose"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ""},
        timeout=600,
    )
    setup = json.loads(result.stdout)["summary"]["setup"]
    assert setup == {
        "task": "causal-lm",
        "task_from": "next-token targets",
        "loss": "cross_entropy",
        "loss_from": "the batch's class targets",
    }, result.stderr
    assert "nnlint: task causal-lm (from next-token targets); loss cross_entropy" in result.stderr
    codes = [f["code"] for f in json.loads(result.stdout)["findings"]]
    assert codes == ["NN304"], result.stdout


class BiTagger(nn.Module):
    """A bidirectional LSTM tagger: each position's tag may read the whole sentence."""

    def __init__(self, vocab=50, tags=5, dim=16):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim, padding_idx=0)
        self.lstm = nn.LSTM(dim, dim, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * dim, tags)

    def forward(self, tokens):
        return F.log_softmax(self.out(self.lstm(self.emb(tokens))[0]), dim=-1)


def test_a_bidirectional_tagger_with_real_tags_is_no_causal_leak():
    from torch.nn.utils.rnn import pad_sequence

    torch.manual_seed(0)
    sentences = [torch.randint(1, 50, (int(torch.randint(5, 30, (1,))),)) for _ in range(16)]
    tokens = pad_sequence(sentences, batch_first=True, padding_value=0)
    tags = [torch.randint(0, 5, s.shape) for s in sentences]
    tags = pad_sequence(tags, batch_first=True, padding_value=-100)

    def loss_fn(logp, t):
        return F.nll_loss(logp.reshape(-1, 5), t.reshape(-1), ignore_index=-100)

    found = nnlint.check(BiTagger(), batch=(tokens, tags), loss_fn=loss_fn, select=["NN304"])
    assert [f.code for f in found] == []

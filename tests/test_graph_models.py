"""Graph rules on real architectures: healthy models stay silent, planted smells are found
at the line the user would edit."""

from __future__ import annotations

import textwrap

import pytest

torch = pytest.importorskip("torch")

from nnlint.api import check_example  # noqa: E402

CNN = """
import torch
import torch.nn as nn

class Block(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.skip = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + self.skip(x))

class ResNet(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.layers = nn.Sequential(Block(16, 16, 1), Block(16, 32, 2), Block(32, 64, 2))
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(self.drop(x))

model = ResNet()
loss_fn = nn.CrossEntropyLoss()
"""

GPT = """
import torch
import torch.nn as nn
import torch.nn.functional as F

class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, self.heads, C // self.heads).transpose(1, 2)
        k = k.view(B, T, self.heads, C // self.heads).transpose(1, 2)
        v = v.view(B, T, self.heads, C // self.heads).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.proj(y)

class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(0.1))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))

class GPT(nn.Module):
    def __init__(self, vocab=64, dim=32, heads=4, layers=2, block=16):
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(block, dim)
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.tok.weight

    def forward(self, idx):
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.tok(idx) + self.pos(pos)
        return self.head(self.ln_f(self.blocks(x)))

model = GPT()
loss_fn = nn.CrossEntropyLoss()
"""

DATA_DEPENDENT = """
import torch
import torch.nn as nn

class Adaptive(nn.Module):
    '''Runs its shared layer a data-dependent number of times (fx cannot trace this).'''
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(8, 16)
        self.step = nn.Linear(16, 16)
        self.out = nn.Linear(16, 3)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        steps = 1
        while h.norm() > 1.0 and steps < 4:
            h = torch.tanh(self.step(h)) * 0.5
            steps += 1
        if h.mean() > 0:
            h = -h
        return self.out(h)

model = Adaptive()
batch = torch.randn(4, 8) * 10
loss_fn = nn.CrossEntropyLoss()
"""


def _line(source: str, text: str) -> int:
    lines = textwrap.dedent(source).splitlines()
    matches = [i + 1 for i, line in enumerate(lines) if text in line]
    assert len(matches) == 1, (text, matches)
    return matches[0]


def _graph(source: str) -> list:
    return check_example(source, select=["NN1", "NN004", "NN005"])


@pytest.mark.parametrize("source", [CNN, GPT, DATA_DEPENDENT], ids=["cnn", "gpt", "data-dependent"])
def test_healthy_hand_written_models_have_no_findings(source):
    assert _graph(source) == []


def test_cnn_planted_bias_found_at_conv_line():
    planted = CNN.replace(
        "self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)",
        "self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)",
    )
    found = _graph(planted)
    assert {(f.code, f.line) for f in found} == {
        ("NN101", _line(planted, "self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)"))
    }
    assert "bn2" in found[0].message


def test_cnn_planted_dropout_before_bn():
    planted = CNN.replace(
        "self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)",
        "self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.Dropout(0.1), nn.BatchNorm2d(16)",
    )
    found = _graph(planted)
    assert [(f.code, f.line) for f in found] == [("NN104", _line(planted, "self.stem ="))]


def test_gpt_planted_view_as_permute_at_forward_line():
    planted = GPT.replace(
        "y = y.transpose(1, 2).contiguous().view(B, T, C)",
        "y = y.transpose(1, 2).contiguous().view(B, T, C).view(B, C, T).transpose(1, 2)",
    )
    found = _graph(planted)
    assert {(f.code, f.line) for f in found} == {("NN103", _line(planted, ".view(B, C, T)"))}


def test_gpt_planted_missing_activation_at_second_layer():
    planted = GPT.replace("nn.GELU(), ", "")
    found = _graph(planted)
    assert {(f.code, f.line) for f in found} == {
        ("NN105", _line(planted, "self.mlp = nn.Sequential"))
    }


def test_data_dependent_model_planted_unused_parameter():
    planted = DATA_DEPENDENT.replace(
        "self.out = nn.Linear(16, 3)",
        "self.out = nn.Linear(16, 3)\n        self.gate = nn.Linear(16, 1)",
    )
    found = _graph(planted)
    assert [(f.code, f.line) for f in found] == [("NN106", _line(planted, "self.gate ="))]
    assert "gate.weight" in found[0].message


transformers = pytest.importorskip("transformers")

HF = """
import torch
import torch.nn as nn
from transformers import (BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                          LlamaForCausalLM, LlamaModel)

def gpt2():
    config = GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=96, n_positions=32,
                        bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config)

def llama():
    config = LlamaConfig(num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         hidden_size=32, intermediate_size=64, vocab_size=96,
                         max_position_embeddings=32)
    return LlamaForCausalLM(config)

class BertClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        config = BertConfig(num_hidden_layers=2, num_attention_heads=2, hidden_size=32,
                            intermediate_size=64, vocab_size=96, max_position_embeddings=32)
        self.bert = BertModel(config)
        self.head = nn.Linear(32, 4)

    def forward(self, input_ids, attention_mask=None):
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(hidden[:, 0])

class LlamaTagger(nn.Module):
    def __init__(self):
        super().__init__()
        config = LlamaConfig(num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                             hidden_size=32, intermediate_size=64, vocab_size=96)
        self.llama = LlamaModel(config)
        self.head = nn.Linear(32, 5)

    def forward(self, input_ids):
        return self.head(self.llama(input_ids).last_hidden_state)

ids = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(0))
loss_fn = nn.CrossEntropyLoss()
"""


@pytest.mark.parametrize(
    "build",
    [
        "model = gpt2()",
        "model = llama()",
        "model = BertClassifier()\nbatch = {'input_ids': ids}",
        "model = LlamaTagger()\nbatch = ids",
    ],
    ids=["gpt2", "llama", "bert", "llama-tagger"],
)
def test_healthy_hf_models_have_no_findings(build):
    assert _graph(HF + build) == []


def test_hf_gpt2_planted_smell_points_at_the_users_building_line():
    source = HF + "model = gpt2()\nmodel.transformer.h[1].mlp.act = nn.Identity()\n"
    found = _graph(source)
    assert [(f.code, f.line) for f in found] == [
        ("NN105", _line(source, "return GPT2LMHeadModel(config)"))
    ]
    assert "h.1.mlp.c_proj" in found[0].message
    assert "transformers/models/gpt2/modeling_gpt2.py" in found[0].note


def test_hf_bert_planted_softmax_output():
    source = HF.replace(
        "self.head = nn.Linear(32, 4)",
        "self.head = nn.Sequential(nn.Linear(32, 4), nn.Softmax(dim=-1))",
    )
    source += "model = BertClassifier()\nbatch = {'input_ids': ids}\n"
    found = _graph(source)
    assert [(f.code, f.line) for f in found] == [("NN102", _line(source, "nn.Softmax(dim=-1)"))]


def test_hf_llama_planted_activation_on_logits():
    source = HF.replace(
        "return self.head(self.llama(input_ids).last_hidden_state)",
        "return torch.relu(self.head(self.llama(input_ids).last_hidden_state))",
    )
    source += "model = LlamaTagger()\nbatch = ids\n"
    found = _graph(source)
    assert [(f.code, f.line) for f in found] == [("NN108", _line(source, "return torch.relu("))]


def test_hf_llama_planted_bottleneck_free_stack():
    source = HF.replace(
        "self.head = nn.Linear(32, 5)",
        "self.mid = nn.Linear(32, 64)\n        self.head = nn.Linear(64, 5)",
    )
    source = source.replace(
        "return self.head(self.llama(input_ids).last_hidden_state)",
        "return self.head(self.mid(self.llama(input_ids).last_hidden_state))",
    )
    source += "model = LlamaTagger()\nbatch = ids\n"
    found = _graph(source)
    assert [(f.code, f.line) for f in found] == [
        ("NN105", _line(source, "self.head = nn.Linear(64, 5)"))
    ]

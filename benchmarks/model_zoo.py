"""nnlint's graph and dynamic phases over a zoo of real architectures, random weights.

Two tables, in one run:

  * healthy: every model of the zoo, as published (its own initialisation, zero-init
    layers included), with a real batch, loss and optimizer handed to
    `nnlint.check(...)` as a training script would. A healthy model should give no
    warning or error; every one printed is either a true finding or a false alarm
    to explain (see benchmarks/README.md).
  * planted: one bug of each dynamic category planted into the first `--planted N`
    models that it applies to (a block's output detached, causality broken, the
    output made independent of the input, a NaN, parameters left out of the
    optimizer, softmax before cross-entropy, batch statistics mixed across samples,
    a summed loss, a learning rate far too high, dropout left on in eval), each run
    with only the rules that category should trigger; recall per category.

The zoo (everything built with random weights from configs; nothing is downloaded):

  * timm: the smallest variant of every model family (timm module) that builds on
    the CPU at 64x64 (else its default size) in a couple of seconds.
  * transformers: tiny configs (2 layers, width 32..64) of ~35 model types, as
    causal LM, masked LM, seq2seq, sequence and token classification and vision
    classification.
  * torchvision: its classification models, small input.
  * classics written here: MLP, LeNet, a ResNet with zero-init last BN, GRU
    classifier, LSTM LM, char transformer with a flattened loss, a DiT block with
    adaLN-Zero, a diffusion UNet with a zero-initialised output conv, a LoRA
    classifier, a ViT with a 1e-6 class token, an autoencoder, a GPT with
    zero-initialised output projections.

Each model runs in a forked child with a per-model time limit (`--limit`), so one
slow or hanging model cannot stall the run. Needs timm, transformers and
torchvision: run it with the zoo venv (see benchmarks/README.md):

  benchmarks/.cache/venv-zoo/bin/python benchmarks/model_zoo.py --quick
  benchmarks/.cache/venv-zoo/bin/python benchmarks/model_zoo.py --only timm:resnet18
  benchmarks/.cache/venv-zoo/bin/python benchmarks/model_zoo.py --source timm --json out.json
  benchmarks/.cache/venv-zoo/bin/python benchmarks/model_zoo.py --no-healthy --planted 50
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import multiprocessing as mp
import os
import sys
import time
import traceback
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGE = 64
CLASSES = 10
BATCH = 16
SEQ = 16
VOCAB = 128


@dataclass
class Case:
    """What a training script would hand to nnlint: model, batch, loss, optimizer."""

    model: nn.Module
    batch: Any
    loss_fn: Any = None
    optimizer: Callable | None = None
    # image | vector | text-cls | token-cls | causal | mlm | seq2seq | regression
    kind: str = "image"
    image: tuple | None = None


@dataclass
class Entry:
    name: str
    source: str
    build: Callable[[], Case]
    tags: set = field(default_factory=set)


# -- batches ---------------------------------------------------------------------


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def image_batch(size: int = IMAGE, channels: int = 3, n: int = BATCH, classes: int = CLASSES):
    g = _gen()
    x = torch.randn(n, channels, size, size, generator=g)
    return x, torch.randint(0, classes, (n,), generator=g)


def adamw(lr: float = 1e-3) -> Callable:
    return lambda params: torch.optim.AdamW(params, lr=lr)


def sgd(lr: float = 0.1) -> Callable:
    return lambda params: torch.optim.SGD(params, lr=lr, momentum=0.9)


# -- classics, written here ----------------------------------------------------------


class MLP(nn.Module):
    def __init__(self, features=32, classes=CLASSES):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(features, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU()
        )
        self.head = nn.Linear(128, classes)

    def forward(self, x):
        return self.head(self.net(x))


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 5, padding=2)
        self.conv2 = nn.Conv2d(16, 32, 5, padding=2)
        self.fc1 = nn.Linear(32 * 16 * 16, 128)
        self.fc2 = nn.Linear(128, CLASSES)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class Block(nn.Module):
    """A basic residual block whose last BatchNorm starts at zero (zero_init_residual)."""

    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x):
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class ZeroInitResNet(nn.Module):
    def __init__(self, width=16):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.blocks = nn.Sequential(Block(width), Block(width))
        self.fc = nn.Linear(width, CLASSES)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


class GRUClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 32)
        self.rnn = nn.GRU(32, 64, batch_first=True)
        self.fc = nn.Linear(64, 4)

    def forward(self, tokens):
        out, _ = self.rnn(self.emb(tokens))
        return self.fc(out[:, -1])


class LSTMLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 32)
        self.rnn = nn.LSTM(32, 64, batch_first=True)
        self.fc = nn.Linear(64, VOCAB)

    def forward(self, tokens):
        return self.fc(self.rnn(self.emb(tokens))[0])


class CausalSelfAttention(nn.Module):
    def __init__(self, dim, heads, zero_proj=False):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        if zero_proj:
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class GPTBlock(nn.Module):
    def __init__(self, dim, heads, zero_proj=False):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, zero_proj)
        self.ln2 = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, 4 * dim)
        self.out = nn.Linear(4 * dim, dim)
        if zero_proj:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class CharGPT(nn.Module):
    def __init__(self, dim=64, layers=2, zero_proj=False):
        super().__init__()
        self.tok = nn.Embedding(VOCAB, dim)
        self.pos = nn.Embedding(SEQ, dim)
        self.blocks = nn.Sequential(*[GPTBlock(dim, 4, zero_proj) for _ in range(layers)])
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, VOCAB)

    def forward(self, tokens):
        h = self.tok(tokens) + self.pos(torch.arange(tokens.shape[1], device=tokens.device))
        return self.head(self.ln(self.blocks(h)))


def flat_lm_loss(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


class AdaLNZeroBlock(nn.Module):
    """A DiT-style block: the conditioning MLP that makes shift/scale/gate starts at zero."""

    def __init__(self, dim):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 3 * dim))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x, c):
        shift, scale, gate = self.ada(c).unsqueeze(1).chunk(3, -1)
        return x + gate * self.mlp(self.norm(x) * (1 + scale) + shift)


class TinyDiT(nn.Module):
    def __init__(self, dim=64, patch=4, size=16):
        super().__init__()
        self.patch = patch
        self.embed = nn.Conv2d(3, dim, patch, patch)
        self.pos = nn.Parameter(torch.randn(1, (size // patch) ** 2, dim) * 0.02)
        self.t_embed = nn.Sequential(nn.Linear(1, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.blocks = nn.ModuleList([AdaLNZeroBlock(dim) for _ in range(2)])
        self.final = nn.Linear(dim, patch * patch * 3)
        nn.init.zeros_(self.final.weight)
        nn.init.zeros_(self.final.bias)

    def forward(self, x):
        n, _, h, w = x.shape
        t = x.flatten(1).mean(1, keepdim=True)
        c = self.t_embed(t)
        z = self.embed(x).flatten(2).transpose(1, 2) + self.pos
        for block in self.blocks:
            z = block(z, c)
        p = self.patch
        z = self.final(z).view(n, h // p, w // p, 3, p, p)
        return z.permute(0, 3, 1, 4, 2, 5).reshape(n, 3, h, w)


def zero_module(module):
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class TinyUNet(nn.Module):
    """A diffusion-style UNet: GroupNorm-SiLU-conv blocks, skip concat, zero output conv."""

    def __init__(self, ch=16):
        super().__init__()
        self.inc = nn.Conv2d(3, ch, 3, padding=1)
        self.down = nn.Sequential(nn.GroupNorm(4, ch), nn.SiLU(), nn.Conv2d(ch, 2 * ch, 3, 2, 1))
        self.mid = nn.Sequential(
            nn.GroupNorm(8, 2 * ch), nn.SiLU(), nn.Conv2d(2 * ch, 2 * ch, 3, 1, 1)
        )
        self.up = nn.Sequential(
            nn.GroupNorm(8, 2 * ch), nn.SiLU(), nn.ConvTranspose2d(2 * ch, ch, 4, 2, 1)
        )
        self.outb = nn.Sequential(nn.GroupNorm(4, 2 * ch), nn.SiLU())
        self.out = zero_module(nn.Conv2d(2 * ch, 3, 3, padding=1))

    def forward(self, x):
        h0 = self.inc(x)
        h = self.up(self.mid(self.down(h0)))
        return self.out(self.outb(torch.cat([h, h0], 1)))


class LoRALinear(nn.Module):
    def __init__(self, fin, fout, rank=4):
        super().__init__()
        self.base = nn.Linear(fin, fout)
        self.base.requires_grad_(False)
        self.a = nn.Parameter(torch.randn(rank, fin) / math.sqrt(fin))
        self.b = nn.Parameter(torch.zeros(fout, rank))

    def forward(self, x):
        return self.base(x) + x @ self.a.t() @ self.b.t()


class LoRAClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = LoRALinear(32, 128)
        self.l2 = LoRALinear(128, 128)
        self.head = nn.Linear(128, CLASSES)

    def forward(self, x):
        return self.head(F.relu(self.l2(F.relu(self.l1(x)))))


class TinyViT(nn.Module):
    def __init__(self, dim=64, patch=8, size=32):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 1e-6)
        self.pos = nn.Parameter(torch.randn(1, (size // patch) ** 2 + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, 4, 2 * dim, 0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, CLASSES)

    def forward(self, x):
        z = self.embed(x).flatten(2).transpose(1, 2)
        z = torch.cat([self.cls.expand(len(z), -1, -1), z], 1) + self.pos
        return self.head(self.norm(self.encoder(z))[:, 0])


class AutoEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8))
        self.dec = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 64))

    def forward(self, x):
        return self.dec(F.relu(self.enc(x)))


class Conv1dClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(4, 32, 5, padding=2), nn.BatchNorm1d(32), nn.ReLU(),
            nn.Conv1d(32, 32, 5, padding=2), nn.BatchNorm1d(32), nn.ReLU(),
            nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(32, 5),
        )  # fmt: skip

    def forward(self, x):
        return self.net(x)


def _tokens(n=BATCH, t=SEQ, vocab=VOCAB, seed=0):
    return torch.randint(0, vocab, (n, t), generator=_gen(seed))


def _next_token(n=BATCH):
    data = torch.randint(0, VOCAB, (n, SEQ + 1), generator=_gen())
    return data[:, :-1], data[:, 1:]


def classic_entries() -> list[Entry]:
    def vector(model, features=32, classes=CLASSES):
        g = _gen()
        x = torch.randn(BATCH, features, generator=g)
        return Case(
            model,
            (x, torch.randint(0, classes, (BATCH,), generator=g)),
            nn.CrossEntropyLoss(),
            adamw(),
            "vector",
        )

    def regress(model, x):
        y = torch.randn(x.shape, generator=_gen(1))
        return Case(model, (x, y), nn.MSELoss(), adamw(1e-4), "regression")

    def causal(model):
        x, y = _next_token()
        return Case(model, (x, y), flat_lm_loss, adamw(3e-4), "causal")

    builds = {
        "mlp": lambda: vector(MLP()),
        "lenet": lambda: Case(LeNet(), image_batch(), nn.CrossEntropyLoss(), sgd(0.01)),
        "zero_init_resnet": lambda: Case(ZeroInitResNet(), image_batch(32), nn.CrossEntropyLoss(), sgd(0.1)),
        "gru_classifier": lambda: Case(GRUClassifier(), (_tokens(), torch.randint(0, 4, (BATCH,), generator=_gen())), nn.CrossEntropyLoss(), adamw(), "text-cls"),
        "lstm_lm": lambda: causal(LSTMLM()),
        "char_gpt": lambda: causal(CharGPT()),
        "char_gpt_zero_proj": lambda: causal(CharGPT(zero_proj=True)),
        "dit_adaln_zero": lambda: regress(TinyDiT(), torch.randn(BATCH, 3, 16, 16, generator=_gen())),
        "unet_zero_module": lambda: regress(TinyUNet(), torch.randn(BATCH, 3, 16, 16, generator=_gen())),
        "lora_classifier": lambda: vector(LoRAClassifier()),
        "vit_cls_token_1e-6": lambda: Case(TinyViT(), image_batch(32), nn.CrossEntropyLoss(), adamw()),
        "autoencoder": lambda: Case(AutoEncoder(), (lambda x: (x, x))(torch.randn(BATCH, 64, generator=_gen())), nn.MSELoss(), adamw(), "regression"),
        "conv1d_classifier": lambda: Case(Conv1dClassifier(), (torch.randn(BATCH, 4, 64, generator=_gen()), torch.randint(0, 5, (BATCH,), generator=_gen())), nn.CrossEntropyLoss(), adamw(), "vector"),
    }  # fmt: skip
    return [Entry(f"classic:{k}", "classic", v) for k, v in builds.items()]


# -- torchvision -------------------------------------------------------------------------

TORCHVISION = [
    "resnet18", "resnet34", "resnet50", "resnext50_32x4d", "wide_resnet50_2",
    "alexnet", "vgg11", "vgg11_bn", "squeezenet1_0", "squeezenet1_1",
    "densenet121", "googlenet", "inception_v3", "mobilenet_v2", "mobilenet_v3_small",
    "mobilenet_v3_large", "mnasnet0_5", "mnasnet1_0", "shufflenet_v2_x0_5",
    "shufflenet_v2_x1_0", "efficientnet_b0", "efficientnet_v2_s", "regnet_x_400mf",
    "regnet_y_400mf", "convnext_tiny", "vit_b_16", "swin_t", "swin_v2_t", "maxvit_t",
]  # fmt: skip

_TV_KWARGS = {
    "resnet18": {"zero_init_residual": True},
    "resnet50": {"zero_init_residual": True},
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
    "vit_b_16": {"image_size": 64},
}
# torchvision's reference recipes: lr 0.01 for AlexNet and VGG, 0.1 (batch 256) elsewhere.
_TV_LR = {"alexnet": 0.01, "vgg11": 0.01, "vgg11_bn": 0.01}
# ... and AdamW for the transformer-era models (ConvNeXt, Swin, ViT, MaxViT).
_TV_ADAMW = {"convnext_tiny", "swin_t", "swin_v2_t", "vit_b_16", "maxvit_t"}
# MaxViT partitions into 7x7 windows at every stage: 224 is the smallest input.
_TV_SIZE = {"inception_v3": 96, "alexnet": 96, "maxvit_t": 224}


def torchvision_entries() -> list[Entry]:
    def build(name):
        import torchvision

        model = torchvision.models.get_model(
            name, weights=None, num_classes=CLASSES, **_TV_KWARGS.get(name, {})
        )
        optimizer = adamw(1e-3) if name in _TV_ADAMW else sgd(_TV_LR.get(name, 0.1))
        return Case(model, image_batch(_TV_SIZE.get(name, IMAGE)), nn.CrossEntropyLoss(), optimizer)

    return [Entry(f"torchvision:{n}", "torchvision", lambda n=n: build(n)) for n in TORCHVISION]


# -- timm ------------------------------------------------------------------------------------

# Name parts of the small variants, smallest first: the representative of each family is
# its first model (by name) holding the earliest part.
_SMALL = ("atto", "femto", "pico", "nano", "tiny", "xxs", "xs", "small", "s0", "b0", "mini",
          "18", "_s", "t", "small", "base", "")  # fmt: skip
# Families that need a large input, a GPU, an extra package or minutes to build at any size.
_TIMM_SKIP = {"_builder", "_features", "_hub", "_registry", "_helpers", "_efficientnet_builder"}


# Name parts of variants too large for a CPU benchmark (hundreds of millions of parameters).
_TIMM_HUGE = ("dino", "clip", "siglip", "large", "huge", "giant", "400m", "412m", "300m", "167m",
              "88m", "samvit", "so400m", "radio")  # fmt: skip


def timm_families() -> dict[str, str]:
    """family (timm module) -> name of its smallest-looking model."""
    import timm
    from timm.models import _registry

    chosen = {}
    for module in sorted(timm.list_modules()):
        if module in _TIMM_SKIP:
            continue
        names = sorted(_registry.list_models(module=module))
        names = [n for n in names if not any(w in n for w in _TIMM_HUGE)]
        if not names:
            continue
        for part in _SMALL:
            hits = [n for n in names if part in n]
            if hits:
                chosen[module] = min(hits, key=lambda n: (len(n), n))
                break
    return chosen


# At 64x64 the last stage of these holds a single token: attention over one key is
# constant, so its query, key and position biases get an exactly zero gradient (a true
# NN306 for that input, not for the input the models are made for): 4 tokens at 128.
_TIMM_SIZE = {"efficientvit_m0": 128, "efficientvim_m1": 128}


def _timm_model(name):
    import timm

    last = None
    first = _TIMM_SIZE.get(name, IMAGE)
    for size, extra in (
        (first, {"img_size": first}),
        (first, {}),
        (96, {"img_size": 96}),
        (None, {}),
    ):
        try:
            model = timm.create_model(name, pretrained=False, num_classes=CLASSES, **extra)
            if size is None:
                size = model.pretrained_cfg.get("input_size", (3, 224, 224))[-1]
            model.eval()
            with torch.no_grad():
                model(torch.randn(2, 3, size, size))
            model.train()
            return model, size
        except Exception as exc:  # noqa: BLE001 - try the next size
            last = exc
    raise RuntimeError(f"cannot build {name}: {last}")


def timm_entries(families: dict[str, str] | None = None) -> list[Entry]:
    def build(name):
        model, size = _timm_model(name)
        return Case(
            model, image_batch(size), nn.CrossEntropyLoss(), adamw(1e-3), image=(3, size, size)
        )

    families = families if families is not None else timm_families()
    return [
        Entry(f"timm:{name}", "timm", lambda name=name: build(name), {fam})
        for fam, name in families.items()
    ]


# -- transformers --------------------------------------------------------------------

_TINY = {
    "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
    "vocab_size": VOCAB, "max_position_embeddings": 64, "num_key_value_heads": 2,
    "d_model": 32, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
    "decoder_attention_heads": 4, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64,
    "num_layers": 2, "num_decoder_layers": 2, "num_heads": 4, "d_ff": 64, "d_kv": 8,
    "embedding_size": 32, "n_positions": 64, "pad_token_id": 0, "eos_token_id": 1,
    "bos_token_id": 2, "decoder_start_token_id": 2, "head_dim": 8, "rotary_dim": 4,
    "pooler_hidden_size": 32, "decoder_vocab_size": VOCAB,
}  # fmt: skip
# Set even where the config class has no such attribute yet (T5 reads it from the generation config).
_FORCED = {"decoder_start_token_id": 2}
_TINY_VISION = {
    "image_size": 32, "patch_size": 8, "num_channels": 3, "hidden_size": 32,
    "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
}  # fmt: skip

# model type -> heads to build it with.
HF_TEXT = {
    "bert": ("mlm", "text-cls", "token-cls"), "roberta": ("mlm", "text-cls"), "distilbert": ("mlm", "text-cls"),
    "albert": ("mlm", "text-cls"), "electra": ("mlm", "token-cls"), "deberta": ("mlm",), "deberta-v2": ("text-cls",),
    "mpnet": ("mlm",), "xlm-roberta": ("text-cls",), "camembert": ("token-cls",), "funnel": ("text-cls",),
    "megatron-bert": ("mlm",), "roformer": ("mlm",), "convbert": ("text-cls",), "ernie": ("mlm",),
    "nystromformer": ("mlm",), "squeezebert": ("text-cls",), "canine": ("text-cls",),
    "gpt2": ("causal", "text-cls"), "gpt_neo": ("causal",), "gptj": ("causal",), "opt": ("causal",),
    "llama": ("causal", "text-cls"), "mistral": ("causal",), "qwen2": ("causal",), "phi": ("causal",),
    "gemma": ("causal",), "bloom": ("causal",), "falcon": ("causal",), "gpt_neox": ("causal",),
    "codegen": ("causal",), "mixtral": ("causal",), "stablelm": ("causal",), "starcoder2": ("causal",),
    "olmo": ("causal",), "xglm": ("causal",), "mpt": ("causal",),
    "t5": ("seq2seq",), "bart": ("seq2seq", "text-cls"), "mbart": ("seq2seq",), "pegasus": ("seq2seq",),
    "marian": ("seq2seq",), "blenderbot-small": ("seq2seq",), "m2m_100": ("seq2seq",), "mt5": ("seq2seq",),
}  # fmt: skip
# Swin (its windows need a 224 input at the default stages) is covered by timm and torchvision.
# PoolFormer's config has no image_size (it ran at 32x32, a 1x1 last stage); at 64 its
# 2x2 last stage still pools every position into every other, which cancels the bias of
# the norm before it.
_HF_SIZE = {"mobilevit": 128, "levit": 128, "poolformer": 128}
HF_VISION = ["vit", "deit", "beit", "convnext", "resnet", "mobilevit", "dinov2", "levit",
             "poolformer", "regnet", "convnextv2", "cvt", "data2vec-vision"]  # fmt: skip


def _config(model_type, tiny):
    from transformers import AutoConfig

    config = AutoConfig.for_model(model_type)
    for key, value in tiny.items():
        current = getattr(config, key, None)
        if isinstance(current, list | tuple) or (
            key == "hidden_size" and hasattr(config, "hidden_sizes")
        ):
            continue  # a per-stage list (Swin, ConvNeXt, ResNet): keep the default stages
        if hasattr(config, key) or key in getattr(config, "attribute_map", {}):
            try:
                setattr(config, key, value)
            except Exception:  # noqa: BLE001 - read-only on some configs
                pass
    if tiny is _TINY:
        for key, value in _FORCED.items():
            setattr(config, key, getattr(config, key, None) or value)
    for key in (
        "hidden_dropout_prob",
        "attention_probs_dropout_prob",
        "dropout",
        "attention_dropout",
    ):
        if hasattr(config, key):
            setattr(config, key, 0.1)
    return config


def _hf_text(model_type, head):
    import transformers as tf

    config = _config(model_type, _TINY)
    g = _gen()
    ids = torch.randint(3, VOCAB, (BATCH // 2, SEQ), generator=g)
    eos = getattr(config, "eos_token_id", None)
    ids[:, -1] = eos if isinstance(eos, int) else 1
    mask = torch.ones_like(ids)
    if head == "causal":
        model = tf.AutoModelForCausalLM.from_config(config)
        batch = {"input_ids": ids, "attention_mask": mask, "labels": ids.clone()}
    elif head == "mlm":
        model = tf.AutoModelForMaskedLM.from_config(config)
        labels = torch.full_like(ids, -100)
        masked = torch.rand(ids.shape, generator=g) < 0.15
        masked[:, 1] = True
        labels[masked] = ids[masked]
        ids = ids.masked_fill(masked, 3)
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    elif head == "text-cls":
        config.num_labels = 3
        model = tf.AutoModelForSequenceClassification.from_config(config)
        batch = {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": torch.randint(0, 3, (len(ids),), generator=g),
        }
    elif head == "token-cls":
        config.num_labels = 5
        model = tf.AutoModelForTokenClassification.from_config(config)
        batch = {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": torch.randint(0, 5, ids.shape, generator=g),
        }
    else:
        model = tf.AutoModelForSeq2SeqLM.from_config(config)
        labels = torch.randint(3, VOCAB, (len(ids), SEQ // 2), generator=g)
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    kind = {"causal": "causal", "mlm": "mlm", "seq2seq": "seq2seq"}.get(head, head)
    # From random weights: a pretraining learning rate, not a fine-tuning one.
    return Case(model, batch, None, adamw(5e-4), kind)


def _hf_vision(model_type):
    import transformers as tf
    from transformers import AutoConfig

    staged = any(
        hasattr(AutoConfig.for_model(model_type), k)
        for k in ("hidden_sizes", "depths", "embed_dim")
    )
    # Hierarchical models (Swin, ConvNeXt, LeViT...) keep their default stages: only the input shrinks.
    # Where the last stage would hold a single token (1x1), PoolFormer's pooling mixer is
    # identically zero and attention over one key is constant (an exactly zero gradient for
    # MobileViT's query and key, LeViT's attention biases): those get a bigger input.
    wanted = _HF_SIZE.get(model_type, 64)
    tiny = {"image_size": wanted, "num_channels": 3} if staged else _TINY_VISION
    config = _config(model_type, tiny)
    config.num_labels = CLASSES
    config.architectures = config.architectures or []  # DeiT, LeViT map to two classes
    model = tf.AutoModelForImageClassification.from_config(config)
    size = getattr(config, "image_size", 32)
    size = size if isinstance(size, int) and size <= 64 else 32
    size = _HF_SIZE.get(model_type, size)
    x, y = image_batch(size)
    return Case(
        model, {"pixel_values": x, "labels": y}, None, adamw(5e-4), "image", (3, size, size)
    )


def transformers_entries() -> list[Entry]:
    entries = []
    for model_type, heads in HF_TEXT.items():
        for head in heads:
            entries.append(
                Entry(
                    f"hf:{model_type}:{head}",
                    "transformers",
                    lambda m=model_type, h=head: _hf_text(m, h),
                )
            )
    for model_type in HF_VISION:
        entries.append(
            Entry(f"hf:{model_type}:image-cls", "transformers", lambda m=model_type: _hf_vision(m))
        )
    return entries


# -- planted bugs -----------------------------------------------------------------


class NotApplicable(Exception):
    """The planted bug does not apply to this model."""


def _submodule(case, kinds=(nn.Linear, nn.Conv2d)):
    """A module about halfway through the model holding weights: where bugs are planted."""
    # A frozen layer (LoRA's base) is no place for a bug about training, nor a layer
    # whose forward never runs (nn.MultiheadAttention and timm's EVA attention read
    # their projection's weights), where a hook would plant nothing.
    called = _called(case)
    mods = [
        (n, m)
        for n, m in case.model.named_modules()
        if isinstance(m, kinds) and n in called and any(p.requires_grad for p in m.parameters())
    ]
    if not mods:
        raise NotApplicable("no layer to plant into")
    return mods[len(mods) // 2]


def _called(case) -> set[str]:
    """The names of the modules whose forward runs on the case's batch (on a copy, so
    that running statistics stay as built)."""
    model, called = copy.deepcopy(case.model), set()
    for name, module in model.named_modules():
        module.register_forward_hook(lambda m, i, o, name=name: called.add(name))
    with torch.no_grad():
        if isinstance(case.batch, dict):
            model(**case.batch)
        else:
            model(case.batch[0])
    return called


def _wrap_output(case, fn):
    """The model's output (its main tensor) passed through fn."""

    class Planted(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args, **kwargs):
            out = self.inner(*args, **kwargs)
            if isinstance(out, torch.Tensor):
                return fn(out, args, kwargs)
            if hasattr(out, "logits"):
                out.logits = fn(out.logits, args, kwargs)
                return out
            raise ValueError("no output tensor")

    case.model = Planted(case.model)
    return case


def plant_detach(case):
    _, mod = _submodule(case)
    mod.register_forward_hook(lambda m, i, o: o.detach())
    return case


def plant_ignore_input(case):
    def zero(m, args, kwargs):
        if args and isinstance(args[0], torch.Tensor) and args[0].is_floating_point():
            return (args[0] * 0, *args[1:]), kwargs
        if "pixel_values" in kwargs:
            return args, {**kwargs, "pixel_values": kwargs["pixel_values"] * 0}
        if args and isinstance(args[0], torch.Tensor):
            return (torch.zeros_like(args[0]), *args[1:]), kwargs
        if "input_ids" in kwargs:
            return args, {**kwargs, "input_ids": torch.full_like(kwargs["input_ids"], 3)}
        raise NotApplicable("no input to ignore")

    case.model.register_forward_pre_hook(zero, with_kwargs=True)
    return case


def plant_nan(case):
    _, mod = _submodule(case)

    def hook(m, i, o):
        o = o.clone(memory_format=torch.contiguous_format)  # channels-last outputs too
        o.view(-1)[0] = float("nan")
        return o

    mod.register_forward_hook(hook)
    return case


def plant_optimizer(case):
    name, mod = _submodule(case)
    left_out = {id(p) for p in mod.parameters()}
    make = case.optimizer or adamw()
    case.optimizer = lambda params: make([p for p in params if id(p) not in left_out])
    return case


def plant_softmax(case):
    if case.loss_fn is None:
        raise NotApplicable("the model computes its own loss from its logits")
    return _wrap_output(case, lambda out, a, k: out.softmax(-1))


def plant_batch_mixing(case):
    _, mod = _submodule(case)
    mod.register_forward_hook(lambda m, i, o: o + o.mean(0, keepdim=True))
    return case


def plant_causal_leak(case):
    def leak(m, i, o):
        if o.dim() != 3:
            return o
        return o + 0.5 * o.roll(-1, dims=1)

    mods = [m for n, m in case.model.named_modules() if isinstance(m, nn.Embedding) and n]
    if not mods:
        raise NotApplicable("no embedding")
    mods[0].register_forward_hook(leak)
    return case


def plant_sum_loss(case):
    if case.loss_fn is None:
        raise NotApplicable("the model computes its own loss")
    if isinstance(case.loss_fn, nn.CrossEntropyLoss):
        case.loss_fn = nn.CrossEntropyLoss(reduction="sum")
    elif isinstance(case.loss_fn, nn.MSELoss):
        case.loss_fn = nn.MSELoss(reduction="sum")
    else:
        base = case.loss_fn
        case.loss_fn = lambda out, y: base(out, y) * len(y)
    return case


def plant_lr(case):
    case.optimizer = lambda params: torch.optim.SGD(params, lr=1e4)
    return case


def plant_eval_dropout(case):
    _, mod = _submodule(case)
    mod.register_forward_hook(lambda m, i, o: F.dropout(o, 0.5, training=True))
    return case


# category -> (plant, codes that catch it, applies to kinds)
PLANTS = {
    "detached-block": (plant_detach, {"NN306", "NN106"}, None),
    "input-ignored": (plant_ignore_input, {"NN305"}, None),
    "nan": (plant_nan, {"NN311"}, None),
    "not-in-optimizer": (plant_optimizer, {"NN308"}, None),
    "softmax-output": (plant_softmax, {"NN102", "NN301"}, {"image", "vector", "text-cls"}),
    "batch-mixing": (plant_batch_mixing, {"NN303"}, None),
    "causal-leak": (plant_causal_leak, {"NN304"}, {"causal"}),
    "summed-loss": (plant_sum_loss, {"NN312"}, None),
    "lr-too-high": (plant_lr, {"NN307"}, None),
    "eval-dropout": (plant_eval_dropout, {"NN313"}, None),
}


# -- planted for issue 17's input and output checks (NN316-NN320) ----------------------


def _first_image(case):
    """The batch's image tensor and a function putting a new one in its place."""
    batch = case.batch
    if isinstance(batch, dict) and isinstance(batch.get("pixel_values"), torch.Tensor):
        return batch["pixel_values"], lambda x: {**batch, "pixel_values": x}
    if isinstance(batch, tuple | list) and isinstance(batch[0], torch.Tensor):
        return batch[0], lambda x: (x, *batch[1:])
    raise NotApplicable("no image input")


def plant_unnormalised_images(case):
    x, put = _first_image(case)
    if x.dim() != 4 or not x.is_floating_point():
        raise NotApplicable("no image input")
    case.batch = put(((x - x.min()) / (x.max() - x.min()) * 255).round())  # raw 0..255 pixels
    return case


def plant_batch_of_one(case):
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in case.model.modules()):
        raise NotApplicable("no BatchNorm")
    n = BATCH

    def first(value):
        if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == n:
            return value[:1]
        if isinstance(value, dict):
            return {k: first(v) for k, v in value.items()}
        if isinstance(value, tuple | list):
            return type(value)(first(v) for v in value)
        return value

    case.batch = first(case.batch)
    # The bug is BatchNorm over fewer than 8 values per channel: batch 1 of 8x8 maps is not it.
    import copy

    fewest = []
    probe = copy.deepcopy(case.model).train()
    for m in probe.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.register_forward_pre_hook(lambda m, i: fewest.append(i[0].numel() // i[0].shape[1]))
    try:
        with torch.no_grad():
            probe(**case.batch) if isinstance(case.batch, dict) else probe(case.batch[0])
    except Exception:
        pass  # batch 1 into BatchNorm1d raises: that one is tiny
    if fewest and min(fewest) >= 8:
        raise NotApplicable("every BatchNorm sees 8 or more values per channel at batch 1")
    return case


def plant_logits_into_bce(case):
    if case.loss_fn is None:
        raise NotApplicable("the model computes its own loss")
    case.loss_fn = lambda out, y: F.binary_cross_entropy(out, F.one_hot(y, out.shape[-1]).float())
    return case


def plant_constant_output(case):
    return _wrap_output(case, lambda out, a, k: out[:1].expand_as(out).clone())


def plant_regression_offset(case):
    x, y = case.batch
    case.batch = (x, y + 10 * y.std())  # targets far from the head's 0 at init
    return case


def plant_frozen_in_optimizer(case):
    """A layer frozen after the optimizer was built: the optimizer still holds it."""
    _, mod = _submodule(case)
    make = case.optimizer or adamw()

    def build(params):
        optimizer = make(params)
        mod.requires_grad_(False)
        return optimizer

    case.optimizer = build
    return case


def plant_decay_on_norms(case):
    """AdamW with weight decay 0.05 on every parameter, biases and norms included."""
    case.optimizer = lambda params: torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05)
    return case


def plant_tiny_loss_term(case):
    """An output penalty added to the loss with a weight a million times too small."""
    if case.loss_fn is None:
        raise NotApplicable("the model computes its own loss")
    base = case.loss_fn

    def loss_fn(out, y):
        logits = out if isinstance(out, torch.Tensor) else out.logits
        return base(out, y) + 1e-6 * logits.float().pow(2).mean()

    case.loss_fn = loss_fn
    return case


PLANTS.update(
    {
        "raw-0-255-images": (plant_unnormalised_images, {"NN316"}, {"image"}),
        "batchnorm-batch-1": (plant_batch_of_one, {"NN317"}, None),
        "logits-into-bce": (plant_logits_into_bce, {"NN318"}, {"image", "vector", "text-cls"}),
        "constant-output": (plant_constant_output, {"NN319"}, None),
        "regression-offset": (plant_regression_offset, {"NN320"}, {"regression"}),
        "frozen-in-optimizer": (plant_frozen_in_optimizer, {"NN321"}, None),
        "decay-on-norms": (plant_decay_on_norms, {"NN322"}, None),
        "tiny-loss-term": (plant_tiny_loss_term, {"NN323"}, None),
    }
)


# -- running ---------------------------------------------------------------------------


def run_case(entry: Entry, plant: str | None, select) -> dict:
    """Build the case (planting a bug), run nnlint.check; a dict for the report."""
    import nnlint

    torch.manual_seed(0)
    start = time.perf_counter()
    case = entry.build()
    if plant is not None:
        fn, _, kinds = PLANTS[plant]
        if kinds is not None and case.kind not in kinds:
            return {"name": entry.name, "skipped": f"{plant} does not apply to {case.kind}"}
        try:
            case = fn(case)
        except NotApplicable as exc:
            return {"name": entry.name, "skipped": str(exc)}
    built = time.perf_counter() - start
    if isinstance(case.batch, dict):
        batch = case.batch
    else:
        batch = tuple(case.batch)
    optimizer = case.optimizer(case.model.parameters()) if case.optimizer else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        findings = nnlint.check(
            case.model, batch=batch, loss_fn=case.loss_fn, optimizer=optimizer, select=select
        )
    return {
        "name": entry.name,
        "kind": case.kind,
        "params": sum(p.numel() for p in case.model.parameters()),
        "build_s": round(built, 2),
        "seconds": round(time.perf_counter() - start, 2),
        "findings": [
            {"code": f.code, "severity": str(f.severity), "message": f.message, "path": os.path.basename(f.path), "line": f.line, "note": f.note}
            for f in findings
        ],
    }  # fmt: skip


def _child(conn, entry, plant, select):
    try:
        torch.set_num_threads(1)
        conn.send(run_case(entry, plant, select))
    except BaseException as exc:  # noqa: BLE001 - reported as the model's error
        conn.send(
            {
                "name": entry.name,
                "error": f"{type(exc).__name__}: {exc}"[:300],
                "trace": traceback.format_exc()[-1500:],
            }
        )
    finally:
        conn.close()


def run_isolated(entry: Entry, plant: str | None, select, limit: float) -> dict:
    """run_case in a forked child, killed after `limit` seconds."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, entry, plant, select), daemon=True)
    start = time.perf_counter()
    proc.start()
    child.close()
    result = None
    if parent.poll(limit):
        try:
            result = parent.recv()
        except EOFError:
            result = None
    if proc.is_alive():
        proc.kill()
    proc.join()
    if result is None:
        elapsed = time.perf_counter() - start
        why = "timeout" if elapsed >= limit else f"child died (exit {proc.exitcode})"
        result = {"name": entry.name, "error": f"{why} after {elapsed:.0f} s"}
    return result


def zoo(sources) -> list[Entry]:
    entries = []
    if "classic" in sources:
        entries += classic_entries()
    if "torchvision" in sources:
        entries += torchvision_entries()
    if "transformers" in sources:
        entries += transformers_entries()
    if "timm" in sources:
        entries += timm_entries()
    return entries


QUICK = [
    "classic:mlp", "classic:zero_init_resnet", "classic:char_gpt", "classic:dit_adaln_zero",
    "classic:unet_zero_module", "classic:lora_classifier", "classic:vit_cls_token_1e-6",
    "torchvision:resnet18", "torchvision:vgg11_bn", "hf:bert:text-cls", "hf:gpt2:causal",
    "timm:resnet18", "timm:vit_tiny_patch16_224",
]  # fmt: skip


def _print_model(r, out):
    if "findings" not in r:
        print(f"{r['name']:45s} NOT RUN {r.get('error', r.get('skipped'))}", file=out, flush=True)
        return
    bad = [f for f in r["findings"] if f["severity"] in ("warning", "error")]
    print(f"{r['name']:45s} {r['seconds']:6.1f}s {len(bad)} warning/error", file=out)
    for f in r["findings"]:
        print(
            f"    {f['code']} {f['severity']:7s} {f['path']}:{f['line']} {f['message'][:200]}",
            file=out,
        )
        if f.get("note"):
            print(f"        note: {f['note'][:300]}", file=out)
    out.flush()


def _print_healthy(results, out):
    by_code, by_sev = Counter(), Counter()
    flagged = 0
    for r in results:
        if "findings" not in r:
            continue
        flagged += any(f["severity"] in ("warning", "error") for f in r["findings"])
        for f in r["findings"]:
            by_code[f["code"]] += 1
            by_sev[f["severity"]] += 1
    ran = [r for r in results if "findings" in r]
    print("\nhealthy summary", file=out)
    print(
        f"  models run: {len(ran)} (of {len(results)}; {len(results) - len(ran)} failed to build/run or timed out)",
        file=out,
    )
    print(f"  models with a warning/error: {flagged}", file=out)
    print(f"  findings by severity: {dict(sorted(by_sev.items()))}", file=out)
    print(f"  findings by code: {dict(sorted(by_code.items()))}", file=out)
    print(
        f"  seconds (nnlint.check + build, sum over models): {sum(r['seconds'] for r in ran):.0f}",
        file=out,
    )


def _print_planted(results, out):
    table = defaultdict(lambda: [0, 0])
    budget = []  # the check that should catch it ran past its budget: a timeout, not a miss
    for r in results:
        if "findings" not in r:
            continue
        codes = {f["code"] for f in r["findings"]}
        caught = bool(codes & PLANTS[r["plant"]][1])
        if not caught and any(
            f["code"] == "NN007" and "past its" in f["message"] for f in r["findings"]
        ):
            budget.append(f"{r['plant']}@{r['name']}")
            continue
        table[r["plant"]][0] += caught
        table[r["plant"]][1] += 1
        if not caught:
            print(
                f"  missed {r['plant']:18s} {r['name']}: {sorted(codes) or 'no finding'}", file=out
            )
    print("\nplanted bugs: recall per category", file=out)
    total = [0, 0]
    for plant in PLANTS:
        hit, n = table[plant]
        total[0] += hit
        total[1] += n
        if n:
            print(
                f"  {plant:18s} {hit:3d}/{n:<3d} {100 * hit / n:5.1f}%   ({', '.join(sorted(PLANTS[plant][1]))})",
                file=out,
            )
    if total[1]:
        print(
            f"  {'all':18s} {total[0]:3d}/{total[1]:<3d} {100 * total[0] / total[1]:5.1f}%",
            file=out,
        )
    if budget:
        print(f"  {len(budget)} planted runs past a check's budget: {'; '.join(budget)}", file=out)
    errors = [r for r in results if "error" in r]
    if errors:
        print(
            f"  {len(errors)} planted runs failed: "
            + "; ".join(f"{r['plant']}@{r['name']}: {r['error'][:80]}" for r in errors[:10]),
            file=out,
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a small subset of the zoo")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        help="a model name (or a prefix ending in ':'); repeatable",
    )
    parser.add_argument(
        "--source",
        action="append",
        default=[],
        choices=["classic", "torchvision", "transformers", "timm"],
    )
    parser.add_argument("--json", metavar="OUT", help="write every result to OUT")
    parser.add_argument("--limit", type=float, default=90.0, help="seconds per model (default 90)")
    parser.add_argument(
        "--planted", type=int, default=60, help="models to plant each bug into (0: none)"
    )
    parser.add_argument("--no-healthy", action="store_true", help="only the planted table")
    parser.add_argument(
        "--planted-from",
        metavar="JSON",
        action="append",
        default=[],
        help="leave out of the planted table the models that failed or took --planted-under "
        "seconds or more in this earlier --json output (repeatable)",
    )
    parser.add_argument(
        "--planted-under", type=float, default=15.0, help="see --planted-from (default 15)"
    )
    parser.add_argument(
        "--plant", action="append", default=[], choices=list(PLANTS), help="only these categories"
    )
    parser.add_argument(
        "--select",
        action="append",
        default=[],
        help="healthy table: only these rule codes (repeatable; default all)",
    )
    parser.add_argument("--list", action="store_true", help="print the zoo and exit")
    parser.add_argument(
        "--summarize",
        metavar="JSON",
        action="append",
        default=[],
        help="print the tables of earlier --json outputs (runs in pieces) and exit; repeatable",
    )
    args = parser.parse_args(argv)
    if args.summarize:
        return summarize(args.summarize, sys.stdout)

    entries = zoo(args.source or ["classic", "torchvision", "transformers", "timm"])
    if args.quick:
        entries = [e for e in entries if e.name in QUICK]
    if args.only:
        entries = [
            e
            for e in entries
            if any(e.name == o or (o.endswith(":") and e.name.startswith(o)) for o in args.only)
        ]
    if args.list:
        for e in entries:
            print(e.name)
        print(f"{len(entries)} models", file=sys.stderr)
        return 0
    # Imported once here, not in every forked child (seconds each on a busy machine).
    for source, package in (("torchvision", "torchvision"), ("transformers", "transformers")):
        if any(e.source == source for e in entries):
            __import__(package)
            if package == "transformers":
                import transformers.models.auto.modeling_auto  # noqa: F401 - the Auto classes
    import nnlint.dynamic.phase  # noqa: F401
    import nnlint.graph.phase  # noqa: F401
    import nnlint.pipeline  # noqa: F401
    from nnlint.api import load_registry

    load_registry()

    out = sys.stdout
    start = time.perf_counter()
    healthy, planted = [], []

    def save():  # after every model, so that a run cut short keeps what it measured
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump({"healthy": healthy, "planted": planted}, f, indent=1)

    if not args.no_healthy:
        for entry in entries:
            r = run_isolated(entry, None, args.select or None, args.limit)
            healthy.append(r)
            _print_model(r, out)
            save()
        _print_healthy(healthy, out)
    if args.planted:
        ok = (
            [e for e, r in zip(entries, healthy, strict=False) if "findings" in r]
            if healthy
            else entries
        )
        slow = set()
        for earlier in args.planted_from:
            with open(earlier, encoding="utf-8") as f:
                slow |= {
                    r["name"]
                    for r in json.load(f)["healthy"]
                    if r.get("seconds", math.inf) >= args.planted_under
                }
        ok = [e for e in ok if e.name not in slow]
        chosen = _spread(ok, args.planted)
        # Model by model, every category on each: a run cut short still covers them all.
        for entry in chosen:
            for plant, (_, codes, _) in PLANTS.items():
                if args.plant and plant not in args.plant:
                    continue
                r = run_isolated(entry, plant, sorted(codes), args.limit)
                r["plant"] = plant
                if "skipped" not in r:
                    planted.append(r)
                    save()
                print(
                    f"[planted {plant}] {entry.name} {r.get('seconds', r.get('error', r.get('skipped', '')))}",
                    file=sys.stderr,
                    flush=True,
                )
        _print_planted(planted, out)
    print(f"\ntotal wall time: {time.perf_counter() - start:.0f} s", file=out)
    save()
    return 0


def summarize(paths, out) -> int:
    """The healthy and planted tables over several --json outputs; a model's last record wins."""
    healthy, planted = {}, {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        healthy.update((r["name"], r) for r in data["healthy"])
        planted.update(((r["plant"], r["name"]), r) for r in data["planted"])
    for r in healthy.values():
        if "findings" not in r or any(f["severity"] in ("warning", "error") for f in r["findings"]):
            _print_model(r, out)
    timeouts = [r["name"] for r in healthy.values() if "timeout" in r.get("error", "")]
    if healthy:
        _print_healthy(list(healthy.values()), out)
        print(f"  timeouts ({len(timeouts)}): {', '.join(timeouts) or 'none'}", file=out)
    if planted:
        models = {name for _, name in planted}
        print(f"\nplanted: {len(planted)} runs over {len(models)} models", file=out)
        _print_planted(list(planted.values()), out)
    return 0


def _spread(entries, n):
    """n entries taken evenly across the sources, so every kind of model gets bugs planted."""
    by_source = defaultdict(list)
    for e in entries:
        by_source[e.source].append(e)
    chosen = []
    while len(chosen) < n and any(by_source.values()):
        for source in list(by_source):
            if by_source[source] and len(chosen) < n:
                chosen.append(by_source[source].pop(0))
    return chosen


if __name__ == "__main__":
    sys.exit(main())

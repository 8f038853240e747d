"""A small character-level causal transformer (GPT-style), with planted bugs (see README)."""

import math

import torch
import torch.nn.functional as F
from torch import nn


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, n_head: int, block_size: int, dropout: float) -> None:
        super().__init__()
        self.n_head = n_head
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        mask = torch.tril(torch.ones(block_size, block_size, dtype=torch.bool), diagonal=1)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps, dim = x.shape
        head = dim // self.n_head
        q, k, v = self.qkv(x).split(dim, dim=2)
        q = q.view(batch, steps, self.n_head, head).transpose(1, 2)
        k = k.view(batch, steps, self.n_head, head).transpose(1, 2)
        v = v.view(batch, steps, self.n_head, head).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(head)
        att = att.masked_fill(~self.mask[:steps, :steps], float("-inf"))
        att = att.softmax(dim=-1)  # BUG (NN318): the line below applies softmax again
        att = F.dropout(F.softmax(att, dim=-1), self.dropout, training=self.training)
        y = (att @ v).transpose(1, 2).contiguous().view(batch, steps, dim)
        return self.proj(y)


class Block(nn.Module):
    def __init__(self, dim: int, n_head: int, block_size: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, n_head, block_size, dropout)
        self.ln2 = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, 4 * dim)
        self.proj = nn.Linear(4 * dim, dim)
        nn.init.constant_(self.fc.bias, -1.0)  # sparse activations, as in a paper we liked

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.proj(F.relu(self.fc(self.ln2(x))))


class Net(nn.Module):
    def __init__(
        self,
        vocab_size: int = 32,
        block_size: int = 32,
        dim: int = 32,
        n_layer: int = 2,
        n_head: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.block_size = block_size
        self.tok_emb = nn.Embedding(vocab_size, dim)
        self.pos_emb = nn.Embedding(block_size, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, n_head, block_size, dropout) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # weight tying
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        steps = idx.shape[1]
        positions = torch.arange(steps, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(positions))
        for block in self.blocks:
            x = block(x)
        return F.relu(self.head(self.ln_f(x)))

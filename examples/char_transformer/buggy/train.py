"""Train the character-level transformer on a synthetic text for a few steps (with planted bugs)."""

import os

import torch
import torch.nn.functional as F
from model import Net

STEPS = 15
BATCH_SIZE = 16
BLOCK_SIZE = 32
WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "to", "its", "bed", "and", "slept"]
EMBEDDINGS = "char_embeddings.pt"


def make_text(n_words, generator):
    picks = torch.randint(0, len(WORDS), (n_words,), generator=generator)
    return " ".join(WORDS[i] for i in picks.tolist()) + "."


def get_batch(data, generator):
    """Random windows of the text and, as targets, the same windows shifted by one."""
    starts = torch.randint(0, len(data) - BLOCK_SIZE - 1, (BATCH_SIZE,), generator=generator)
    x = torch.stack([data[s : s + BLOCK_SIZE] for s in starts.tolist()])
    y = torch.stack([data[s + 1 : s + BLOCK_SIZE + 1] for s in starts.tolist()])
    return x, y


def main():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    text = make_text(2000, generator)
    chars = sorted(set(text))
    data = torch.tensor([chars.index(c) for c in text], dtype=torch.long)
    model = Net(vocab_size=len(chars), block_size=BLOCK_SIZE)
    if os.path.exists(EMBEDDINGS):
        model.tok_emb.weight.data.copy_(torch.load(EMBEDDINGS))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)

    model.train()
    for step in range(STEPS):
        x, y = get_batch(data, generator)
        logits = model(x)
        probs = F.softmax(logits, dim=-1)
        loss = F.cross_entropy(probs.view(-1, probs.size(-1)), y.view(-1))
        loss = loss.clamp(max=5.0)  # clip outliers
        optimizer.zero_grad(set_to_none=True)
        optimizer.step()
        loss.backward()
        if step % 5 == 0:
            print(f"step {step}: loss {loss.item():.3f}")


if __name__ == "__main__":
    main()

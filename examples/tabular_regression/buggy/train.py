"""Fit the MLP to a synthetic regression target for a few steps."""

import torch
import torch.nn.functional as F
from model import Net
from torch.utils.data import DataLoader, TensorDataset

STEPS = 20
BATCH_SIZE = 4  # BUG (NN317): too few samples for the BatchNorm in the model


def make_data(n: int, generator: torch.Generator) -> TensorDataset:
    x = torch.randn(n, 12, generator=generator)
    weights = torch.randn(12, generator=generator)
    y = torch.tanh(x @ weights) + 0.1 * torch.randn(n, generator=generator)
    return TensorDataset(x, y)  # y has shape (n,)


def main() -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    loader = DataLoader(make_data(1024, generator), batch_size=BATCH_SIZE, shuffle=True)
    model = Net()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for step, (x, y) in zip(range(STEPS), loader, strict=False):
        optimizer.zero_grad()
        # BUG (NN315): predictions are (N, 1) and targets (N,): they broadcast to (N, N)
        loss = F.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        if step % 5 == 0:
            print(f"step {step}: loss {loss.item():.4f}")


if __name__ == "__main__":
    main()

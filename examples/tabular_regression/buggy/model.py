"""A small MLP that predicts one number from 12 tabular features."""

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, features: int = 12, width: int = 32, depth: int = 3):
        super().__init__()
        self.stem = nn.Linear(features, width)
        # BUG (NN317): BatchNorm over the training batches of 4 samples
        self.norm = nn.BatchNorm1d(width)
        # BUG (NN109): a plain list; these layers are never registered, so they never train
        self.hidden = [nn.Linear(width, width) for _ in range(depth)]
        self.head = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # BUG (NN313): noise augmentation that stays on after model.eval()
        x = x + 0.05 * torch.randn_like(x)
        x = torch.relu(self.norm(self.stem(x)))
        for layer in self.hidden:
            x = torch.relu(layer(x))
        return self.head(x)

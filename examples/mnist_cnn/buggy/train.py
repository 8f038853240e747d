"""Train the LeNet-style CNN on synthetic 28x28 digits for a few steps (with planted bugs)."""

import os

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset

from model import Net

STEPS = 10
BATCH_SIZE = 32
NUM_CLASSES = 10
CHECKPOINT = "lenet.pt"


def make_digits(n, generator):
    """Noisy copies of one random template per class; every 16th frame is blank."""
    templates = torch.rand(NUM_CLASSES, 1, 28, 28, generator=generator)
    # BUG (NN316, with the unshuffled loader below): the digits come sorted by class
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=generator).sort().values
    images = templates[labels] + 0.3 * torch.randn(n, 1, 28, 28, generator=generator)
    images = images.clamp(0.0, 1.0)
    images[15::16] = 0.0
    return TensorDataset(images, labels)


def evaluate(model, loader):
    correct, ovr_bce, batches = 0, 0.0, 0
    with torch.no_grad():
        for images, labels in loader:
            logits = model(images)
            correct += (logits.argmax(1) == labels).sum().item()
            onehot = F.one_hot(labels, NUM_CLASSES).float()
            ovr_bce += F.binary_cross_entropy_with_logits(torch.sigmoid(logits), onehot).item()
            batches += 1
    return correct / len(loader.dataset), ovr_bce / batches


def main():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    train_loader = DataLoader(make_digits(512, generator), batch_size=BATCH_SIZE)
    val_loader = DataLoader(make_digits(128, generator), batch_size=BATCH_SIZE)
    model = Net()
    if os.path.exists(CHECKPOINT):
        model.load_state_dict(torch.load(CHECKPOINT, weights_only=False))
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    model.train()
    running_loss = 0.0
    for step, (images, labels) in enumerate(train_loader):
        if step == STEPS:
            break
        loss = criterion(model(images), labels)
        loss.backward()
        optimizer.step()
        running_loss += loss
    accuracy, ovr_bce = evaluate(model, val_loader)
    first_image = val_loader.dataset[0][0].unsqueeze(0)
    print("first validation image:", model.forward(first_image).argmax(1).item())
    print(f"train loss {running_loss.item() / STEPS:.3f}  val acc {accuracy:.2f}  ovr bce {ovr_bce:.3f}")


class ProbeHead(nn.Module):
    """A linear probe trained on frozen features after the main run."""

    def __init__(self, width, classes):
        super().__init__()
        self.fc = nn.Linear(width, classes)

    def forward(self, x):
        x = F.dropout(x, 0.1)
        return self.fc(nn.Dropout(0.1)(x))


def train_probe(backbone, features, labels, accum_steps=4):
    """Fit a probe on `features` with the backbone frozen (not run by `main`)."""
    for p in backbone.parameters():
        p.require_grad = False
    head = DistributedDataParallel(ProbeHead(features.shape[1], NUM_CLASSES))
    probe_train_loader = DataLoader(TensorDataset(features, labels), batch_size=BATCH_SIZE)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 10)
    for _ in range(3):
        scheduler.step()
        for i, (x, y) in enumerate(probe_train_loader):
            with torch.autocast("cuda", dtype=torch.float16):
                loss = F.cross_entropy(head(x), y)
            loss.backward()
            if (i + 1) % accum_steps == 0:
                optimizer.step()
                optimizer.zero_grad()
    with torch.no_grad():
        check = F.cross_entropy(head(features), labels)
        check.backward()
    return head


if __name__ == "__main__":
    main()

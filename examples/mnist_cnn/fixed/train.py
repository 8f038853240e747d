"""Train the LeNet-style CNN on synthetic 28x28 digits for a few steps."""

import os

import torch
import torch.nn.functional as F
from model import Net
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

STEPS = 10
BATCH_SIZE = 32
NUM_CLASSES = 10
CHECKPOINT = "lenet.pt"


def make_digits(n: int, generator: torch.Generator) -> TensorDataset:
    """Noisy copies of one random template per class; every 16th frame is blank."""
    templates = torch.rand(NUM_CLASSES, 1, 28, 28, generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=generator)
    images = templates[labels] + 0.3 * torch.randn(n, 1, 28, 28, generator=generator)
    images = images.clamp(0.0, 1.0)
    images[15::16] = 0.0
    return TensorDataset(images, labels)


def evaluate(model: nn.Module, loader: DataLoader) -> tuple[float, float]:
    model.eval()
    correct, ovr_bce, batches = 0, 0.0, 0
    with torch.no_grad():
        for images, labels in loader:
            logits = model(images)
            correct += (logits.argmax(1) == labels).sum().item()
            onehot = F.one_hot(labels, NUM_CLASSES).float()
            ovr_bce += F.binary_cross_entropy_with_logits(logits, onehot).item()
            batches += 1
    return correct / len(loader.dataset), ovr_bce / batches


def main() -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    train_loader = DataLoader(
        make_digits(512, generator), batch_size=BATCH_SIZE, shuffle=True, generator=generator
    )
    val_loader = DataLoader(make_digits(128, generator), batch_size=BATCH_SIZE)
    model = Net()
    if os.path.exists(CHECKPOINT):
        model.load_state_dict(torch.load(CHECKPOINT, weights_only=True))
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    model.train()
    running_loss = 0.0
    for step, (images, labels) in enumerate(train_loader):
        if step == STEPS:
            break
        optimizer.zero_grad()
        loss = criterion(model(images), labels)
        loss.backward()
        optimizer.step()
        running_loss += loss.item()
    accuracy, ovr_bce = evaluate(model, val_loader)
    first_image = val_loader.dataset[0][0].unsqueeze(0)
    print("first validation image:", model(first_image).argmax(1).item())
    print(f"train loss {running_loss / STEPS:.3f}  val acc {accuracy:.2f}  ovr bce {ovr_bce:.3f}")


class ProbeHead(nn.Module):
    """A linear probe trained on frozen features after the main run."""

    def __init__(self, width: int, classes: int) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.1)
        self.fc = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.dropout(x, 0.1, training=self.training)
        return self.fc(self.drop(x))


def train_probe(
    backbone: nn.Module, features: torch.Tensor, labels: torch.Tensor, accum_steps: int = 4
) -> nn.Module:
    """Fit a probe on `features` with the backbone frozen (not run by `main`)."""
    for p in backbone.parameters():
        p.requires_grad = False
    head = DistributedDataParallel(ProbeHead(features.shape[1], NUM_CLASSES))
    dataset = TensorDataset(features, labels)
    probe_train_loader = DataLoader(
        dataset, batch_size=BATCH_SIZE, sampler=DistributedSampler(dataset)
    )
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 10)
    scaler = torch.amp.GradScaler("cuda")
    for _ in range(3):
        for i, (x, y) in enumerate(probe_train_loader):
            with torch.autocast("cuda", dtype=torch.float16):
                loss = F.cross_entropy(head(x), y) / accum_steps
            scaler.scale(loss).backward()
            if (i + 1) % accum_steps == 0:
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad()
        scheduler.step()
    check = F.cross_entropy(head(features), labels)
    check.backward()
    return head


if __name__ == "__main__":
    main()

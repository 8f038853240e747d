"""Train the small ResNet on synthetic 32x32 colour images for a few steps."""

import torch
from model import Net
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

EPOCHS = 2
STEPS_PER_EPOCH = 4
BATCH_SIZE = 32
NUM_CLASSES = 10


def make_images(n: int, generator: torch.Generator) -> TensorDataset:
    """Noisy copies of one smooth random colour pattern per class."""
    coarse = torch.rand(NUM_CLASSES, 3, 4, 4, generator=generator)
    templates = nn.functional.interpolate(coarse, size=32, mode="bilinear")
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=generator)
    images = templates[labels] + 0.2 * torch.randn(n, 3, 32, 32, generator=generator)
    return TensorDataset(images.clamp(0.0, 1.0), labels)


def evaluate(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for images, labels in loader:
            correct += (model(images).argmax(1) == labels).sum().item()
    return correct / len(loader.dataset)


def main() -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    train_loader = DataLoader(
        make_images(256, generator), batch_size=BATCH_SIZE, shuffle=True, generator=generator
    )
    val_loader = DataLoader(make_images(64, generator), batch_size=BATCH_SIZE)
    model = Net()
    # Start from the CIFAR-100 layout and swap in a head for our 10 classes.
    model.fc = nn.Linear(model.fc.in_features, NUM_CLASSES)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    use_amp = torch.cuda.is_available()
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    for epoch in range(EPOCHS):
        model.train()
        for step, (images, labels) in enumerate(train_loader):
            if step == STEPS_PER_EPOCH:
                break
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cuda", enabled=use_amp):
                loss = criterion(model(images), labels)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
            scaler.step(optimizer)
            scaler.update()
        print(f"epoch {epoch}: loss {loss.item():.3f}  val acc {evaluate(model, val_loader):.2f}")


if __name__ == "__main__":
    main()

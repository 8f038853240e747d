"""Cost of capturing a model's graph, as a multiple of one eager forward.

For each model, in one run and on the same input: the median time of one
eager forward (train mode, no_grad, as the capture runs it) and the median
time of `nnlint.capture.record` (the runtime backend: TorchFunctionMode plus
module hooks), and their ratio. Target: at most 1.5x.

Models: a LeNet at batch 32 (1x28x28), a ResNet-18-sized CNN written by hand
at batch 8 (3x64x64), and a tiny HF GPT-2 at batch 8 x 32 tokens (skipped
without `transformers`).

Usage: python benchmarks/graph_capture.py [--runs N] [--threads N] [--cpu-time] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from nnlint.graph.record import record
from nnlint.setup.inputs import Batch, call


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc3(F.relu(self.fc2(x)))


class BasicBlock(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.down = None
        if stride != 1 or c_in != c_out:
            self.down = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.down is None else self.down(x)))


class ResNet18(nn.Module):
    """ResNet-18's layout and widths (11M parameters), written out without torchvision."""

    def __init__(self, classes=1000):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, 1),
        )
        layers, c_in = [], 64
        for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)]
            c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def tiny_gpt2() -> tuple[nn.Module, Batch] | None:
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        return None
    config = GPT2Config(
        n_layer=2,
        n_head=4,
        n_embd=128,
        vocab_size=1000,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
    )
    ids = torch.randint(0, 1000, (8, 32))
    return GPT2LMHeadModel(config), Batch((), {"input_ids": ids})


def interleaved_medians(
    first: Callable[[], object], second: Callable[[], object], runs: int, clock: Callable[[], float]
) -> tuple[float, float]:
    """Median seconds of each, alternating them so that load on the machine hits both alike."""
    first(), second()  # warm-up: first-call allocations and lazy initialisation
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(runs):
        for fn, out in ((first, times[0]), (second, times[1])):
            start = clock()
            fn()
            out.append(clock() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def eager(model: nn.Module, batch: Batch) -> None:
    model.train()
    with torch.no_grad():
        call(model, batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time with this thread's CPU clock (steadier on a busy machine; use with --threads 1)",
    )
    parser.add_argument("--json", action="store_true", help="print rows for benchmarks/run.py")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cases = [
        ("LeNet, batch 32", LeNet(), Batch((torch.randn(32, 1, 28, 28),))),
        ("ResNet-18 CNN, 64x64, batch 8", ResNet18(), Batch((torch.randn(8, 3, 64, 64),))),
    ]
    gpt2 = tiny_gpt2()
    if gpt2 is not None:
        cases.append(("tiny GPT-2, 8x32 tokens", *gpt2))
    clock = "thread CPU time" if args.cpu_time else "wall time"
    header = f"torch {torch.__version__}, {torch.get_num_threads()} threads, {clock}, median of {args.runs}"
    if not args.json:
        print(header)
        print(f"{'model':32} {'eager forward':>14} {'capture':>10} {'ratio':>7} {'ops':>5}")
    rows = []
    for name, model, batch in cases:
        forward, capture = interleaved_medians(
            lambda m=model, b=batch: eager(m, b),
            lambda m=model, b=batch: record(m, b),
            args.runs,
            time.thread_time if args.cpu_time else time.perf_counter,
        )
        ops = len(record(model, batch).nodes)
        rows.append(
            {
                "benchmark": "graph_capture",
                "case": name,
                "nnlint": capture * 1e3,
                "alternative": "one eager forward",
                "alt": forward * 1e3,
                "ratio": forward / capture,
                "unit": "ms",
                "target": "capture <= 1.5x forward (ratio >= 0.67)",
                "note": f"{ops} ops recorded; {header}",
            }
        )
        if not args.json:
            print(
                f"{name:32} {forward * 1e3:11.2f} ms {capture * 1e3:7.2f} ms "
                f"{capture / forward:6.2f}x {ops:5}"
            )
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()

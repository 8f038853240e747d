"""Torch's optimizers run without importing torch._dynamo once the import is deferred.

Each case runs in a fresh interpreter: whether `torch._dynamo` is imported is a
property of the whole process, and the deferral changes torch.optim's classes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

TRAIN = """
import json, sys
import torch
from torch import nn

defer = sys.argv[1] == "defer"
if defer:
    from nnlint.setup.lazydynamo import defer_dynamo_import
    deferred = defer_dynamo_import()
else:
    deferred = 0
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
grad_inside = []
finals = {}
for name, make in [
    ("Adam", lambda p: torch.optim.Adam(p, lr=1e-2)),
    ("AdamW", lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1)),
    ("SGD", lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
    ("RMSprop", lambda p: torch.optim.RMSprop(p, lr=1e-2)),
    ("Adagrad", lambda p: torch.optim.Adagrad(p, lr=1e-1)),
]:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = make(net.parameters())
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2)
    for _ in range(4):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        sched.step()
    opt.load_state_dict(opt.state_dict())
    finals[name] = [round(float(v), 6) for v in torch.cat([p.flatten() for p in net.parameters()])]

class Watch(torch.optim.SGD):
    def step(self, closure=None):
        grad_inside.append(torch.is_grad_enabled())
        return super().step(closure)

net = nn.Linear(4, 3)
opt = torch.optim.LBFGS(net.parameters(), lr=0.5)
def closure():
    opt.zero_grad()
    loss = nn.functional.cross_entropy(net(x), y)
    loss.backward()
    return loss
opt.step(closure)
finals["LBFGS"] = [round(float(v), 6) for v in net.weight.flatten()]
print(json.dumps({
    "deferred": deferred,
    "dynamo": "torch._dynamo" in sys.modules,
    "finals": finals,
    "grad_after": torch.is_grad_enabled(),
}))
"""


def run(mode: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", TRAIN, mode], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def plain() -> dict:
    return run("plain")


@pytest.fixture(scope="module")
def deferred() -> dict:
    return run("defer")


def test_optimizers_import_dynamo_without_the_deferral(plain):
    # what the deferral exists for: without it, the first step pulls torch._dynamo in
    assert plain["dynamo"]


def test_deferred_optimizers_step_without_importing_dynamo(deferred):
    assert deferred["deferred"] > 0
    assert not deferred["dynamo"]
    assert deferred["grad_after"]


def test_deferred_optimizers_train_exactly_as_torch_does(plain, deferred):
    assert deferred["finals"] == plain["finals"]


def test_deferral_is_a_no_op_once_dynamo_is_imported():
    code = textwrap.dedent(
        """
        import torch, torch._dynamo
        from nnlint.setup.lazydynamo import defer_dynamo_import
        print(defer_dynamo_import())
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "0"


def test_step_keeps_grad_mode_and_a_later_dynamo_import_takes_over():
    code = textwrap.dedent(
        """
        import sys, torch
        import torch.optim.adam as adam_module
        from torch import nn
        from nnlint.setup.lazydynamo import defer_dynamo_import
        defer_dynamo_import()
        seen = []
        real = adam_module.adam
        def recording(*args, **kwargs):  # what Adam.step calls, inside its grad mode
            seen.append(torch.is_grad_enabled())
            return real(*args, **kwargs)
        adam_module.adam = recording
        net = nn.Linear(2, 2)
        opt = torch.optim.Adam(net.parameters())
        net(torch.ones(1, 2)).sum().backward()
        opt.step()
        before = "torch._dynamo" in sys.modules
        import torch._dynamo  # a script that compiles: the real wrappers from here on
        opt.zero_grad()
        net(torch.ones(1, 2)).sum().backward()
        with torch.enable_grad():
            opt.step()
        print(before, seen, torch.is_grad_enabled())
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[-2] == "False [False, False] True"

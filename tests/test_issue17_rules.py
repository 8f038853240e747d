"""frozen-parameters, weight-decay-on-norm-and-bias, loss-terms-scale, no-lr-schedule
on small models and scripts beyond their rule examples."""

from __future__ import annotations

import textwrap

import pytest

from nnlint.testing import lint_source

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import nnlint  # noqa: E402

BATCH = (torch.randn(16, 4), torch.randint(0, 3, (16,)))


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def _codes(model, select, optimizer=None, loss_fn=F.cross_entropy):
    found = nnlint.check(model, batch=BATCH, loss_fn=loss_fn, optimizer=optimizer, select=select)
    return [(f.code, str(f.severity), f.message) for f in found if f.code == select[0]]


class Codebook(nn.Module):
    """A frozen tensor the forward itself updates (an EMA codebook): not the optimizer's doing."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.codes = nn.Parameter(torch.zeros(3), requires_grad=False)

    def forward(self, x):
        out = self.fc(x)
        with torch.no_grad():
            self.codes.mul_(0.9).add_(0.1 * out.mean(0))
        return out + self.codes


def test_a_frozen_tensor_the_forward_updates_is_not_moved_by_the_step():
    model = Codebook()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.1)
    found = _codes(model, ["NN321"], optimizer)
    assert [sev for _, sev, _ in found] == ["info"], found  # held, never moved by a step


class Shadowed(nn.Module):
    """A frozen copy of the first layer kept for later, tied by `.data` to the trained one."""

    def __init__(self):
        super().__init__()
        self.net = _mlp()
        self.shadow = nn.Linear(4, 8)
        self.shadow.weight = nn.Parameter(self.net[0].weight.data, requires_grad=False)

    def forward(self, x):
        return self.net(x)


def test_a_frozen_weight_sharing_memory_with_a_trained_one_is_moved():
    model = Shadowed()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    found = _codes(model, ["NN321"], optimizer)
    assert any(sev == "warning" and "`shadow`" in msg for _, sev, msg in found), found


def test_frozen_parameters_left_out_of_the_optimizer_are_fine():
    model = _mlp()
    model[0].requires_grad_(False)
    optimizer = torch.optim.SGD(model[2].parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    assert _codes(model, ["NN321"], optimizer) == []


class RMSNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return self.weight * x / x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()


class Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.norm = RMSNorm(8)
        self.head = nn.Linear(8, 3, bias=False)

    def forward(self, ids):
        return self.head(self.norm(self.embed(ids)).mean(1))


def test_weight_decay_on_embeddings_and_a_hand_written_norm():
    model = Tokens()
    batch = (torch.randint(0, 10, (16, 5)), torch.randint(0, 3, (16,)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    found = nnlint.check(
        model, batch=batch, loss_fn=F.cross_entropy, optimizer=optimizer, select=["NN322"]
    )
    messages = sorted(f.message for f in found)
    assert len(messages) == 1, messages
    assert "1 embedding (`embed.weight`) and 1 norm weight (`norm.weight`)" in messages[0]


def test_loss_terms_scale_reads_a_weighted_sum_of_a_sum():
    def loss_fn(out, y):
        return 0.5 * (F.cross_entropy(out, y) + 1e-6 * out.pow(2).mean())

    found = _codes(_mlp(), ["NN323"], loss_fn=loss_fn)
    assert len(found) == 1 and "`1e-6 * out.pow(2).mean()`" not in found[0][2], found


def test_loss_terms_scale_is_silent_on_one_term_and_on_balanced_terms():
    assert _codes(_mlp(), ["NN323"]) == []

    def balanced(out, y):
        return F.cross_entropy(out, y) + F.mse_loss(out.softmax(1), F.one_hot(y, 3).float())

    assert _codes(_mlp(), ["NN323"], loss_fn=balanced) == []


def _script_codes(source: str) -> list[str]:
    found = lint_source(textwrap.dedent(source), select=["NN223"])
    return [f.message for f in found if f.code == "NN223"]


LOOP = """
for epoch in range({bound}):
    for x, y in loader:
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
"""


@pytest.mark.parametrize(
    ("head", "bound", "fires"),
    [
        ("", "200", True),
        ("", "50", False),
        ("EPOCHS = 3 * 100\n", "EPOCHS", True),
        (
            "import argparse\np = argparse.ArgumentParser()\n"
            "p.add_argument('--n-epochs', dest='n', type=int, default=400)\nargs = p.parse_args()\n",
            "args.n",
            True,
        ),
        ("", "args.epochs", False),  # from the command line: nothing declares it
        ("import torch_geometric\n", "500", False),  # an epoch of a graph dataset
        ("import gym\n", "500", False),  # episodes
        ("sched = torch.optim.lr_scheduler.StepLR(opt, 30)\n", "200", False),
        ("def adjust_lr(o, e):\n    pass\n", "200", False),
    ],
)
def test_no_lr_schedule_on_declared_run_lengths(head, bound, fires):
    source = (
        "import torch\nmodel = torch.nn.Linear(4, 2)\n"
        "opt = torch.optim.SGD(model.parameters(), lr=0.1)\n" + head + LOOP.format(bound=bound)
    )
    assert bool(_script_codes(source)) is fires

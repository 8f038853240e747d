"""Issue 17's checks of the batch and the output (NN316-NN320) on small models written here.

Each pair is one model a rule must flag and its neighbour it must leave alone:
the real batch against nnlint's own inputs, the user's batch size against the
batches nnlint runs itself, a zero-initialised head against a broken one, and
one bug reported once when two rules could see it.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import nnlint  # noqa: E402


def codes(model, select, **kwargs):
    return [f.code for f in nnlint.check(model, select=select, **kwargs) if f.code != "NN007"]


class Pixels(nn.Module):
    """A small CNN that shows its own example input, raw 0..255 pixels."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8 * 6 * 6, 4)
        self.example_input_array = torch.randint(0, 256, (4, 3, 8, 8)).float()

    def forward(self, x):
        return self.fc(self.conv(x).relu().flatten(1))


def test_suspicious_inputs_judges_the_real_batch_only():
    torch.manual_seed(0)
    model = Pixels()
    raw = model.example_input_array
    labels = torch.randint(0, 4, (4,))
    assert codes(model, ["NN316"]) == []  # the model's own example: not the data it trains on
    assert codes(model, ["NN316"], batch=(raw, labels)) == ["NN316"]
    assert codes(model, ["NN316"], batch=(raw / 255, labels)) == []


def test_suspicious_inputs_leaves_nan_to_non_finite():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(8, 4)
    x[2, 1] = float("nan")
    batch = (x, torch.randint(0, 3, (8,)))
    assert codes(model, ["NN316"], batch=batch) == ["NN316"]
    assert codes(model, ["NN311", "NN316"], batch=batch) == ["NN311"]  # one bug, one finding


def test_suspicious_inputs_flags_binary_targets_beyond_one():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 1))
    x = torch.randn(4, 1, 8, 8)
    mask = (torch.rand(4, 1, 8, 8) > 0.5).float()
    loss = nn.BCEWithLogitsLoss()
    assert codes(model, ["NN316"], batch=(x, mask * 255), loss_fn=loss) == ["NN316"]
    assert codes(model, ["NN316"], batch=(x, mask), loss_fn=loss) == []


def bn_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))


def test_batchnorm_tiny_batch_judges_the_users_batch_size():
    assert codes(bn_mlp(), ["NN317"]) == []  # nnlint's own batch: no word about the user's
    big = (torch.randn(32, 8), torch.randint(0, 3, (32,)))
    assert codes(bn_mlp(), ["NN317"], batch=big) == []
    small = (torch.randn(4, 8), torch.randint(0, 3, (4,)))
    assert codes(bn_mlp(), ["NN317"], batch=small) == ["NN317"]


def test_batchnorm_frozen_in_eval_mode_is_not_judged():
    model = bn_mlp()
    model.train()
    model[1].eval()  # frozen statistics, as fine-tuning with small batches does
    small = (torch.randn(2, 8), torch.randint(0, 3, (2,)))
    assert codes(model, ["NN317"], batch=small) == []


def test_batchnorm_check_leaves_the_users_model_and_rng_alone():
    model = bn_mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    small = (torch.randn(1, 8), torch.randint(0, 3, (1,)))
    rng = torch.get_rng_state()
    assert codes(model, ["NN317"], batch=small) == ["NN317"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())


class SoftmaxTwice(nn.Module):
    def __init__(self, twice=True):
        super().__init__()
        self.fc = nn.Linear(8, 4)
        self.twice = twice

    def forward(self, x):
        p = F.softmax(self.fc(x), dim=1)
        return torch.log(F.softmax(p, dim=1) if self.twice else p)


def test_output_range_flags_a_softmax_applied_twice():
    torch.manual_seed(0)
    batch = (torch.randn(16, 8), torch.randint(0, 4, (16,)))
    assert codes(SoftmaxTwice(), ["NN318"], batch=batch, loss_fn=nn.NLLLoss()) == ["NN318"]
    assert codes(SoftmaxTwice(False), ["NN318"], batch=batch, loss_fn=nn.NLLLoss()) == []


def test_output_range_leaves_softmax_into_nll_to_softmax_output():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4), nn.Softmax(dim=1))
    batch = (torch.randn(16, 8), torch.randint(0, 4, (16,)))
    assert codes(model, ["NN318"], batch=batch, loss_fn=nn.NLLLoss()) == ["NN318"]
    assert codes(model, ["NN102", "NN318"], batch=batch, loss_fn=nn.NLLLoss()) == ["NN102"]


class ZeroHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
        self.head = nn.Linear(16, 3)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x):
        return self.head(self.body(x))


class Ignores(nn.Module):
    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.randn(3))

    def forward(self, x):
        return self.bias.expand(x.shape[0], 3) + 0 * x.sum()


def test_constant_output_respects_zero_init_and_input_ignored():
    torch.manual_seed(0)
    batch = (torch.randn(16, 8), torch.randint(0, 3, (16,)))
    assert codes(ZeroHead(), ["NN319"], batch=batch) == []  # the same only until the first step
    assert codes(Ignores(), ["NN319"], batch=batch) == ["NN319"]
    assert codes(Ignores(), ["NN305", "NN319"], batch=batch) == ["NN305"]


def test_regression_init_is_off_by_default():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    far = (torch.randn(32, 8), 1000 + torch.randn(32, 1))
    assert "NN320" not in codes(model, None, batch=far, loss_fn=nn.MSELoss())
    assert codes(model, ["NN320"], batch=far, loss_fn=nn.MSELoss()) == ["NN320"]
    near = (torch.randn(32, 8), torch.randn(32, 1))
    assert codes(model, ["NN320"], batch=near, loss_fn=nn.MSELoss()) == []


def test_channels_last_images_get_a_word_in_the_forwards_error():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 14 * 14, 4))
    labels = torch.randint(0, 4, (4,))

    def no_input(x):
        found = nnlint.check(model, batch=(x, labels), select=["NN3"])
        return next(f.message for f in found if f.code == "NN005")

    assert "look channels-last" in no_input(torch.rand(4, 16, 16, 3))
    assert "channels-last" not in no_input(torch.rand(4, 5, 16, 16))  # just the wrong count


ONE_CLASS_SCRIPT = """
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(0)
# 97% of class 0: a shuffled batch of 32 is often all class 0 by chance
labels = torch.cat([torch.zeros(970, dtype=torch.long), torch.ones(20, dtype=torch.long),
                    torch.full((10,), 2)])
data = TensorDataset(torch.randn(1000, 8), labels)
loader = DataLoader(data, batch_size=32, SHUFFLE)


def make_model():
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


model = make_model()
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for x, y in loader:
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()
"""


@pytest.mark.parametrize(
    ("shuffle", "expected"),
    [("shuffle=False", ["NN316"]), ("shuffle=True", []), ("sampler=list(range(1000))", [])],
)
def test_one_class_batches_are_judged_only_from_a_loader_reading_in_order(
    tmp_path, shuffle, expected
):
    import json
    import subprocess
    import sys

    script = tmp_path / "train.py"
    script.write_text(ONE_CLASS_SCRIPT.replace("SHUFFLE", shuffle))
    if shuffle == "shuffle=True":
        # this seed's first shuffled batch holds one class, as the in-order one does
        script.write_text(script.read_text().replace("manual_seed(0)", "manual_seed(1)"))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "nnlint",
            "--isolated",
            "--no-cache",
            "--format",
            "json",
            "--select",
            "NN316",
            "train.py",
            "--model",
            "train.py:make_model",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode in (0, 1), run.stderr
    found = [f["code"] for f in json.loads(run.stdout)["findings"] if f["code"] == "NN316"]
    assert found == expected, run.stdout

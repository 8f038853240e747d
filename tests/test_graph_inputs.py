"""The input provider shared by the graph and dynamic phases."""

from __future__ import annotations

import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from nnlint.api import check  # noqa: E402
from nnlint.core.config import Settings  # noqa: E402
from nnlint.core.errors import UsageError  # noqa: E402
from nnlint.setup.inputs import as_batch, provide_batch  # noqa: E402


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(self.conv1(x).relu(), 2)
        x = nn.functional.max_pool2d(self.conv2(x).relu(), 2)
        return self.fc(x.flatten(1))


class TakesDict(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.ModuleDict({"a": nn.Linear(3, 3)})

    def forward(self, features):
        return self.proj["a"](features["a"])


def test_conv_synthesis_tries_sizes_until_the_forward_runs():
    model = LeNet().train()
    batch, reason = provide_batch(model, Settings())
    assert reason is None and batch.args[0].shape[1:] == (1, 28, 28)
    assert model.training  # trial forwards run in eval and restore the mode


def test_embedding_synthesis_gives_token_ids_in_range():
    model = nn.Sequential(nn.Embedding(7, 4), nn.Linear(4, 7))
    batch, _ = provide_batch(model, Settings())
    ids = batch.args[0]
    assert ids.dtype == torch.long and int(ids.max()) < 7 and ids.ndim == 2


def test_linear_synthesis_and_shape_override():
    batch, _ = provide_batch(nn.Linear(5, 2), Settings())
    assert batch.args[0].shape[1:] == (5,)
    batch, _ = provide_batch(nn.Linear(5, 2), Settings(input_shape=[3, 5], input_dtype="float64"))
    assert batch.args[0].shape[1:] == (3, 5) and batch.args[0].dtype == torch.float64
    with pytest.raises(UsageError, match="not a torch dtype"):
        provide_batch(nn.Linear(5, 2), Settings(input_shape=[5], input_dtype="floaty"))


def test_model_example_inputs_come_before_synthesis():
    model = nn.Linear(5, 2)
    model.example_input_array = torch.zeros(1, 5)
    batch, _ = provide_batch(model, Settings())
    assert batch.origin == "model.example_input_array"


def test_captured_batch_splits_inputs_and_target():
    x, y = torch.randn(2, 5), torch.tensor([0, 1])
    batch, _ = provide_batch(nn.Linear(5, 2), Settings(), captured=(x, y))
    assert batch.args == (x,) and batch.target is y and batch.origin == "training script"
    batch = as_batch({"input_ids": x, "labels": y}, nn.Linear(5, 2), "test")
    assert batch.args == () and batch.target is y


def test_data_flag_accepts_a_dataloader_a_dataset_and_a_function(tmp_path, monkeypatch):
    (tmp_path / "nnlint_test_data.py").write_text(
        textwrap.dedent("""
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        DATASET = TensorDataset(torch.randn(10, 5), torch.arange(10) % 2)

        def loader():
            return DataLoader(DATASET, batch_size=3)

        def one_batch():
            return torch.ones(2, 5), torch.zeros(2)

        def broken():
            raise OSError("dataset not downloaded")
    """)
    )
    monkeypatch.chdir(tmp_path)
    settings = Settings(root=tmp_path)
    try:
        for spec, rows in (("loader", 3), ("DATASET", 4), ("one_batch", 2)):
            settings.data = f"nnlint_test_data:{spec}"
            batch, reason = provide_batch(nn.Linear(5, 2), settings)
            assert reason is None and batch.args[0].shape == (rows, 5), spec
            assert batch.target is not None
        settings.data = "nnlint_test_data:broken"
        batch, reason = provide_batch(nn.Linear(5, 2), settings)
        assert batch is None and "dataset not downloaded" in reason
        settings.data = "nnlint_test_data:missing"
        with pytest.raises(UsageError, match="--data"):
            provide_batch(nn.Linear(5, 2), settings)
    finally:
        sys.modules.pop("nnlint_test_data", None)


def test_no_input_is_one_nn005_naming_data_and_fx_still_runs():
    found = check(TakesDict(), select=["NN1", "NN005"])
    assert [f.code for f in found] == ["NN005"]
    assert "--data" in found[0].message

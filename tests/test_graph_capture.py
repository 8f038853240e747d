"""Capture: the recorded forward, the fx fallback, failures as NN004, and leaving the
user's model, its modes, buffers and the global RNGs exactly as they were."""

from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from nnlint.api import check  # noqa: E402
from nnlint.graph.record import CaptureError, capture, record, trace  # noqa: E402
from nnlint.setup.inputs import Batch  # noqa: E402


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = self.bn(self.conv(x)).relu().mean((2, 3))
        return self.fc(self.drop(x))


class DictIO(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 2)

    def forward(self, left, right=None):
        hidden = torch.relu(self.a(left + right))
        return {"hidden": hidden, "logits": torch.softmax(self.b(hidden), -1)}


def test_check_leaves_model_modes_buffers_rng_and_torch_as_they_were():
    model = Net().eval()
    model.drop.train()
    params = {k: v.clone() for k, v in model.state_dict().items()}
    init = nn.Module.__init__
    batch = torch.randn(2, 3, 8, 8)
    torch.manual_seed(123)
    random.seed(7)
    state, py_state = torch.get_rng_state(), random.getstate()
    check(model, batch=batch, select=["NN1"])
    assert torch.equal(torch.get_rng_state(), state)
    assert random.getstate() == py_state
    assert nn.Module.__init__ is init
    assert not model.training and model.drop.training and not model.bn.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, params[key]), key
    assert not model._forward_hooks and not model.bn._forward_pre_hooks
    assert not nn.modules.module._global_forward_hooks
    assert not nn.modules.module._global_forward_pre_hooks


def test_record_sees_ops_modules_shapes_and_parameters():
    graph = record(Net(), Batch((torch.randn(2, 3, 8, 8),)))
    kinds = [n.kind for n in graph.nodes if n.kind != "other"]
    assert kinds[:3] == ["conv", "batch_norm", "activation"]
    assert "dropout" in kinds  # not decomposed away, as TorchDispatchMode would on CPU
    conv = next(n for n in graph.nodes if n.kind == "conv")
    assert conv.module_name == "conv" and conv.output_shape == (2, 4, 6, 6)
    assert conv.params == ("conv.weight",)
    assert graph.params_read == {"conv.weight", "bn.weight", "bn.bias", "fc.weight", "fc.bias"}
    assert graph.output_node().module_name == "fc"
    assert graph.consumers(conv)[0].kind == "batch_norm"


def test_record_takes_kwargs_and_dict_outputs():
    graph = record(DictIO(), Batch((), {"left": torch.randn(2, 4), "right": torch.randn(2, 4)}))
    assert graph.output_node().kind == "softmax"  # 'logits' comes first
    assert [c.name for c in graph.calls] == ["", "a", "b"]


def test_fx_fallback_without_input_has_kinds_but_no_shapes():
    graph = capture(Net(), None)
    assert graph.backend == "fx" and not graph.has_shapes
    conv = next(n for n in graph.nodes if n.kind == "conv")
    assert conv.attrs == {"groups": 1, "in": 3, "out": 4, "bias": False}
    assert graph.consumers(conv)[0].module_name == "bn"
    assert "fc.weight" in graph.params_read


def test_fx_fallback_finds_smells_without_an_input():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    graph = trace(model)
    assert graph.consumers(graph.nodes[0])[0].kind == "batch_norm"
    found = check(model, select=["NN101"], input_shape=None, data=None)
    assert [f.code for f in found] == ["NN101"]


class Broken(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent: fx cannot trace it either
            raise RuntimeError("boom on purpose")
        return self.fc(x)


def test_capture_failure_is_one_nn004_and_no_crash():
    with pytest.raises(CaptureError, match="boom on purpose"):
        capture(Broken(), Batch((torch.ones(2, 4),)))
    found = check(Broken(), batch=torch.ones(2, 4), select=["NN1", "NN004"])
    assert [f.code for f in found] == ["NN004"]
    assert "boom on purpose" in found[0].message

"""Dynamic checks on hand-written and tiny HF models: healthy ones stay silent, planted bugs fire."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from dynamic_models import (  # noqa: E402
    MLP,
    CausalTransformer,
    GRUClassifier,
    LeNet,
    features,
    images,
    lm_loss,
    next_tokens,
    tiny_hf,
    token_classes,
)

import nnlint  # noqa: E402
from nnlint.core.finding import Severity  # noqa: E402


def problems(model, **kwargs):
    findings = nnlint.check(model, select=["NN3"], **kwargs)
    return [f for f in findings if f.severity > Severity.INFO or f.code == "NN001"]


def codes(model, **kwargs):
    return {f.code for f in problems(model, **kwargs)}


def sgd(lr=0.05):
    return lambda params: torch.optim.SGD(params, lr=lr, momentum=0.9)


def hf_tokens():
    return torch.randint(0, 96, (4, 24), generator=torch.Generator().manual_seed(0))


def healthy_cases():
    torch.manual_seed(0)
    x = hf_tokens()
    return {
        "lenet": (LeNet(), dict(batch=images(), loss_fn=F.cross_entropy, optimizer=sgd())),
        "mlp": (MLP(), dict(batch=features(), loss_fn=F.cross_entropy)),
        "gru": (GRUClassifier(), dict(batch=token_classes(), loss_fn=F.cross_entropy)),
        "causal-transformer": (CausalTransformer(), dict(batch=next_tokens(), loss_fn=lm_loss)),
        "gpt2": (tiny_hf("gpt2"), dict(batch={"input_ids": x, "labels": x})),
        "llama": (tiny_hf("llama"), dict(batch={"input_ids": x, "labels": x})),
        "bert": (
            tiny_hf("bert"),
            dict(
                batch={
                    "input_ids": x,
                    "attention_mask": torch.ones_like(x),
                    "labels": torch.tensor([0, 1, 2, 1]),
                }
            ),
        ),
    }


@pytest.mark.parametrize("name", list(healthy_cases()))
def test_healthy_models_give_no_finding(name):
    model, kwargs = healthy_cases()[name]
    assert problems(model, **kwargs) == []


def test_batchnorm_at_batch_size_one_and_frozen_backbone():
    torch.manual_seed(0)
    model = LeNet()
    model.conv1.requires_grad_(False)
    x, y = images(1)
    assert problems(model, batch=(x, y), loss_fn=F.cross_entropy) == []


class ScaledHead(LeNet):
    def __init__(self):
        super().__init__()
        nn.init.normal_(self.fc3.weight, std=20.0)


class MixingLeNet(LeNet):
    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.transpose(0, 1).reshape(x.shape[0], -1)  # view where a permute was meant
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class LogLeNet(LeNet):
    def forward(self, x):
        return torch.log(super().forward(x))


class DeafGRU(GRUClassifier):
    def forward(self, tokens):
        out, _ = self.rnn(self.emb(tokens) * 0)
        return self.head(out[:, -1])


class DetachedMLP(MLP):
    def forward(self, x):
        return self.head(self.body(x).detach())


class SigmoidMLP(MLP):
    def forward(self, x):
        return torch.sigmoid(super().forward(x))


class DeadMLP(MLP):
    def __init__(self):
        super().__init__()
        nn.init.constant_(self.body[0].bias, -20.0)


class NoisyMLP(MLP):
    def forward(self, x):
        return self.head(F.dropout(self.body(x), 0.5, training=True))


def deep_sigmoid():
    layers = []
    for _ in range(30):
        layers += [nn.Linear(32, 32), nn.Sigmoid()]
    return nn.Sequential(nn.Linear(20, 32), *layers, nn.Linear(32, 5))


def late_head_mlp():
    model = MLP()
    optimizer = torch.optim.Adam(model.parameters())
    model.head = nn.Linear(64, 5)
    return model, optimizer


def imbalanced():
    g = torch.Generator().manual_seed(0)
    return torch.randn(200, 20, generator=g), (torch.rand(200, generator=g) < 0.05).long() * 3


def scaled_gpt2():
    model = tiny_hf("gpt2")
    with torch.no_grad():
        model.transformer.wte.weight.mul_(100)
    return model


PLANTED = {
    "init-loss": (ScaledHead, lambda: dict(batch=images(), loss_fn=F.cross_entropy), "NN301"),
    "init-calibration": (MLP, lambda: dict(batch=imbalanced(), loss_fn=F.cross_entropy), "NN302"),
    "batch-mixing": (MixingLeNet, lambda: dict(batch=images(), loss_fn=F.cross_entropy), "NN303"),
    "causal-leak": (
        lambda: CausalTransformer(mask_offset=1),
        lambda: dict(batch=next_tokens(), loss_fn=lm_loss),
        "NN304",
    ),
    "input-ignored": (
        DeafGRU,
        lambda: dict(batch=token_classes(), loss_fn=F.cross_entropy),
        "NN305",
    ),
    "dead-gradient": (
        DetachedMLP,
        lambda: dict(batch=features(), loss_fn=F.cross_entropy),
        "NN306",
    ),
    "vanishing": (deep_sigmoid, lambda: dict(batch=features(), loss_fn=F.cross_entropy), "NN307"),
    "huge-lr": (
        MLP,
        lambda: dict(batch=features(), loss_fn=F.cross_entropy, optimizer=sgd(50.0)),
        "NN307",
    ),
    "cannot-overfit": (
        SigmoidMLP,
        lambda: dict(batch=features(), loss_fn=F.cross_entropy),
        "NN309",
    ),
    "dead-units": (DeadMLP, lambda: dict(batch=features(), loss_fn=F.cross_entropy), "NN310"),
    "non-finite": (LogLeNet, lambda: dict(batch=images(), loss_fn=F.cross_entropy), "NN311"),
    "loss-reduction": (
        MLP,
        lambda: dict(batch=features(), loss_fn=nn.CrossEntropyLoss(reduction="sum")),
        "NN312",
    ),
    "train-eval-mismatch": (
        NoisyMLP,
        lambda: dict(batch=features(), loss_fn=F.cross_entropy),
        "NN313",
    ),
    "gpt2-init-loss": (
        scaled_gpt2,
        lambda: dict(batch={"input_ids": hf_tokens(), "labels": hf_tokens()}),
        "NN301",
    ),
    "llama-tiny-lr": (
        lambda: tiny_hf("llama"),
        lambda: dict(
            batch={"input_ids": hf_tokens(), "labels": hf_tokens()},
            optimizer=lambda p: torch.optim.SGD(p, lr=1e-9),
        ),
        "NN309",
    ),
}


@pytest.mark.parametrize("name", list(PLANTED))
def test_planted_bug_is_found(name):
    build, kwargs, code = PLANTED[name]
    torch.manual_seed(0)
    found = codes(build(), **kwargs())
    assert code in found, found
    assert "NN001" not in found


def test_params_not_in_optimizer_names_the_replaced_head():
    torch.manual_seed(0)
    model, optimizer = late_head_mlp()
    found = [
        f
        for f in problems(model, batch=features(), loss_fn=F.cross_entropy, optimizer=optimizer)
        if f.code == "NN308"
    ]
    assert found and "`head`" in found[0].message


def test_bert_with_head_outside_the_optimizer():
    model = tiny_hf("bert")
    optimizer = torch.optim.AdamW(model.bert.parameters(), lr=1e-4)
    x = hf_tokens()
    batch = {"input_ids": x, "labels": torch.tensor([0, 1, 2, 1])}
    assert "NN308" in codes(model, batch=batch, optimizer=optimizer)

"""Shapes of real published models, written small: zero and tiny initialisations,
reads through properties, flattened LM losses (issue 13). Each model here gave a
false finding, or missed a real one, before the fix its test names."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

import nnlint  # noqa: E402
from nnlint.core.finding import Severity  # noqa: E402


def problems(model, select=None, **kwargs):
    findings = nnlint.check(model, select=select, **kwargs)
    return [f for f in findings if f.severity > Severity.INFO or f.code == "NN001"]


def codes(model, select=None, **kwargs):
    return sorted(f.code for f in problems(model, select, **kwargs))


def images(n=16, size=8, classes=4):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)


def features(n=16, dim=8, classes=3):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, dim, generator=g), torch.randint(0, classes, (n,), generator=g)


class ZeroGammaResNet(nn.Module):
    """A residual block whose last BatchNorm starts at zero (zero_init_residual)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(8)
        self.conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        nn.init.zeros_(self.bn.weight)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        h = F.relu(self.bn0(self.stem(x)))
        h = F.relu(h + self.bn(self.conv(h)))
        return self.fc(h.mean((2, 3)))


class ZeroOutput(nn.Module):
    """A denoiser whose output layer starts at zero (zero_module, adaLN-Zero's final layer)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 32), nn.SiLU(), nn.Linear(32, 32), nn.SiLU())
        self.out = nn.Linear(32, 8)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x):
        return self.out(self.body(x))


class LoRA(nn.Module):
    """A frozen Linear plus a low-rank update whose B matrix starts at zero."""

    def __init__(self):
        super().__init__()
        self.base = nn.Linear(8, 16)
        self.base.requires_grad_(False)
        self.a = nn.Parameter(torch.randn(4, 8) / 8**0.5)
        self.b = nn.Parameter(torch.zeros(16, 4))
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(F.relu(self.base(x) + x @ self.a.t() @ self.b.t()))


def test_zero_init_residual_branch_is_not_dead():
    torch.manual_seed(0)
    found = codes(ZeroGammaResNet(), batch=images(), loss_fn=F.cross_entropy)
    assert "NN306" not in found, found


def test_zero_output_layer_neither_dead_nor_ignoring_its_input():
    torch.manual_seed(0)
    x = features()[0]
    found = codes(ZeroOutput(), batch=(x, torch.randn(16, 8)), loss_fn=F.mse_loss)
    assert "NN305" not in found and "NN306" not in found, found


def test_lora_a_matrix_is_not_dead():
    torch.manual_seed(0)
    found = codes(LoRA(), batch=features(), loss_fn=F.cross_entropy)
    assert "NN306" not in found, found


class ZeroedForever(nn.Module):
    """`0 * b(x)`: b's gradient is zero at init and stays zero after training."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 3)
        self.b = nn.Linear(8, 3)

    def forward(self, x):
        return self.a(x) + 0 * self.b(x)


def test_a_branch_zero_for_good_is_still_dead():
    torch.manual_seed(0)
    found = problems(ZeroedForever(), batch=features(), loss_fn=F.cross_entropy)
    assert [f.code for f in found] == ["NN306"], found
    assert "`b`" in found[0].message


class Detached(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)).detach())


class DataRead(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 16) / 8**0.5)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(torch.tanh(x @ self.w.data))


class Unused(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 3)
        self.spare = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(x)


@pytest.mark.parametrize("model", [Detached, DataRead])
def test_read_but_no_gradient_is_reported_once_with_the_default_rules(model):
    torch.manual_seed(0)
    found = [f for f in problems(model(), batch=features(), loss_fn=F.cross_entropy)]
    about = [f for f in found if f.code in ("NN106", "NN306")]
    assert [f.code for f in about] == ["NN306"], found
    assert "no gradient" in about[0].message and ".detach()" in about[0].message


def test_never_read_is_left_to_unused_parameters():
    torch.manual_seed(0)
    found = problems(Unused(), batch=features(), loss_fn=F.cross_entropy)
    assert [f.code for f in found if f.code in ("NN106", "NN306")] == ["NN106"], found


class ReadThroughT(nn.Module):
    """Falcon-style linear layers: `x @ self.weight.T`."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(16, 8) / 8**0.5)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(torch.tanh(x @ self.w.T))


def test_a_weight_read_through_T_is_read():
    torch.manual_seed(0)
    found = codes(ReadThroughT(), batch=features(), loss_fn=F.cross_entropy)
    assert "NN106" not in found and "NN306" not in found, found


class TinyToken(nn.Module):
    """A ViT-style class token drawn with std 1e-6."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 16)
        self.cls_token = nn.Parameter(torch.randn(1, 1, 16) * 1e-6)
        self.mix = nn.Linear(16, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        z = torch.cat([self.cls_token.expand(len(x), 1, 16), self.proj(x)], 1)
        z = z + self.mix(z).softmax(1) * z
        return self.head(z[:, 0] + z.mean(1))


def test_a_tiny_class_token_is_not_an_exploding_gradient():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    batch = (torch.randn(16, 5, 8, generator=g), torch.randint(0, 3, (16,), generator=g))
    found = codes(TinyToken(), batch=batch, loss_fn=F.cross_entropy, select=["NN307"])
    assert found == [], found


class SmallInitEncoder(nn.Module):
    """A BERT-shaped classifier with every weight drawn at std 0.02 (HF's init):
    query/key gradients are ~1e-5 of the classifier's at init, by construction."""

    def __init__(self, vocab=100, d=16, classes=3):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(32, d)
        self.ln = nn.LayerNorm(d)
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                {
                    "q": nn.Linear(d, d),
                    "k": nn.Linear(d, d),
                    "v": nn.Linear(d, d),
                    "o": nn.Linear(d, d),
                    "ln1": nn.LayerNorm(d),
                    "up": nn.Linear(d, 2 * d),
                    "down": nn.Linear(2 * d, d),
                    "ln2": nn.LayerNorm(d),
                }
            )
            for _ in range(2)
        )
        self.pool = nn.Linear(d, d)
        self.cls = nn.Linear(d, classes)
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, t):
        h = self.ln(self.emb(t) + self.pos(torch.arange(t.shape[1])))
        for b in self.blocks:
            n, s, d = h.shape
            q, k, v = (b[x](h).view(n, s, 4, d // 4).transpose(1, 2) for x in "qkv")
            a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, s, d)
            h = b["ln1"](h + b["o"](a))
            h = b["ln2"](h + b["down"](F.gelu(b["up"](h))))
        return self.cls(torch.tanh(self.pool(h[:, 0])))


def test_attention_keys_at_a_small_init_are_not_vanishing():
    torch.manual_seed(2)
    model = SmallInitEncoder()
    g = torch.Generator().manual_seed(0)
    batch = (torch.randint(0, 100, (8, 16), generator=g), torch.randint(0, 3, (8,), generator=g))
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
    found = codes(
        model, batch=batch, loss_fn=F.cross_entropy, optimizer=optimizer, select=["NN307"]
    )
    assert found == [], found


class SmallHead(nn.Module):
    """A classifier head drawn at std 0.003: its gradient is ~50x its weight at init."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 64), nn.ReLU())
        self.head = nn.Linear(64, 3)
        nn.init.normal_(self.head.weight, std=0.003)

    def forward(self, x):
        return self.head(self.body(x))


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
        lambda p: torch.optim.AdamW(p, lr=1e-3),
    ],
)
def test_a_small_head_is_judged_after_training(optimizer):
    torch.manual_seed(0)
    model = SmallHead()
    found = codes(
        model,
        batch=features(),
        loss_fn=F.cross_entropy,
        optimizer=optimizer(model.parameters()),
        select=["NN307"],
    )
    assert found == [], found


def deep_sigmoid():
    layers = []
    for _ in range(30):
        layers += [nn.Linear(32, 32), nn.Sigmoid()]
    return nn.Sequential(nn.Linear(8, 32), *layers, nn.Linear(32, 3))


def test_a_deep_sigmoid_stack_still_vanishes_with_sgd():
    torch.manual_seed(0)
    model = deep_sigmoid()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    found = problems(
        model, batch=features(), loss_fn=F.cross_entropy, optimizer=optimizer, select=["NN307"]
    )
    assert [f.code for f in found] == ["NN307"] and "vanishing" in found[0].message, found


class UnmaskedLM(nn.Module):
    """A language model whose attention has no causal mask at all."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 20)

    def forward(self, t):
        h = self.emb(t)
        return self.head(h + self.attn(h, h, h, need_weights=False)[0])


@pytest.mark.parametrize("flat", [False, True])
def test_next_token_targets_make_a_causal_task(flat):
    torch.manual_seed(0)
    tokens = torch.randint(0, 20, (8, 13), generator=torch.Generator().manual_seed(0))
    x, y = tokens[:, :-1], tokens[:, 1:]
    if flat:
        y = y.reshape(-1)

        def loss_fn(out, target):
            return F.cross_entropy(out.reshape(-1, 20), target)
    else:
        loss_fn = F.cross_entropy
    found = codes(UnmaskedLM(), batch=(x, y), loss_fn=loss_fn, select=["NN304"])
    assert found == ["NN304"], found


class LinearIntoResidual(nn.Module):
    """ALBERT's embedding projection: a Linear whose output feeds both another
    Linear and the residual stream, so the two do not collapse into one."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(8, 16)
        self.q = nn.Linear(16, 16)
        self.ln = nn.LayerNorm(16)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        h = self.inp(x)
        return self.head(self.ln(h + torch.tanh(self.q(h))))


def test_a_linear_feeding_a_residual_does_not_collapse():
    torch.manual_seed(0)
    found = codes(LinearIntoResidual(), batch=features(), loss_fn=F.cross_entropy, select=["NN105"])
    assert found == [], found


@pytest.mark.parametrize("shape", ["flat", "sliced-flat"])
def test_flattened_next_token_targets_are_causal(shape):
    from nnlint.setup.task import declared_task

    tokens = torch.randint(0, 20, (4, 9), generator=torch.Generator().manual_seed(0))
    if shape == "flat":
        x, y = tokens[:, :-1], tokens[:, 1:].reshape(-1)
    else:
        x, y = tokens, tokens[:, 1:].reshape(-1)
    assert declared_task(UnmaskedLM(), (x,), {}, y, None) == "causal-lm"


def test_masked_lm_targets_are_not_causal():
    from nnlint.setup.task import declared_task

    tokens = torch.randint(0, 20, (4, 9), generator=torch.Generator().manual_seed(0))
    labels = torch.full_like(tokens, -100)
    labels[:, 3] = tokens[:, 3]
    assert declared_task(UnmaskedLM(), (tokens,), {}, labels.reshape(-1), None) is None


class SeparableTransform(nn.Module):
    """A fixed 2D transform applied as one 1D transform along rows, then along columns
    (timm's CSATv2 DCT stem), then a classifier."""

    def __init__(self, size=8):
        super().__init__()
        self.rows = nn.Linear(size, size, bias=False)
        self.head = nn.Linear(3 * size * size, 4)

    def forward(self, x):
        x = self.rows(self.rows(x).transpose(-1, -2)).transpose(-1, -2)
        return self.head(F.gelu(x).flatten(1))


def test_a_linear_along_another_axis_does_not_collapse():
    assert codes(SeparableTransform(), ["NN105"], batch=images()) == []


class SqueezeExcite(nn.Module):
    """A small CNN with a squeeze-excitation block (SENet, MobileNetV3, EfficientNet):
    globally pooled features through a 4-unit ReLU bottleneck gate the channels."""

    def __init__(self, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 32, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(32)
        self.reduce = nn.Conv2d(32, 4, 1)
        self.expand = nn.Conv2d(4, 32, 1)
        self.head = nn.Linear(32, 4)
        with torch.no_grad():
            for conv in (self.conv, self.reduce, self.expand):
                scale = conv.weight[0].numel() ** 0.5
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) / scale)
            self.reduce.bias.zero_()

    def forward(self, x):
        h = F.relu(self.bn(self.conv(x)))
        gate = torch.sigmoid(self.expand(F.relu(self.reduce(h.mean((2, 3), keepdim=True)))))
        return self.head((h * gate).mean((2, 3)))


@pytest.mark.parametrize("seed", [1, 15])
def test_a_squeeze_excitation_bottleneck_is_not_dead(seed):
    assert codes(SqueezeExcite(seed), ["NN310"], batch=images()) == []


def test_a_layer_dead_for_good_is_still_dead():
    wide = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    nn.init.constant_(wide[0].bias, -20.0)
    assert codes(wide, ["NN310"], batch=features()) == ["NN310"]


class DetachedOutput(nn.Module):
    """A model whose output is detached on its way out: no parameter gets a gradient."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x))).detach()


def test_a_loss_that_needs_no_gradient_is_reported():
    found = problems(DetachedOutput(), ["NN306"], batch=features(), loss_fn=F.cross_entropy)
    assert [f.code for f in found] == ["NN306"]
    assert "all 4 trainable parameters" in found[0].message

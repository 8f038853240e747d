"""nnlint's own fallbacks never crash a rule, and the user's errors stay the user's
(issue 13): the loss gets the output as the model returns it, framework-wrapped
optimizers are unwrapped, an exception in the user's forward is reported at the
user's line, guessed losses are said to be guesses, synthesized labels fit."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

import nnlint  # noqa: E402


def crashes(findings):
    return [f for f in findings if f.code == "NN001"]


def features(n=16, dim=8, classes=3):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, dim, generator=g), torch.randint(0, classes, (n,), generator=g)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 32)
        self.fc2 = nn.Linear(32, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class DictOut(Net):
    """Returns a dict, as many detection and multi-task models do."""

    def forward(self, x):
        return {"scores": super().forward(x), "features": x}


def tiny_gpt2():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        vocab_size=40,
        n_positions=16,
        n_embd=16,
        n_layer=1,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config)


def test_a_custom_loss_reads_the_model_output_as_returned_by_an_hf_model():
    model = tiny_gpt2()
    ids = torch.randint(0, 40, (4, 12), generator=torch.Generator().manual_seed(0))

    def loss_fn(out, y):
        return F.cross_entropy(out.logits[:, :-1].reshape(-1, 40), y[:, 1:].reshape(-1))

    found = nnlint.check(model, batch=(ids, ids), loss_fn=loss_fn, select=["NN0", "NN3"])
    assert not crashes(found), found
    assert not [f for f in found if f.code == "NN007" and "dynamic checks" in f.message], found


def test_a_custom_loss_reads_a_dict_output():
    torch.manual_seed(0)
    found = nnlint.check(
        DictOut(),
        batch=features(),
        loss_fn=lambda out, y: F.cross_entropy(out["scores"], y),
        select=["NN0", "NN3"],
    )
    assert not crashes(found), found
    assert not [f for f in found if f.code == "NN007" and "dynamic checks" in f.message], found


class Wrapped(torch.optim.Optimizer):
    """A framework's optimizer wrapper: it holds the real one as `.optimizer` and
    cannot be rebuilt from parameter groups (its constructor wants an optimizer)."""

    def __init__(self, optimizer):
        self.optimizer = optimizer

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @property
    def state(self):
        return self.optimizer.state

    def step(self, closure=None):
        return self.optimizer.step(closure)

    def zero_grad(self, set_to_none=True):
        self.optimizer.zero_grad(set_to_none=set_to_none)


class Handle:
    """What a training framework hands to callbacks: not an optimizer itself."""

    def __init__(self, optimizer):
        self.optimizer = optimizer


@pytest.mark.parametrize("wrap", [Wrapped, Handle, lambda o: Handle(Wrapped(o))])
def test_a_wrapped_optimizer_is_unwrapped(wrap):
    torch.manual_seed(0)
    model = Net()
    optimizer = wrap(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    found = nnlint.check(
        model, batch=features(), loss_fn=F.cross_entropy, optimizer=optimizer, select=["NN0", "NN3"]
    )
    assert not [f for f in found if f.code in ("NN001", "NN005", "NN007")], found


def test_the_optimizer_spec_of_a_wrapper_is_the_inner_optimizers():
    from nnlint.setup.specs import OptimizerSpec

    model = Net()
    spec = OptimizerSpec.from_optimizer(
        Wrapped(torch.optim.AdamW(model.parameters(), lr=2e-4)), model
    )
    assert spec.cls is torch.optim.AdamW and spec.lr == 2e-4
    assert isinstance(spec.build(Net()), torch.optim.AdamW)


class FixedBatch(nn.Module):
    """A forward written for one batch size, as many training scripts' models are."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 32)
        self.fc2 = nn.Linear(32, 3)

    def forward(self, x):
        h = torch.relu(self.fc1(x)).view(16, 32)  # raises on any other batch size
        return self.fc2(h)


def test_an_exception_in_the_users_forward_is_reported_at_their_line():
    import inspect

    torch.manual_seed(0)
    found = nnlint.check(
        FixedBatch(), batch=features(), loss_fn=F.cross_entropy, select=["NN0", "NN3"]
    )
    assert not crashes(found), found
    source, start = inspect.getsourcelines(FixedBatch.forward)
    line = start + next(i for i, text in enumerate(source) if ".view(16, 32)" in text)
    theirs = [f for f in found if f.code == "NN007" and "raised RuntimeError" in f.message]
    assert theirs and all(f.line == line and f.path.endswith(".py") for f in theirs), found


def test_an_exception_in_the_shared_forward_points_at_the_users_line():
    import inspect

    torch.manual_seed(0)
    x, y = features()
    found = nnlint.check(
        FixedBatch(), batch=(x[:8], y[:8]), loss_fn=F.cross_entropy, select=["NN3"]
    )
    source, start = inspect.getsourcelines(FixedBatch.forward)
    line = start + next(i for i, text in enumerate(source) if ".view(16, 32)" in text)
    assert [(f.code, f.line) for f in found] == [("NN005", line)], found


class Critic(nn.Module):
    """A GAN discriminator: one score per image, trained with a loss of its own."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1))

    def forward(self, x):
        return self.body(x)


def skipped(findings, rule):
    return [f for f in findings if f.code == "NN007" and rule in f.message]


@pytest.mark.parametrize("model", [Critic, Net])
def test_a_guessed_loss_is_said_to_be_one_and_its_checks_are_skipped(model):
    torch.manual_seed(0)
    x = features()[0]
    found = nnlint.check(model(), batch=x, select=["NN3", "NN007"], verbose=True)
    assert not [f for f in found if f.code in ("NN301", "NN309")], found
    for rule in ("cannot-overfit", "init-loss") if model is Net else ("cannot-overfit",):
        assert ["guess" in f.message for f in skipped(found, rule)] == [True], found


def test_a_loss_from_the_task_is_not_a_guess():
    torch.manual_seed(0)
    x = features()[0]
    found = nnlint.check(
        Net(), batch=x, select=["NN3", "NN007"], verbose=True, task="classification"
    )
    assert not [f for f in skipped(found, "cannot-overfit") if "guess" in f.message], found


class PaddedVocab(nn.Module):
    """An embedding with one more row (a padding id) than the head has classes."""

    def __init__(self, vocab=20):
        super().__init__()
        self.emb = nn.Embedding(vocab + 1, 16)
        self.mix = nn.Linear(16, 16)
        self.head = nn.Linear(16, vocab)

    def forward(self, ids):
        h = self.emb(ids)
        return self.head(h + torch.tanh(self.mix(h)).cumsum(1))


def test_synthesized_next_token_labels_lie_in_the_output_range():
    torch.manual_seed(0)
    ids = torch.arange(21).repeat(4, 1)  # every id, the padding id (20) included
    found = nnlint.check(PaddedVocab(), batch=ids, select=["NN0", "NN3"], task="causal-lm")
    assert not crashes(found), found
    assert not [f for f in found if f.code == "NN007" and "dynamic checks" in f.message], found


def test_synthesized_labels_leave_positions_out_with_the_losss_ignore_index():
    from nnlint.setup.resolve import resolve

    ids = torch.arange(21).repeat(2, 1)
    setup = resolve(PaddedVocab(), (ids,), {}, loss_fn=nn.CrossEntropyLoss(ignore_index=-1))
    labels = setup.loss.target.reshape(2, 21)
    assert labels[:, -1].tolist() == [-1, -1] and labels[:, -2].tolist() == [-1, -1]
    assert labels[:, :-2].tolist() == ids[:, 1:-1].tolist()


class ZeroOverZero(nn.Module):
    """A normalisation by a norm that is zero at init: 0/0 in the model's own forward."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.gate = nn.Parameter(torch.zeros(8))
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        h = torch.relu(self.conv1(x)) * self.gate.view(1, -1, 1, 1)
        h = h / h.sum((1, 2, 3), keepdim=True)  # 0 / 0
        return self.fc(h.mean((2, 3)))


def test_nan_is_reported_once_at_the_forward_line_that_made_it():
    import inspect

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    batch = (torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 4, (8,), generator=g))
    found = nnlint.check(
        ZeroOverZero(), batch=batch, loss_fn=F.cross_entropy, select=["NN3", "NN007"], verbose=True
    )
    source, start = inspect.getsourcelines(ZeroOverZero.forward)
    line = start + next(i for i, text in enumerate(source) if "# 0 / 0" in text)
    problems = [f for f in found if f.code != "NN007"]
    assert [(f.code, f.line) for f in problems] == [("NN311", line)], found
    assert "`Tensor.div`" in problems[0].message, problems
    notes = [f for f in found if f.code == "NN007" and "see non-finite" in f.message]
    assert {"input-ignored", "cannot-overfit", "dead-gradient"} <= {
        f.message.split("(")[1].split(")")[0] for f in notes
    }, found


class IntCast(nn.Module):
    """An integer cast in the forward: fc1 is read, but no gradient gets through."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(self.fc1(x).round().long().float())


class DeadInFront(nn.Module):
    """Every ReLU unit after fc1 dead: fc1 and fc2's weight get zero gradients."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 16)
        self.fc3 = nn.Linear(16, 3)
        nn.init.constant_(self.fc1.bias, -100.0)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


@pytest.mark.parametrize(("model", "code"), [(IntCast, "NN306"), (DeadInFront, "NN310")])
def test_a_parameter_without_gradient_is_reported_by_exactly_one_rule(model, code):
    torch.manual_seed(0)
    found = nnlint.check(model(), batch=features(), loss_fn=F.cross_entropy)
    about = [f.code for f in found if f.code in ("NN106", "NN306", "NN310")]
    assert about == [code], found

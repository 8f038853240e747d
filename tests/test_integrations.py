"""The Lightning and HF Trainer callbacks, the IPython magics and `_repr_html_`.

Real frameworks, tiny CPU models: the callbacks find a model that ends in
softmax under a cross-entropy loss (NN102) and a parameter the optimizer does
not hold (NN308), say nothing about the clean model, stop training with
`fail_on="error"`, and leave the trained parameters exactly as without them.
"""

from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

WIDTH, CLASSES = 12, 4


class Net(nn.Module):
    """A small classifier; `softmax` plants NN102, the `scale` parameter is the one a
    planted optimizer leaves out (NN308)."""

    def __init__(self, softmax: bool = False, stateful: bool = False) -> None:
        super().__init__()
        layers = [nn.Linear(WIDTH, 24), nn.ReLU(), nn.Linear(24, CLASSES)]
        if stateful:  # running statistics and dropout's draws: what a replay could disturb
            layers = [nn.BatchNorm1d(WIDTH), layers[0], nn.ReLU(), nn.Dropout(0.2), layers[2]]
        self.net = nn.Sequential(*layers, *([nn.Softmax(-1)] if softmax else []))
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * self.scale)


def data() -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, WIDTH, generator=g), torch.randint(0, CLASSES, (64,), generator=g)
    return torch.utils.data.TensorDataset(x, y)


def codes(findings) -> list[str]:
    return sorted(f.code for f in findings)


# ---------------------------------------------------------------- Lightning


def lightning_module(
    softmax=False, missing=False, returns="tensor", manual=False, stateful=False, reads=False
):
    L = pytest.importorskip("lightning")

    class Lit(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = Net(softmax, stateful)
            self.automatic_optimization = not manual

        def forward(self, x):
            return self.model(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            if reads:  # the copy is attached to no Trainer: this raises there
                self.trainer.global_step  # noqa: B018
            loss = F.cross_entropy(self(x), y)
            self.log("train_loss", loss)
            if manual:
                opt = self.optimizers()
                opt.zero_grad()
                self.manual_backward(loss)
                opt.step()
                return None
            if returns == "none":  # Lightning skips the step
                return None
            return {"loss": loss} if returns == "dict" else loss

        def configure_optimizers(self):
            params = self.model.net.parameters() if missing else self.parameters()
            return torch.optim.Adam(params, lr=1e-2)

    return Lit()


def fit(module, callbacks=(), logger=False):
    L = pytest.importorskip("lightning")
    trainer = L.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=logger,
        callbacks=list(callbacks),
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    loader = torch.utils.data.DataLoader(data(), batch_size=16, shuffle=True)
    trainer.fit(module, loader)
    return trainer


@pytest.mark.parametrize(
    ("softmax", "missing", "returns", "expected"),
    [
        (False, False, "tensor", []),
        (True, False, "dict", ["NN102"]),
        (False, True, "tensor", ["NN308"]),
    ],
    ids=["clean", "softmax-dict", "missing-param"],
)
def test_lightning_callback_finds_the_planted_bug(tmp_path, softmax, missing, returns, expected):
    from lightning.pytorch.loggers import CSVLogger

    from nnlint.integrations.lightning import NNLintCallback

    callback = NNLintCallback(select=["NN1", "NN308"])
    logger = CSVLogger(tmp_path, name="run")
    fit(lightning_module(softmax, missing, returns), [callback], logger)
    assert codes(callback.findings) == expected, callback.findings
    metrics = (tmp_path / "run" / "version_0" / "metrics.csv").read_text()
    assert "nnlint/findings" in metrics and "nnlint/error" in metrics


def test_lightning_callback_leaves_training_as_it_was(capsys):
    """Same seed, with and without the callback (all rules): the same parameters."""
    from nnlint.integrations.lightning import NNLintCallback

    trained = []
    for callbacks in ([], [NNLintCallback()]):
        torch.manual_seed(0)
        module = lightning_module(stateful=True)
        fit(module, callbacks)
        trained.append({k: v.clone() for k, v in module.state_dict().items()})
        if callbacks:
            assert callbacks[0].findings == [], callbacks[0].findings
    assert trained[0].keys() == trained[1].keys()
    assert all(torch.equal(trained[0][k], trained[1][k]) for k in trained[0])
    assert "All checks passed!" in capsys.readouterr().err


def test_lightning_fail_on_error_stops_fit():
    from nnlint.integrations.lightning import NNLintCallback, NNLintError

    module = lightning_module(softmax=True)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with pytest.raises(NNLintError, match="NN102") as raised:
        fit(module, [NNLintCallback(fail_on="error", select=["NN102"])])
    assert [f.code for f in raised.value.findings] == ["NN102"]
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # stopped before a step


def test_lightning_manual_optimization_is_said_and_skipped():
    from nnlint.integrations.lightning import NNLintCallback

    callback = NNLintCallback(select=["NN007", "NN102", "NN308"])
    trainer = fit(lightning_module(softmax=True, manual=True), [callback])
    notes = [f for f in callback.findings if f.code == "NN007"]
    assert notes and "manual optimization" in notes[0].message
    # the graph checks ran on the batch, but without the loss NN102 cannot know its
    # softmax is wrong: silent rather than a guess
    assert codes(callback.findings) == ["NN007"]
    assert trainer.global_step == 2


def test_lightning_step_without_a_loss_is_said_and_skipped():
    from nnlint.integrations.lightning import NNLintCallback

    callback = NNLintCallback()
    fit(lightning_module(softmax=True, returns="none"), [callback])
    assert codes(callback.findings) == ["NN007"], callback.findings
    assert "returned no loss" in callback.findings[0].message
    assert NNLintCallback(ignore=["NN007"]).options.kept(callback.findings) == []


def test_lightning_step_that_fails_on_the_copy_is_said_and_training_goes_on():
    from nnlint.integrations.lightning import NNLintCallback

    callback = NNLintCallback(fail_on="error")
    trainer = fit(lightning_module(reads=True), [callback])
    assert codes(callback.findings) == ["NN007"], callback.findings
    assert "RuntimeError" in callback.findings[0].message
    assert trainer.global_step == 2


def test_the_callback_is_also_pytorch_lightnings():
    pl = pytest.importorskip("pytorch_lightning")
    from nnlint.integrations.lightning import NNLintCallback

    class Old(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = Net(softmax=True)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.cross_entropy(self.model(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    callback = NNLintCallback(select=["NN102"])
    trainer = pl.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        callbacks=[callback],
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(Old(), torch.utils.data.DataLoader(data(), batch_size=16))
    assert codes(callback.findings) == ["NN102"]  # a submodule training_step calls


@pytest.mark.parametrize(
    ("integration", "modules", "package"),
    [
        ("lightning", ("lightning", "lightning.pytorch", "pytorch_lightning"), "lightning"),
        ("transformers", ("transformers",), "transformers"),
        ("ipython", ("IPython", "IPython.core", "IPython.core.magic"), "ipython"),
    ],
)
def test_a_missing_framework_names_the_package(monkeypatch, integration, modules, package):
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, f"nnlint.integrations.{integration}", raising=False)
    with pytest.raises(ImportError, match=f"pip install {package}$"):
        importlib.import_module(f"nnlint.integrations.{integration}")


def test_importing_nnlint_and_its_integrations_package_stays_torch_free():
    code = (
        "import sys, nnlint, nnlint.integrations; "
        "bad = {'torch', 'lightning', 'transformers', 'IPython'} & set(sys.modules); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- HF Trainer


class HFNet(Net):
    """`Net` as the HF Trainer trains it: its own loss on `labels`."""

    def forward(self, x, labels=None):
        from transformers.modeling_outputs import SequenceClassifierOutput

        logits = super().forward(x)
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


class Rows(torch.utils.data.Dataset):
    def __init__(self) -> None:
        self.x, self.y = data().tensors

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


def train(tmp_path, model, callbacks=(), missing=False):
    transformers = pytest.importorskip("transformers")
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=16,
        max_steps=2,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_strategy="no",
        learning_rate=1e-2,
        disable_tqdm=True,
    )
    optimizer = torch.optim.AdamW(model.net.parameters(), lr=1e-2) if missing else None
    trainer = transformers.Trainer(
        model=model,
        args=args,
        train_dataset=Rows(),
        callbacks=list(callbacks),
        optimizers=(optimizer, None),
    )
    trainer.train()
    return trainer


@pytest.mark.parametrize(
    ("softmax", "missing", "expected"),
    [(False, False, []), (True, False, ["NN102"]), (False, True, ["NN308"])],
    ids=["clean", "softmax", "missing-param"],
)
def test_transformers_callback_finds_the_planted_bug(tmp_path, softmax, missing, expected):
    from nnlint.integrations.transformers import NNLintCallback

    callback = NNLintCallback(select=["NN1", "NN308"])
    trainer = train(tmp_path, HFNet(softmax), [callback], missing)
    assert codes(callback.findings) == expected, callback.findings
    logged = [entry for entry in trainer.state.log_history if "nnlint/findings" in entry]
    assert logged and logged[0]["nnlint/error"] == len(expected)


def test_transformers_callback_leaves_training_as_it_was(tmp_path):
    from nnlint.integrations.transformers import NNLintCallback

    trained = []
    for callbacks in ([], [NNLintCallback()]):
        torch.manual_seed(0)
        model = HFNet(stateful=True)
        train(tmp_path, model, callbacks)
        trained.append({k: v.clone() for k, v in model.state_dict().items()})
        if callbacks:
            assert callbacks[0].findings == [], callbacks[0].findings
    assert all(torch.equal(trained[0][k], trained[1][k]) for k in trained[0])


def test_transformers_fail_on_error_stops_train(tmp_path):
    from nnlint.integrations.transformers import NNLintCallback, NNLintError

    model = HFNet()
    with pytest.raises(NNLintError, match="NN308"):
        train(tmp_path, model, [NNLintCallback(fail_on="error", select=["NN308"])], missing=True)
    assert torch.equal(model.scale.detach(), torch.ones(1))


# ---------------------------------------------------------------- notebooks


def test_findings_render_as_an_escaped_html_table():
    from nnlint.api import check

    model = nn.Sequential(nn.Linear(WIDTH, CLASSES), nn.Softmax(dim=1))
    batch = data().tensors
    found = check(model, batch=batch, loss_fn=nn.CrossEntropyLoss(), select=["NN102"])
    page = found._repr_html_()
    assert page.count("<tr>") == 2 and "NN102" in page and "softmax-output" in page
    assert "<td>error</td>" in page
    with_markup = type(found)([dataclasses.replace(found[0], message="<b>x</b>")])
    assert "&lt;b&gt;x&lt;/b&gt;" in with_markup._repr_html_()
    assert "all checks passed" in type(found)()._repr_html_()


@pytest.fixture
def shell():
    pytest.importorskip("IPython")
    from IPython.core.interactiveshell import InteractiveShell

    # IPython installs its own `__main__` module; multiprocessing's spawn, used by
    # later tests, needs the real one back.
    main = sys.modules["__main__"]
    ipython = InteractiveShell.instance()
    ipython.run_line_magic("load_ext", "nnlint")
    try:
        yield ipython
    finally:
        ipython.user_ns.clear()
        InteractiveShell.clear_instance()
        sys.modules["__main__"] = main


def test_line_magic_checks_a_model_of_the_kernel(shell):
    shell.run_cell(
        "import torch, torch.nn as nn\n"
        f"model = nn.Sequential(nn.Linear({WIDTH}, {CLASSES}), nn.Softmax(dim=1))\n"
        f"xb = (torch.randn(8, {WIDTH}), torch.randint(0, {CLASSES}, (8,)))\n"
        "crit = nn.CrossEntropyLoss()\n"
    )
    found = shell.run_line_magic("nnlint", "model batch=xb loss_fn=crit select=['NN102']")
    assert codes(found) == ["NN102"]
    clean = shell.run_line_magic("nnlint", "model[0] batch=xb loss_fn=crit select=['NN102']")
    assert clean == []


def test_line_magic_says_what_it_could_not_evaluate(shell):
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match="NameError"):
        shell.run_line_magic("nnlint", "no_such_model")


def test_cell_magic_lints_the_cell_with_cell_lines(shell):
    cell = (
        "!pip list\n"
        "import torch\n"
        "for x, y in loader:\n"
        "    loss = crit(model(x), y)\n"
        "    loss.backward()\n"
        "    optimizer.step()\n"
    )
    found = shell.run_cell_magic("nnlint", "", cell)
    assert [(f.code, f.line) for f in found] == [("NN201", 6)]
    assert shell.run_cell_magic("nnlint", "ignore=['NN201']", cell) == []
    quiet = cell.replace("optimizer.step()", "optimizer.step()  # noqa: NN201")
    assert shell.run_cell_magic("nnlint", "", quiet) == []
    assert "loader" not in shell.user_ns  # linted, never run


def test_line_magic_arguments_split_outside_brackets():
    pytest.importorskip("IPython")
    from nnlint.integrations.ipython import split_arguments

    line = "Net(3, k=2) batch=make(8, seed=1) loss_fn=crit select=['NN1']"
    assert split_arguments(line) == (
        "Net(3, k=2)",
        {"batch": "make(8, seed=1)", "loss_fn": "crit", "select": "['NN1']"},
    )
    assert split_arguments("model batch=(xb, yb)") == ("model", {"batch": "(xb, yb)"})


class Tokens(torch.utils.data.Dataset):
    def __init__(self) -> None:
        self.ids = torch.randint(0, 96, (32, 16), generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def test_transformers_callback_is_silent_on_a_clean_model_from_a_config(tmp_path):
    """A tiny random GPT-2 and its own causal-LM loss, all rules: nothing to say."""
    transformers = pytest.importorskip("transformers")
    from nnlint.integrations.transformers import NNLintCallback

    config = transformers.GPT2Config(vocab_size=96, n_positions=32, n_embd=32, n_layer=2, n_head=2)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        max_steps=2,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_strategy="no",
        learning_rate=1e-3,  # the default 5e-5 is too slow from random weights: NN309 says so
        disable_tqdm=True,
    )
    callback = NNLintCallback()
    model = transformers.GPT2LMHeadModel(config)
    transformers.Trainer(
        model=model, args=args, train_dataset=Tokens(), callbacks=[callback]
    ).train()
    assert callback.findings == [], callback.findings

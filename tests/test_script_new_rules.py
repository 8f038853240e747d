"""The shapes around the nine training-step rules of issue 14 that their examples do not cover.

Each source here is written for this test: the near misses a real script shows
(a noise scheduler, a divisor prepared before the loop, dropout only in
training, a parameter's own flag, autograd switched back on) must stay silent.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from nnlint.core.config import Settings
from nnlint.engine import run
from nnlint.testing import lint_source


def codes(source: str, code: str, **extra: str) -> list[int]:
    """The lines `code` reports on `source`."""
    return [f.line for f in lint_source(source, select=[code], extra_files=extra) if f.code == code]


def test_scheduler_at_the_top_of_the_epoch_before_a_local_train_function():
    source = """
        import torch
        model = torch.nn.Linear(4, 2)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 10)
        def train_epoch():
            for x, y in loader:
                optimizer.zero_grad()
                model(x).sum().backward()
                optimizer.step()
        for epoch in range(10):
            scheduler.step()
            train_epoch()
    """
    assert codes(source, "NN214") == [12]


def test_diffusion_noise_scheduler_is_not_a_learning_rate_scheduler():
    source = """
        import torch
        optimizer = torch.optim.AdamW(unet.parameters())
        for batch in loader:
            latents = scheduler.step(noise_pred, t, latents).prev_sample
            loss = (unet(latents) - batch).pow(2).mean()
            loss.backward()
            optimizer.step()
    """
    assert codes(source, "NN214") == []


def test_float16_autocast_left_alone_when_off_or_scaled_by_a_library():
    off = """
        import torch
        for x in loader:
            with torch.autocast("cuda", dtype=torch.float16, enabled=False):
                loss = model(x).sum()
            loss.backward()
            optimizer.step()
    """
    accelerate = """
        import torch
        from accelerate import Accelerator
        for x in loader:
            with torch.autocast("cuda"):
                loss = model(x).sum()
            loss.backward()
            optimizer.step()
    """
    inference = """
        import torch
        def predict(model, x):
            with torch.autocast("cuda"):
                return model(x)
        def train(model, x):
            model(x).sum().backward()
    """
    assert codes(off, "NN215") == codes(accelerate, "NN215") == codes(inference, "NN215") == []


def test_divisor_prepared_before_the_loop_or_handed_to_the_loss():
    prepared = """
        import torch
        def train(model, optimizer, loader, accum):
            scale = 1.0 / accum
            for i, (x, y) in enumerate(loader):
                loss = model(x).sum() * scale
                loss.backward()
                if (i + 1) % accum == 0:
                    optimizer.step()
                    optimizer.zero_grad()
    """
    handed = """
        import torch
        for i, (x, y) in enumerate(loader):
            loss = compute_loss(model, x, y, args.accum)
            loss.backward()
            if (i + 1) % args.accum == 0:
                optimizer.step()
                optimizer.zero_grad()
    """
    assert codes(prepared, "NN216") == codes(handed, "NN216") == []


def test_shuffled_evaluation_loader_only_with_the_option(tmp_path: Path):
    source = textwrap.dedent(
        """
        import torch
        from torch.utils.data import DataLoader
        val_loader = DataLoader(val_set, batch_size=256, shuffle=True)
        """
    )
    path = tmp_path / "train.py"
    path.write_text(source)

    def found(options):
        settings = Settings(
            paths=[str(path)], select=["NN217"], root=tmp_path, jobs=1, rule_options=options
        )
        return [(f.line, f.severity.name) for f in run(settings).findings]

    assert found({}) == []
    assert found({"train-loader-not-shuffled": {"eval_shuffle": True}}) == [(4, "INFO")]


def test_streamed_training_data_and_unnamed_loaders_are_left_alone():
    streamed = """
        import torch
        from torch.utils.data import DataLoader, IterableDataset
        train_loader = DataLoader(Shards(IterableDataset), batch_size=64)
    """
    unnamed = """
        import torch
        from torch.utils.data import DataLoader
        loader = DataLoader(dataset, batch_size=64)
    """
    assert codes(streamed, "NN217") == codes(unnamed, "NN217") == []


def test_dropout_only_in_training_is_not_always_on():
    source = """
        import torch
        from torch import nn
        import torch.nn.functional as F
        class Net(nn.Module):
            def forward(self, x):
                if self.training:
                    x = F.dropout(x, 0.5)
                    x = nn.Dropout(0.1)(x)
                return F.dropout(x, 0.2) if self.training else x
    """
    assert codes(source, "NN218") == codes(source, "NN219") == []


def test_requires_grad_on_a_parameter_and_a_misspelt_method_call():
    parameter = """
        import torch
        from torch import nn
        scale = nn.Parameter(torch.ones(3))
        scale.requires_grad = False
    """
    method = """
        import torch
        for name, module in model.named_modules():
            module.requirs_grad_(False)
    """
    assert codes(parameter, "NN220") == []
    assert codes(method, "NN220") == [4]


def test_ddp_loaders_sharded_by_accelerate_are_left_alone():
    source = """
        import torch
        from torch.nn.parallel import DistributedDataParallel
        from torch.utils.data import DataLoader
        model = DistributedDataParallel(net)
        train_loader = accelerator.prepare(DataLoader(train_set, shuffle=True))
    """
    assert codes(source, "NN221") == []


def test_backward_with_autograd_switched_back_on_or_computed_outside():
    source = """
        import torch
        @torch.no_grad()
        def attack(model, x):
            with torch.enable_grad():
                loss = model(x).sum()
                loss.backward()
        def step(model, x):
            loss = model(x).sum()
            with torch.no_grad():
                loss.backward()
    """
    computed_inside = """
        import torch
        def step(model, x, y):
            with torch.no_grad():
                (model(x) - y).pow(2).mean().backward()
    """
    assert codes(source, "NN222") == []
    assert codes(computed_inside, "NN222") == [5]

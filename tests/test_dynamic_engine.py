"""The dynamic phase's contract: user objects and RNG untouched, deterministic text, skips, crashes."""

from __future__ import annotations

import inspect
import random

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from dynamic_models import MLP, LeNet, features, images  # noqa: E402

import nnlint  # noqa: E402
import nnlint.dynamic.alongside  # noqa: E402
import nnlint.dynamic.context  # noqa: E402
import nnlint.dynamic.copies  # noqa: E402
from nnlint.testing import assert_clean  # noqa: E402


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, [
        m.training for m in model.modules()
    ]


def test_user_model_parameters_modes_and_rng_are_untouched():
    torch.manual_seed(0)
    model = LeNet()
    model.eval()
    model.fc1.weight.grad = torch.ones_like(model.fc1.weight)
    state, modes = snapshot(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    torch_rng, py_rng = torch.get_rng_state(), random.getstate()
    nnlint.check(
        model, batch=images(), loss_fn=F.cross_entropy, optimizer=optimizer, select=["NN3"]
    )
    after, after_modes = snapshot(model)
    assert all(torch.equal(state[k], after[k]) for k in state)
    assert modes == after_modes
    assert torch.equal(model.fc1.weight.grad, torch.ones_like(model.fc1.weight))
    assert torch.equal(torch.get_rng_state(), torch_rng)
    assert random.getstate() == py_rng
    assert optimizer.state == {}


class NoisyInput(MLP):
    """Draws from the global RNG in every forward, dropout or not."""

    def forward(self, x):
        return super().forward(x + 0.01 * torch.randn_like(x))


@pytest.mark.parametrize("build", [MLP, NoisyInput])
def test_same_model_gives_the_same_text_twice(build):
    """Also for a model drawing random numbers, whose checks all run one after another."""
    torch.manual_seed(0)
    model = build()
    torch.nn.init.normal_(model.head.weight, std=5.0)
    first = nnlint.check(model, batch=features(), loss_fn=F.cross_entropy, select=["NN3"])
    second = nnlint.check(model, batch=features(), loss_fn=F.cross_entropy, select=["NN3"])
    assert first and [f.message for f in first] == [f.message for f in second]


def test_finding_points_at_the_construction_line():
    torch.manual_seed(0)
    model = MLP()
    torch.nn.init.normal_(model.head.weight, std=5.0)
    found = [
        f for f in nnlint.check(model, batch=features(), loss_fn=F.cross_entropy, select=["NN301"])
    ]
    assert len(found) == 1
    assert found[0].path.endswith("dynamic_models.py")
    import inspect

    import dynamic_models

    source = inspect.getsource(dynamic_models).splitlines()
    assert "self.head = nn.Linear" in source[found[0].line - 1]


def test_not_applicable_skips_show_only_when_verbose():
    torch.manual_seed(0)
    quiet = nnlint.check(MLP(), batch=features(), loss_fn=F.cross_entropy, select=["NN304"])
    loud = nnlint.check(
        MLP(), batch=features(), loss_fn=F.cross_entropy, select=["NN304", "NN007"], verbose=True
    )
    assert quiet == []
    assert [f.code for f in loud] == ["NN007"] and "causal-leak" in loud[0].message


def test_a_check_past_its_budget_is_an_nn007(monkeypatch):
    monkeypatch.setattr(nnlint.dynamic.context, "CHECK_BUDGET", 0.0)
    found = nnlint.check(
        MLP(), batch=features(), loss_fn=F.cross_entropy, select=["NN309", "NN007"]
    )
    assert [f.code for f in found] == ["NN007"] and "budget" in found[0].message


class Fragile(MLP):
    def forward(self, x):
        if x.shape[0] > 16:
            raise RuntimeError("only batches of 16")
        return super().forward(x)


def test_a_check_the_users_forward_fails_is_their_nn007_and_the_others_still_run():
    torch.manual_seed(0)
    model = Fragile()
    torch.nn.init.normal_(model.head.weight, std=5.0)
    found = nnlint.check(
        model, batch=features(), loss_fn=F.cross_entropy, select=["NN3", "NN001", "NN007"]
    )
    by_code = {f.code: f for f in found}
    assert "NN001" not in by_code and "NN301" in by_code
    raise_line = inspect.getsourcelines(Fragile.forward)[1] + 2
    assert "loss-reduction" in by_code["NN007"].message
    assert by_code["NN007"].line == raise_line and "only batches of 16" in by_code["NN007"].message


def test_assert_clean_passes_and_fails_with_the_findings_as_text():
    torch.manual_seed(0)
    assert_clean(MLP(), batch=features(), loss_fn=F.cross_entropy)
    model = MLP()
    torch.nn.init.normal_(model.head.weight, std=5.0)
    with pytest.raises(AssertionError, match="NN301 loss at init"):
        assert_clean(model, batch=features(), loss_fn=F.cross_entropy)


def test_check_takes_a_factory_and_records_timings():
    from nnlint.core.config import Settings
    from nnlint.core.registry import load_registry
    from nnlint.pipeline import CallerObjects, run_model_phases

    rules = [r() for r in load_registry().rules if r.code.startswith("NN3")]
    timings: dict = {}
    run_model_phases(Settings(), rules, timings, CallerObjects(MLP(), features(), F.cross_entropy))
    assert {"dynamic", "dynamic.init-loss", "dynamic.cannot-overfit"} <= set(timings)
    assert nnlint.check(MLP, batch=features(), select=["NN3"]) is not None


def test_import_nnlint_stays_torch_free():
    import subprocess
    import sys

    code = "import sys, nnlint; assert callable(nnlint.check); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def _context(model):
    from nnlint.setup.specs import Setup

    setup = Setup(model, args=(torch.randn(4, 1, 28, 28),))
    return nnlint.dynamic.context.DynamicContext(setup, path="m.py", line=1)


def test_a_used_copy_is_reused_with_the_users_weights_restored():
    torch.manual_seed(0)
    model = LeNet()
    ctx = _context(model)
    first = ctx.fresh()
    with torch.no_grad():
        for p in first.parameters():
            p.add_(1.0)
    first.fc1.weight.requires_grad_(False)
    ctx.begin(None)  # the next check starts: the first one's copy comes back
    second = ctx.fresh(train=False)
    assert second is first
    assert not second.training
    for mine, theirs in zip(second.parameters(), model.parameters(), strict=True):
        assert torch.equal(mine, theirs)
        assert mine.requires_grad == theirs.requires_grad and mine.grad is None


def test_a_check_comparing_two_copies_hands_both_back_for_the_next():
    torch.manual_seed(0)
    ctx = _context(LeNet())
    pair = {id(ctx.fresh()), id(ctx.fresh())}
    ctx.begin(None)
    assert {id(ctx.fresh()), id(ctx.fresh())} == pair  # no third deep copy
    ctx.begin(None)
    big = nnlint.dynamic.copies.Copies(torch.nn.Linear(4096, 4096 + 1024))  # 84 MiB
    kept = [big.get(), big.get()]
    big.take_back()
    assert big.get() in kept and big.get() not in kept  # one spare only


def test_preserving_the_global_rngs_does_not_import_numpy_random():
    code = (
        "import sys, numpy\n"
        "if 'numpy.random' in sys.modules:\n"
        "    sys.exit(0)  # NumPy 1 imports it with numpy\n"
        "from nnlint.setup.preserve import global_rngs\n"
        "with global_rngs():\n"
        "    pass\n"
        "assert 'numpy.random' not in sys.modules\n"
    )
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr


def test_a_copy_left_with_a_hook_or_another_dtype_is_not_reused():
    torch.manual_seed(0)
    model = LeNet()
    ctx = _context(model)
    hooked = ctx.fresh()
    hooked.fc1.register_forward_hook(lambda *a: None)
    ctx.begin(None)
    doubled = ctx.fresh().double()
    assert doubled is not hooked
    ctx.begin(None)
    third = ctx.fresh()
    assert third is not hooked and third is not doubled
    assert all(p.dtype == torch.float32 for p in third.parameters())


def test_optimizer_copies_use_the_fused_kernel_only_where_the_user_left_the_choice():
    from nnlint.setup.specs import OptimizerSpec, default_optimizer

    model = MLP()
    copy = MLP()
    cases = [
        (torch.optim.Adam(model.parameters(), lr=1e-3), True),
        (torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), True),
        (torch.optim.AdamW(model.parameters(), foreach=True), None),
        (torch.optim.Adam(model.parameters(), fused=False), False),
        (torch.optim.RMSprop(model.parameters()), None),
    ]
    for optimizer, fused in cases:
        built = OptimizerSpec.from_optimizer(optimizer, model).build(copy)
        assert type(built) is type(optimizer)
        assert built.param_groups[0].get("fused") == fused, type(optimizer).__name__
        assert built.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    assert default_optimizer(model).build(copy).param_groups[0]["fused"] is True


# -- the long check alongside the others ------------------------------------------


def planted_mlp():
    torch.manual_seed(0)
    model = MLP()
    torch.nn.init.normal_(model.head.weight, std=5.0)
    return model


def test_findings_are_the_same_with_and_without_the_long_check_alongside(monkeypatch):
    from test_dynamic_models import SigmoidMLP

    monkeypatch.setattr(nnlint.dynamic.alongside, "ALONGSIDE_MIN_SECONDS", 0.0)
    for build in (planted_mlp, SigmoidMLP):
        torch.manual_seed(0)
        model = build()
        alongside = nnlint.check(model, batch=features(), loss_fn=F.cross_entropy, select=["NN3"])
        with monkeypatch.context() as m:
            m.setattr(nnlint.dynamic.alongside, "ALONGSIDE_MAX_BYTES", -1)
            one_by_one = nnlint.check(
                model, batch=features(), loss_fn=F.cross_entropy, select=["NN3"]
            )
        assert alongside and alongside == one_by_one


class OptimizedModule(MLP):
    """Named like the wrapper `torch.compile` returns; compiling for real takes seconds."""


def overlaps(model, **settings):
    from nnlint.dynamic.alongside import alongside_view
    from nnlint.dynamic.context import DynamicContext
    from nnlint.setup.specs import LossSpec, Setup

    x, y = features()
    setup = Setup(model, (x,), {}, LossSpec("cross_entropy", target=y))
    return alongside_view(DynamicContext(setup, path="m.py", line=1, **settings)) is not None


def test_the_long_check_runs_alongside_only_where_nothing_can_change(monkeypatch):
    torch.manual_seed(0)
    assert not overlaps(MLP())  # its ops are too short: two threads would hand the GIL around
    monkeypatch.setattr(nnlint.dynamic.alongside, "ALONGSIDE_MIN_SECONDS", 0.0)
    assert overlaps(MLP())
    assert not overlaps(NoisyInput())  # its forward draws from the RNG the other checks seed
    assert not overlaps(MLP(), device="cuda")
    assert not overlaps(OptimizedModule())  # what torch.compile returns
    big = MLP()
    big.extra = torch.nn.Linear(4096, 4096 + 1024)  # 84 MiB of parameters
    assert not overlaps(big)


def test_a_check_alongside_past_its_budget_is_an_nn007_and_the_others_still_report(monkeypatch):
    monkeypatch.setattr(nnlint.dynamic.context, "CHECK_BUDGET", 0.0)
    monkeypatch.setattr(nnlint.dynamic.alongside, "ALONGSIDE_MIN_SECONDS", 0.0)
    found = nnlint.check(
        planted_mlp(), batch=features(), loss_fn=F.cross_entropy, select=["NN309", "NN301", "NN007"]
    )
    by_code = {f.code: f.message for f in found}
    assert by_code["NN007"] == "NN309 (cannot-overfit) skipped: ran past its 0 s budget"
    assert (
        "loss at init" in by_code["NN301"]
    )  # from the shared pass, computed before the budget ran


def test_a_check_alongside_cannot_reseed_the_rng_the_others_share():
    import threading

    from nnlint.dynamic.context import enter_worker, reseed

    errors = []

    def worker():
        enter_worker()
        try:
            reseed()
        except RuntimeError as exc:
            errors.append(str(exc))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert errors and "cannot reseed" in errors[0]
    reseed()  # the main thread still can


def _dropout_ctx():
    from nnlint.dynamic.context import DynamicContext
    from nnlint.setup.specs import LossSpec, Setup

    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
    setup = Setup(model, (x,), {}, LossSpec("cross_entropy", target=y))
    ctx = DynamicContext(setup, path="m.py", line=1)
    ctx.begin(None)
    return ctx


def test_the_trained_copy_takes_only_the_steps_asked_for():
    ctx = _dropout_ctx()
    assert ctx.trained(until=lambda t: True).steps == 1
    assert ctx.trained(until=lambda t: t.steps >= 3).steps == 3
    assert ctx.trained().steps == 5


def test_the_trained_copy_does_not_depend_on_where_it_was_stopped():
    straight, stopped = _dropout_ctx(), _dropout_ctx()
    whole = straight.trained().model
    stopped.trained(until=lambda t: True)
    torch.rand(100)  # a check drawing random numbers in between
    resumed = stopped.trained().model
    for a, b in zip(whole.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)

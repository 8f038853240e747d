"""`nnlint.check` leaves its caller's process as it found it: timers, RNG, working directory."""

from __future__ import annotations

import os
import signal

import pytest

torch = pytest.importorskip("torch")

import nnlint  # noqa: E402


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(x)


class Wanders(Net):
    def forward(self, x):
        os.chdir("/")
        return super().forward(x)


def batch():
    generator = torch.Generator().manual_seed(3)
    return torch.randn(16, 8, generator=generator), torch.randint(0, 3, (16,), generator=generator)


def test_a_pending_timer_of_the_caller_survives():
    previous = signal.signal(signal.SIGALRM, lambda *_: None)
    signal.setitimer(signal.ITIMER_REAL, 600.0)
    try:
        nnlint.check(Net(), batch=batch(), select=["NN301", "NN309"])
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 0 < left <= 600.0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_a_factory_does_not_advance_the_global_rng_and_gives_the_same_text_twice():
    torch.manual_seed(11)
    state = torch.get_rng_state()
    first = nnlint.check(Net, batch=batch(), select=["NN3"])
    assert torch.equal(torch.get_rng_state(), state)
    second = nnlint.check(Net, batch=batch(), select=["NN3"])
    assert [f.message for f in first] == [f.message for f in second]


def test_model_code_that_changes_directory_does_not_move_nnlint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    nnlint.check(Wanders(), batch=batch(), select=["NN301"])
    assert os.getcwd() == str(tmp_path)

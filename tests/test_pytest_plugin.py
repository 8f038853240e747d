"""The pytest plugin, run by real pytest in a subprocess: fixture, marker, failure text."""

from __future__ import annotations

import textwrap

import pytest

pytest.importorskip("torch")
pytest_plugins = ["pytester"]

MODELS = """
import pytest
import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(8, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(16, 8, generator=g), torch.randint(0, 4, (16,), generator=g)
"""


def test_fixture_and_marker_pass_a_healthy_model_and_fail_a_bad_one_with_findings_only(pytester):
    pytester.makepyfile(
        test_models=MODELS
        + textwrap.dedent(
            """
            @pytest.mark.nnlint(select=["NN3"], loss_fn=F.cross_entropy)
            def test_healthy(nnlint):
                torch.manual_seed(0)
                nnlint.assert_clean(MLP(), batch=batch())


            @pytest.mark.nnlint(select=["NN3"], loss_fn=F.cross_entropy)
            def test_bad_init(nnlint):
                torch.manual_seed(0)
                model = MLP()
                torch.nn.init.normal_(model.head.weight, std=5.0)
                nnlint.assert_clean(model, batch=batch())


            def test_check_returns_findings(nnlint):
                torch.manual_seed(0)
                model = MLP()
                torch.nn.init.normal_(model.head.weight, std=5.0)
                found = nnlint.check(model, batch=batch(), loss_fn=F.cross_entropy, select=["NN301"])
                assert [f.code for f in found] == ["NN301"]
            """
        )
    )
    result = pytester.runpytest_subprocess("-p", "nnlint", "--tb=long")
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    assert "NN301 loss at init" in out
    # the failure shows the test's own line and the findings, not nnlint's frames or tensors
    assert "nnlint/api.py" not in out and "nnlint/testing.py" not in out
    assert "tensor(" not in out


def test_marker_is_registered_and_takes_keywords_only(pytester):
    pytester.makepyfile(
        test_marker=MODELS
        + textwrap.dedent(
            """
            @pytest.mark.nnlint("NN3")
            def test_positional(nnlint):
                pass
            """
        )
    )
    result = pytester.runpytest_subprocess("-p", "nnlint", "--strict-markers")
    result.assert_outcomes(errors=1)
    assert "takes keywords only" in result.stdout.str()
    markers = pytester.runpytest_subprocess("-p", "nnlint", "--markers").stdout.str()
    assert "@pytest.mark.nnlint(**options)" in markers

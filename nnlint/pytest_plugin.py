"""nnlint's pytest plugin: an `nnlint` fixture and an `nnlint` marker.

Installed with nnlint through the `pytest11` entry point; `-p no:nnlint`
turns it off. Loading it imports neither torch nor the model phases, so it
costs nothing in test sessions that never use it.

    @pytest.mark.nnlint(select=["NN3"], input_shape=[1, 28, 28])
    def test_net_is_healthy(nnlint):
        nnlint.assert_clean(Net, batch=(x, y), loss_fn=F.cross_entropy)

The marker's keywords are the defaults of every call in that test; a call's
own keywords win.
"""

from __future__ import annotations

from typing import Any

import pytest

from nnlint.testing import assert_clean


class Checker:
    """What the `nnlint` fixture hands a test: `check` and `assert_clean` with the marker's options."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options

    def check(self, model_or_factory: Any, batch: Any = None, **options: Any) -> list:
        """The findings of `nnlint.api.check` (info findings included)."""
        from nnlint.api import check

        return check(model_or_factory, batch=batch, **{**self.options, **options})

    def assert_clean(self, model_or_factory: Any, batch: Any = None, **options: Any) -> None:
        """Fail the test with the warnings and errors as text, and nothing else."""
        __tracebackhide__ = True
        assert_clean(model_or_factory, batch=batch, **{**self.options, **options})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "nnlint(**options): options for the nnlint fixture's check and assert_clean "
        "(select, ignore, loss_fn, optimizer, and nnlint.check's settings)",
    )


@pytest.fixture
def nnlint(request: pytest.FixtureRequest) -> Checker:
    """Lint a model from a test: `nnlint.assert_clean(Net, batch=(x, y))`."""
    options: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers("nnlint"))):
        if marker.args:
            raise pytest.UsageError("@pytest.mark.nnlint takes keywords only, e.g. select=['NN3']")
        options.update(marker.kwargs)
    return Checker(options)

"""nnlint: a linter for PyTorch models and their training scripts.

The plugin API: `from nnlint import ScriptRule, GraphRule, DynamicRule, Option,
Finding, Severity`. Names resolve on first use, so `import nnlint` stays
torch-free (`nnlint.check` imports torch). In IPython, `%load_ext nnlint` gives
the `%nnlint` and `%%nnlint` magics (`nnlint.integrations.ipython`).
"""

__version__ = "0.1.0"

_LAZY = {
    "check": "nnlint.api",
    "ScriptRule": "nnlint.core.rule",
    "GraphRule": "nnlint.core.rule",
    "DynamicRule": "nnlint.core.rule",
    "Option": "nnlint.core.rule",
    "Finding": "nnlint.core.finding",
    "Severity": "nnlint.core.finding",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nnlint' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def load_ipython_extension(ipython) -> None:
    """`%load_ext nnlint`: register the `%nnlint` and `%%nnlint` magics."""
    import importlib

    importlib.import_module("nnlint.integrations.ipython").register(ipython)

"""nnlint: a linter for PyTorch models and their training scripts."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `nnlint.check` imports torch; resolve it on first use so `import nnlint` stays torch-free.
    if name == "check":
        from nnlint.api import check

        return check
    raise AttributeError(f"module 'nnlint' has no attribute {name!r}")

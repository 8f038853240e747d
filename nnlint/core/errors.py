"""Errors that stop nnlint before it can lint: one line on stderr, exit 2."""


class UsageError(Exception):
    """Bad flag, config, path or `--model`: nnlint cannot start."""

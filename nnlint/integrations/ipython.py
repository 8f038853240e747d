"""The IPython magics, registered by `%load_ext nnlint`.

`%nnlint model batch=xb loss_fn=crit` runs `nnlint.check` on objects of the
kernel: the first expression is the model (or a factory), each `name=expr`
a keyword of `check` (`batch`, `loss_fn`, `optimizer`, `select`, `ignore` or a
setting), all evaluated in the user's namespace. `%%nnlint` lints the cell's
code with the script rules, without running it and without importing torch;
its findings' lines are the cell's own. Both return the findings, which the
notebook shows as a table (`Findings._repr_html_`).
"""

from __future__ import annotations

import io
import tokenize
from collections.abc import Iterator
from pathlib import Path
from typing import Any

try:
    from IPython.core.error import UsageError
    from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
except ImportError:
    raise ImportError("nnlint.integrations.ipython needs IPython: pip install ipython") from None

from nnlint.api import Findings
from nnlint.core.config import Settings
from nnlint.core.errors import UsageError as NNLintUsageError
from nnlint.core.notebook import cell_as_python
from nnlint.engine import run

_CELL = "<cell>"


def split_arguments(line: str) -> tuple[str, dict[str, str]]:
    """`model batch=xb loss_fn=crit` -> ("model", {"batch": "xb", "loss_fn": "crit"}).

    A keyword starts at a `name=` after whitespace outside brackets, so
    `batch=make(8, seed=1)` stays one expression.
    """
    text = line.strip()
    starts: list[int] = []
    depth, previous_end = 0, 0
    tokens = list(_tokens(text))
    for i, token in enumerate(tokens):
        if token.string in "([{" and token.type == tokenize.OP:
            depth += 1
        elif token.string in ")]}" and token.type == tokenize.OP:
            depth -= 1
        elif (
            depth == 0
            and token.type == tokenize.NAME
            and token.start[1] > previous_end
            and i + 1 < len(tokens)
            and tokens[i + 1].string == "="
        ):
            starts.append(token.start[1])
        previous_end = token.end[1]
    pieces = [text[a:b] for a, b in zip([0, *starts], [*starts, len(text)], strict=True)]
    keywords: dict[str, str] = {}
    for part in pieces[1:]:
        name, _, expr = part.partition("=")
        keywords[name.strip()] = expr.strip()
    return pieces[0].strip(), keywords


def _tokens(text: str) -> Iterator[tokenize.TokenInfo]:
    """The tokens of one line; an unfinished one (an open bracket) ends the list."""
    try:
        yield from tokenize.generate_tokens(io.StringIO(text).readline)
    except (tokenize.TokenError, SyntaxError):
        return


@magics_class
class NNLintMagics(Magics):
    """`%nnlint` checks a model of the kernel; `%%nnlint` lints a cell's code."""

    def _evaluate(self, expr: str, what: str) -> Any:
        try:
            return eval(expr, self.shell.user_ns)  # the user's own expression, in their kernel
        except Exception as exc:
            raise UsageError(
                f"%nnlint: {what} `{expr}` raised {type(exc).__name__}: {exc}"
            ) from None

    @line_magic
    def nnlint(self, line: str) -> Findings:
        """`%nnlint model batch=xb loss_fn=crit`: graph and dynamic checks of `model`."""
        from nnlint.api import check

        target, keywords = split_arguments(line)
        if not target or "=" in target.split("(")[0]:
            raise UsageError("%nnlint: usage: %nnlint MODEL [batch=EXPR] [loss_fn=EXPR] [...]")
        model = self._evaluate(target, "the model")
        given = {name: self._evaluate(expr, name) for name, expr in keywords.items()}
        try:
            return check(model, **given)
        except (TypeError, NNLintUsageError) as exc:
            raise UsageError(f"%nnlint: {exc}") from None

    @cell_magic("nnlint")
    def nnlint_cell(self, line: str, cell: str) -> Findings:
        """`%%nnlint [select=[...]] [ignore=[...]]`: the script rules on the cell's code."""
        _, keywords = split_arguments(f"_ {line}")
        given = {name: self._evaluate(expr, name) for name, expr in keywords.items()}
        unknown = sorted(set(given) - {"select", "ignore"})
        if unknown:
            raise UsageError(f"%%nnlint: unknown options: {', '.join(unknown)} (select, ignore)")
        root = Path.cwd()
        settings = Settings(
            paths=[_CELL],
            sources={(root / _CELL).resolve(): cell_as_python(cell)},
            static_only=True,
            select=list(given["select"]) if given.get("select") is not None else None,
            ignore=list(given.get("ignore") or ()),
            root=root,
        )
        try:
            return Findings(run(settings).findings)
        except NNLintUsageError as exc:
            raise UsageError(f"%%nnlint: {exc}") from None


def register(ipython: Any) -> None:
    ipython.register_magics(NNLintMagics)

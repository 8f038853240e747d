"""The rule model: one base class, three kinds, one `check(ctx)` signature.

A rule module under `rules/` defines one subclass of `ScriptRule`, `GraphRule`
or `DynamicRule`. The registry finds it by walking the package; nothing else
needs to change to add a rule.

Examples live on the rule as `valid` and `invalid` tuples of source strings:

* script rules: each example is a whole training script;
* graph and dynamic rules: each example is source that defines `model` and may
  define `batch`, `loss_fn` and `optimizer` (the same names `nnlint.check` takes).

An invalid example must produce at least one finding of the rule, a valid one
none; `tests/test_rule_examples.py` runs every example of every rule.

A rule whose findings carry a fix (`autofix=` to `ctx.report`, built with
`nnlint.script.edits`) shows it in `fixes`: (before, after) pairs, where
`after` is exactly what applying its fixes (the unsafe ones too) to `before`
leaves, and no longer triggers the rule.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from nnlint.core.finding import Finding, Phase, Severity
from nnlint.core.fix import Fix

RULES_URL = "https://github.com/nnlint/nnlint/blob/main/docs/rules.md"


@dataclass(frozen=True)
class Option:
    """A per-rule setting, configurable under `[tool.nnlint.rules.<name>]`."""

    default: Any
    help: str

    def coerce(self, value: Any) -> Any:
        expected = type(self.default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ValueError(f"expected {expected.__name__}, got {value!r}")
        return value


class Rule:
    """Base of every rule. Subclasses set the class attributes and `check`."""

    code: ClassVar[str]
    name: ClassVar[str]
    message: ClassVar[str]
    severity: ClassVar[Severity] = Severity.WARNING
    default_enabled: ClassVar[bool] = True
    kind: ClassVar[Phase]
    options: ClassVar[dict[str, Option]] = {}
    valid: ClassVar[tuple[str, ...]] = ()
    invalid: ClassVar[tuple[str, ...]] = ()
    fixes: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        merged = {key: opt.default for key, opt in self.options.items()}
        merged.update(settings or {})
        self.settings = merged

    def check(self, ctx: Any) -> Iterator[Finding]:
        raise NotImplementedError  # abstract

    @classmethod
    def make(
        cls,
        path: str,
        line: int,
        column: int = 1,
        *,
        end_line: int | None = None,
        end_column: int | None = None,
        note: str | None = None,
        severity: Severity | None = None,
        autofix: Fix | None = None,
        **fields: Any,
    ) -> Finding:
        """Build this rule's finding, filling the message template with `fields`."""
        return Finding(
            path=path,
            line=line,
            column=column,
            code=cls.code,
            name=cls.name,
            message=cls.message.format(**fields),
            severity=cls.severity if severity is None else severity,
            phase=cls.kind,
            end_line=end_line,
            end_column=end_column,
            note=note,
            fix=autofix,
        )

    @classmethod
    def docs(cls) -> str:
        return inspect.cleandoc(cls.__doc__ or "")

    @classmethod
    def summary(cls) -> str:
        """The first line of the docstring: what the rule flags."""
        return cls.docs().splitlines()[0] if cls.docs() else cls.name

    @classmethod
    def url(cls) -> str:
        """The rule's section in docs/rules.md (GitHub's anchor of `## CODE name`)."""
        return f"{RULES_URL}#{cls.code.lower()}-{cls.name.lower()}"


class EngineRule(Rule):
    """A diagnostic of nnlint itself (NN0xx): it never runs a check."""

    kind = Phase.ENGINE
    severity = Severity.INFO


class ScriptRule(Rule):
    """Reads one file with libcst; gets a `nnlint.script.context.ScriptContext`.

    `needs` and `needs_all` are quick text filters that keep whole-tree runs
    fast: the rule is skipped for files containing none of the `needs` strings
    or not every one of the `needs_all` strings. A file no rule needs is only
    checked for syntax errors by CPython: libcst never builds its tree.
    """

    kind = Phase.SCRIPT
    needs: ClassVar[tuple[str, ...]] = ("torch",)
    needs_all: ClassVar[tuple[str, ...]] = ()

    def report(self, ctx: Any, node: Any, **fields: Any) -> Finding:
        """Deprecated since 0.2: call `ctx.report(self, node, ...)`, as in every phase."""
        warnings.warn(
            "ScriptRule.report(ctx, node) is deprecated; use ctx.report(self, node)",
            DeprecationWarning,
            stacklevel=2,
        )
        return ctx.report(self, node, **fields)


class GraphRule(Rule):
    """Reads the captured model graph; gets a graph context."""

    kind = Phase.GRAPH


class DynamicRule(Rule):
    """Runs the model; gets a dynamic context with model, batch, loss and optimizer.

    `alongside = True` marks a long check (training a copy for hundreds of
    steps) that may run in a worker thread while the others run, on small CPU
    models whose forward draws nothing from the global RNG
    (`nnlint.dynamic.alongside`). Such a check must not reseed or draw from the
    global RNG itself; `nnlint.dynamic.context.reseed` raises there.
    `needs_finite = False` marks a check whose verdict NaN or Inf in the
    forward does not invalidate; the others are skipped then (one bug, one finding).
    `explains_failure = True` marks a check that judges the batch or the loss's
    inputs without the shared passes (`ctx.passes()`), so it also runs when the
    shared forward and loss raise: its findings (class labels beyond the output,
    logits into a loss that needs probabilities) then come before the one NN007
    that reports the error and the checks it kept from running.
    """

    kind = Phase.DYNAMIC
    alongside: ClassVar[bool] = False
    needs_finite: ClassVar[bool] = True
    explains_failure: ClassVar[bool] = False

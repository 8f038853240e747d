"""Rule discovery and selection.

Rules are found by walking the `nnlint.rules` package and the entry-point
group `nnlint.rules` (third-party plugins); nobody keeps a list by hand.
Selectors are code prefixes (`NN2`, `NN201`, or a plugin's own `XX0`), rule
names (`missing-zero-grad`) or `ALL`, as in ruff.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterable
from functools import cache
from importlib.metadata import entry_points

from nnlint.core.diagnostics import ENGINE_RULES
from nnlint.core.errors import UsageError
from nnlint.core.rule import DynamicRule, EngineRule, GraphRule, Rule, ScriptRule

ENTRY_POINT_GROUP = "nnlint.rules"
_BASES = (Rule, EngineRule, ScriptRule, GraphRule, DynamicRule)


def _rule_classes(module: object) -> list[type[Rule]]:
    return [
        obj
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, Rule)
        and obj not in _BASES
        and obj.__module__ == getattr(module, "__name__", None)
        and not inspect.isabstract(obj)
    ]


def _plugin_rules() -> list[type[Rule]]:
    found: list[type[Rule]] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:
            raise UsageError(f"plugin {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
        if inspect.isclass(obj) and issubclass(obj, Rule):
            found.append(obj)
        elif inspect.ismodule(obj):
            found.extend(_rule_classes(obj))
        else:
            raise UsageError(
                f"plugin {ep.name!r} ({ep.value}) is neither a Rule class nor a module"
            )
    return found


class Registry:
    """All known rules, by code and by name."""

    def __init__(self, rules: Iterable[type[Rule]]) -> None:
        self.by_code: dict[str, type[Rule]] = {}
        self.by_name: dict[str, type[Rule]] = {}
        for rule in rules:
            for key, table in ((rule.code, self.by_code), (rule.name, self.by_name)):
                other = table.get(key)
                if other is not None and other is not rule:
                    raise UsageError(
                        f"rule {key!r} is defined twice: {other.__module__}.{other.__name__} "
                        f"and {rule.__module__}.{rule.__name__}"
                    )
                table[key] = rule
        self.rules = sorted(self.by_code.values(), key=lambda r: r.code)
        self.families = {r.code.rstrip("0123456789") for r in self.rules}

    def lookup(self, code_or_name: str) -> type[Rule] | None:
        return self.by_code.get(code_or_name.upper()) or self.by_name.get(code_or_name.lower())

    def matching(self, selector: str) -> list[type[Rule]]:
        """Rules a selector names; a UsageError when it names none."""
        sel = selector.strip()
        if sel.upper() == "ALL":
            return list(self.rules)
        rule = self.by_name.get(sel.lower())
        if rule is not None:
            return [rule]
        # A prefix must name a whole code family: `NN2`, or a plugin's own `XX0`, never `N`.
        family = sel.upper().rstrip("0123456789")
        found = [r for r in self.rules if r.code.startswith(sel.upper())]
        if not found or not family or family not in self.families:
            raise UsageError(f"unknown rule selector {selector!r} (see nnlint --list-rules)")
        return found

    def is_known_token(self, token: str) -> bool:
        try:
            self.matching(token)
        except UsageError:
            return False
        return True

    def select(
        self,
        select: Iterable[str] | None = None,
        ignore: Iterable[str] = (),
        extend_select: Iterable[str] = (),
    ) -> list[type[Rule]]:
        """The enabled rules: the default set (or `select`), plus `extend_select`, minus `ignore`.

        Engine diagnostics stay on unless ignored, so a syntax error is never hidden
        by `--select NN2`.
        """
        if select is None:
            chosen = {r for r in self.rules if r.default_enabled}
        else:
            chosen = {r for sel in select for r in self.matching(sel)}
            chosen |= {r for r in ENGINE_RULES if r.default_enabled}
        chosen |= {r for sel in extend_select for r in self.matching(sel)}
        chosen -= {r for sel in ignore for r in self.matching(sel)}
        return sorted(chosen, key=lambda r: r.code)


@cache
def load_registry() -> Registry:
    """Import every rule module once and build the registry."""
    package = importlib.import_module("nnlint.rules")
    rules: list[type[Rule]] = list(ENGINE_RULES)
    for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        rules.extend(_rule_classes(importlib.import_module(info.name)))
    rules.extend(_plugin_rules())
    return Registry(rules)

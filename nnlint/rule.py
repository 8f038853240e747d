"""`nnlint.rule`, kept for plugins written before the rule model moved to `nnlint.core.rule`."""

from nnlint.core.rule import DynamicRule, EngineRule, GraphRule, Option, Rule, ScriptRule

__all__ = ["DynamicRule", "EngineRule", "GraphRule", "Option", "Rule", "ScriptRule"]

"""Every example of every rule: invalid ones must fire, valid ones must stay silent."""

from __future__ import annotations

import textwrap

import pytest

from nnlint.core.finding import Phase
from nnlint.core.registry import load_registry
from nnlint.testing import fix_example, run_example

RULES = [r for r in load_registry().rules if r.kind is not Phase.ENGINE]
CASES = [
    pytest.param(rule, source, valid, id=f"{rule.code}-{'valid' if valid else 'invalid'}-{i}")
    for rule in RULES
    for valid, examples in ((False, rule.invalid), (True, rule.valid))
    for i, source in enumerate(examples)
]


@pytest.mark.parametrize(("rule", "source", "valid"), CASES)
def test_example(rule, source, valid):
    findings = run_example(rule, source)
    internal = [f for f in findings if f.code == "NN001"]
    assert not internal, internal
    if valid:
        assert findings == [], f"{rule.code} fired on a valid example: {findings}"
    else:
        assert findings, f"{rule.code} did not fire on its invalid example"


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.code)
def test_every_rule_has_examples(rule):
    assert rule.invalid, f"{rule.code} has no invalid example"
    assert rule.valid, f"{rule.code} has no valid example"


FIXES = [
    pytest.param(rule, before, after, id=f"{rule.code}-fix-{i}")
    for rule in RULES
    for i, (before, after) in enumerate(rule.fixes)
]


@pytest.mark.parametrize(("rule", "before", "after"), FIXES)
def test_fix_example(rule, before, after):
    fixed = fix_example(rule, before)
    assert fixed == textwrap.dedent(after)
    compile(fixed, "example.py", "exec")
    assert run_example(rule, fixed) == [], f"{rule.code} still fires after its fix"

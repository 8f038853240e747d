"""The registry: discovery, uniqueness, docs, layout, plugins, the README table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import run_subprocess

from nnlint.core.errors import UsageError
from nnlint.core.finding import Phase
from nnlint.core.registry import Registry, load_registry
from nnlint.docs import TABLE_BEGIN, TABLE_END, rule_table, rules_page

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = load_registry()
SECTIONS = ("## What it does", "## Why is this bad?", "## Example", "## Use instead")
PREFIX = {Phase.ENGINE: "NN0", Phase.GRAPH: "NN1", Phase.SCRIPT: "NN2", Phase.DYNAMIC: "NN3"}


@pytest.mark.parametrize("rule", REGISTRY.rules, ids=lambda r: r.code)
def test_rule_metadata(rule):
    assert re.fullmatch(r"NN\d{3}", rule.code)
    assert rule.code.startswith(PREFIX[rule.kind]), f"{rule.code} is a {rule.kind} rule"
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", rule.name)
    docs = rule.docs()
    for section in SECTIONS:
        assert section in docs, f"{rule.code} docstring lacks {section!r}"
    assert not rule.summary().startswith("#")


@pytest.mark.parametrize(
    "rule", [r for r in REGISTRY.rules if r.kind is not Phase.ENGINE], ids=lambda r: r.code
)
def test_rule_lives_in_its_own_file_named_after_it(rule):
    module = rule.__module__
    assert module.startswith("nnlint.rules.")
    assert module.rsplit(".", 1)[1] == rule.name.replace("-", "_")


def test_codes_and_names_are_unique():
    codes = [r.code for r in REGISTRY.rules]
    names = [r.name for r in REGISTRY.rules]
    assert len(set(codes)) == len(codes) and len(set(names)) == len(names)
    assert len(REGISTRY.rules) > 8  # the engine codes plus real rules were discovered


def test_duplicate_codes_are_an_error():
    rule = REGISTRY.by_code["NN201"]
    clone = type("Clone", (rule,), {"__module__": "elsewhere"})
    with pytest.raises(UsageError, match="defined twice"):
        Registry([rule, clone])


def test_rules_folder_is_flat():
    nested = [p for p in (ROOT / "rules").iterdir() if p.is_dir() and p.name != "__pycache__"]
    assert nested == [], "rules/ must stay flat: a subpackage drops out of the wheel"


def test_registry_import_keeps_torch_out(tmp_path):
    code = (
        "import sys\n"
        "from nnlint.core.registry import load_registry\n"
        "load_registry()\n"
        "heavy = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not heavy, heavy[:5]\n"
    )
    proc = run_subprocess(cwd=tmp_path, code=code)
    assert proc.returncode == 0, proc.stderr


def test_selection_semantics():
    default = {r.code for r in REGISTRY.select()}
    assert "NN201" in default and "NN008" not in default
    assert {r.code for r in REGISTRY.select(["NN201"])} >= {"NN201", "NN002"}
    assert "NN201" not in {r.code for r in REGISTRY.select(ignore=["NN2"])}
    assert "NN008" in {r.code for r in REGISTRY.select(extend_select=["invalid-suppression"])}
    assert {r.code for r in REGISTRY.select(["ALL"])} == {r.code for r in REGISTRY.rules}


PLUGIN = '''
from nnlint import ScriptRule

class NoPrint(ScriptRule):
    """Flags print.

    ## What it does
    x
    ## Why is this bad?
    x
    ## Example
    x
    ## Use instead
    x
    """
    code = "{code}"
    name = "{name}"
    message = "print found; use logging"
    needs = ("print",)

    def check(self, ctx):
        for node in ctx.module.body:
            yield ctx.report(self, node)
'''


def install_plugin(folder, module: str, code: str, name: str) -> None:
    """A plugin module and the dist-info that declares its entry point, importable from `folder`."""
    (folder / f"{module}.py").write_text(PLUGIN.format(code=code, name=name))
    dist = folder / f"{module}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[nnlint.rules]\n{name} = {module}:NoPrint\n")


def test_third_party_plugin_through_entry_point(tmp_path):
    install_plugin(tmp_path, "myplugin", "NN299", "no-print")
    (tmp_path / "t.py").write_text("print(1)\n")
    code = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n"
        "from nnlint.cli import main\n"
        "sys.exit(main(['--select', 'no-print', 't.py']))\n"
    )
    proc = run_subprocess(cwd=tmp_path, code=code)
    assert proc.returncode == 1, proc.stderr
    assert "t.py:1:1: NN299 print found; use logging" in proc.stdout


def test_plugin_rules_may_use_their_own_code_prefix(tmp_path):
    install_plugin(tmp_path, "xxplugin", "XX001", "xx-no-print")
    (tmp_path / "t.py").write_text("print(1)\nprint(2)  # noqa: XX001\nprint(3)  # noqa: XX0\n")
    code = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n"
        "from nnlint.cli import main\n"
        "print('exit', main(['--select', 'XX', 't.py']))\n"
        "print('exit', main(['--select', 'XX0', '--ignore', 'XX001', 't.py']))\n"
        "print('exit', main(['--select', 'X', 't.py']))\n"
    )
    proc = run_subprocess(cwd=tmp_path, code=code)
    out = proc.stdout.splitlines()
    assert "t.py:1:1: XX001 print found; use logging" in out
    assert not any(line.startswith(("t.py:2:", "t.py:3:")) for line in out)
    assert [line for line in out if line.startswith("exit")] == ["exit 1", "exit 0", "exit 2"]
    assert "unknown rule selector 'X'" in proc.stderr


def test_readme_rule_table_is_current():
    readme = (ROOT / "README.md").read_text()
    start = readme.index(TABLE_BEGIN) + len(TABLE_BEGIN)
    end = readme.index(TABLE_END)
    assert readme[start:end].strip() == rule_table(REGISTRY).strip(), (
        "README rule table is stale: run `python -m nnlint.docs`"
    )


def test_rule_reference_page_is_current():
    page = (ROOT / "docs" / "rules.md").read_text()
    assert page == rules_page(REGISTRY), "docs/rules.md is stale: run `python -m nnlint.docs`"

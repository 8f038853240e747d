"""The cheap tree walk (`nnlint.script.cstwalk`) against libcst's own visitor protocol.

`nnlint/script/_cstfields.py` is generated from the installed libcst: with
`NNLINT_UPDATE=1` the first test rewrites it. Whatever libcst version is
installed, the walk must give the same children in the same order as libcst's
`node.children`, minus whitespace and punctuation, on real code.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import os
import textwrap
from pathlib import Path

import libcst as cst
import pytest

from nnlint.script import cstwalk
from nnlint.script._cstfields import FIELDS, LIBCST_VERSION

TABLE = Path(cstwalk.__file__).with_name("_cstfields.py")
# What the walk leaves out: layout and punctuation.
LAYOUT = (
    cst.BaseParenthesizableWhitespace,
    cst.EmptyLine,
    cst.TrailingWhitespace,
    cst.Newline,
    cst.Comment,
    cst.LeftParen,
    cst.RightParen,
    cst.Comma,
    cst.Semicolon,
    cst.AssignEqual,
    cst.Dot,
    cst.Colon,
    cst.LeftSquareBracket,
    cst.RightSquareBracket,
    cst.LeftCurlyBrace,
    cst.RightCurlyBrace,
    cst.Asynchronous,
    cst.ParamSlash,
)


def derive_fields() -> dict[str, tuple[str, ...]]:
    """For every node class libcst exports: the fields it visits, in visiting order."""
    table: dict[str, tuple[str, ...]] = {}
    for name, kind in sorted(vars(cst).items()):
        if not (isinstance(kind, type) and issubclass(kind, cst.CSTNode)):
            continue
        if inspect.isabstract(kind) or name.startswith("Base") or name == "CSTNode":
            continue
        source = textwrap.dedent(inspect.getsource(kind._visit_and_replace_children))
        order: list[str] = []
        for node in _in_source_order(ast.parse(source)):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id.startswith("visit_")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
            ):
                field = node.args[1].value
                if (
                    field not in order
                    and field not in cstwalk.SKIPPED
                    and not field.startswith("whitespace")
                ):
                    order.append(field)
        table[name] = tuple(order)
    return table


def _in_source_order(tree: ast.AST) -> list[ast.AST]:
    nodes = [n for n in ast.walk(tree) if hasattr(n, "lineno")]
    return sorted(nodes, key=lambda n: (n.lineno, n.col_offset))


def render(table: dict[str, tuple[str, ...]]) -> str:
    lines = [
        '"""Syntax fields of each libcst node class, in visiting order (generated).',
        "",
        "Written by tests/test_cstwalk.py from the installed libcst; rerun it with",
        "NNLINT_UPDATE=1 after upgrading libcst. Whitespace and punctuation fields are",
        "left out (see nnlint.script.cstwalk.SKIPPED).",
        '"""',
        "",
        f'LIBCST_VERSION = "{cst_version()}"',
        "",
        "FIELDS: dict[str, tuple[str, ...]] = {",
    ]
    for name, fields in table.items():
        inner = ", ".join(f'"{f}"' for f in fields)
        if len(fields) == 1:
            inner += ","
        lines.append(f'    "{name}": ({inner}),')
    lines.append("}")
    return "\n".join(lines) + "\n"


def cst_version() -> str:
    from importlib.metadata import version

    return version("libcst")


def test_field_table_is_generated_from_libcst():
    if os.environ.get("NNLINT_UPDATE"):
        TABLE.write_text(render(derive_fields()))
        pytest.skip("rewrote nnlint/script/_cstfields.py")
    if LIBCST_VERSION != cst_version():
        pytest.skip(f"table made from libcst {LIBCST_VERSION}, {cst_version()} installed")
    assert FIELDS == derive_fields()


def _corpus() -> list[Path]:
    here = Path(__file__).resolve().parent.parent
    files = sorted((here / "examples").rglob("*.py")) + sorted((here / "rules").glob("*.py"))
    spec = importlib.util.find_spec("torch")
    if spec is not None and spec.submodule_search_locations:
        root = Path(next(iter(spec.submodule_search_locations)))
        torch_files = sorted(root.rglob("*.py"))
        files += torch_files[:: max(1, len(torch_files) // 40)]
    return files


SYNTAX_ZOO = """
import a.b as c, d
from .e import (f as g, h)
from i import *
@dec(1)
async def fn(x, /, y: int = 2, *args, z, **kw) -> "T":
    global G
    async with p as (q, r), s:
        pass
    async for t in u:
        yield t
    v = [w async for w in aw if w]
    return lambda m, *n: {k: m for k in n} | {*n}
class K(Base, metaclass=M):
    attr: int = 3
    def method(self): return self.attr[1:2, ::3]
try:
    pass
except (E1, E2) as err:
    raise X from err
else:
    pass
finally:
    del a[0], b.c
match cmd:
    case [1, *rest] | {"k": _, **kw} if rest:
        pass
    case Point(x=0) as p:
        pass
while (n := n - 1) > 0:
    assert n, f"{n!r:>{width}}"
x = not a if b else -c ** d @ e
y = yield
print(*a, **b, sep="")
"""


@pytest.mark.parametrize("source", ["zoo", "corpus"])
def test_walk_matches_libcst_children(source):
    if source == "zoo":
        modules = [cst.parse_module(SYNTAX_ZOO)]
    else:
        modules = []
        for path in _corpus():
            try:
                modules.append(cst.parse_module(path.read_text(encoding="utf-8")))
            except (cst.ParserSyntaxError, UnicodeDecodeError):
                continue
    checked = 0
    for module in modules:
        tree = cstwalk.Tree(module)
        stack: list[cst.CSTNode] = [module]
        while stack:
            node = stack.pop()
            expected = [c for c in node.children if not isinstance(c, LAYOUT)]
            got = tree.kids(node)
            assert [type(c).__name__ for c in got] == [type(c).__name__ for c in expected], node
            assert all(a is b for a, b in zip(got, expected, strict=True))
            for kid in got:
                assert tree.parent(kid) is node
                assert tree.order(node) < tree.order(kid) <= tree.end(node)
            stack.extend(expected)
            checked += 1
    assert checked > 100

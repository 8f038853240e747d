"""Building fixes from libcst nodes: the edits script rules attach to their findings.

Every helper returns an `Edit` in the file's own coordinates (from libcst's
positions), or None when the code is not in a shape the edit can be sure of;
the rule then reports its finding without a fix.
"""

from __future__ import annotations

from pathlib import Path

import libcst as cst

from nnlint.core.fix import Edit, Fix

# Expressions that can take `.attr` or be an argument without parentheses.
_ATOMS = (cst.Name, cst.Attribute, cst.Call, cst.Subscript, cst.SimpleString, cst.Integer)
_INDENT = "    "


def fix(message: str, *edits: Edit | None, safe: bool) -> Fix | None:
    """A fix of `edits`, or None when one of them could not be built."""
    if not edits or any(e is None for e in edits):
        return None
    return Fix(tuple(edits), safe, message)


def span(ctx, node: cst.CSTNode) -> tuple[int, int, int, int]:
    """(line, column, end line, end column) of `node`, 1-based as findings."""
    pos = ctx.position(node)
    return pos.start.line, pos.start.column + 1, pos.end.line, pos.end.column + 1


def replace(ctx, node: cst.CSTNode, content: str) -> Edit:
    return Edit(*span(ctx, node), content)


def insert_after(ctx, node: cst.CSTNode, content: str) -> Edit:
    _, _, line, column = span(ctx, node)
    return Edit.insert(line, column, content)


def code(ctx, node: cst.CSTNode) -> str:
    return ctx.module.code_for_node(node).strip()


def operand(ctx, node: cst.CSTNode) -> str:
    """`node`'s code, parenthesised unless it is an atom (so `.item()` binds to all of it)."""
    text = code(ctx, node)
    return text if isinstance(node, _ATOMS) and not node.lpar else f"({text})"


def insert_line_before(ctx, statement: cst.CSTNode, content: str) -> Edit:
    """A new statement `content` on its own line just above `statement`, indented as it is."""
    line, column, _, _ = span(ctx, statement)
    return Edit.insert(line, column, content + "\n" + " " * (column - 1))


def _spans_lines_verbatim(node: cst.CSTNode) -> bool:
    """Whether re-indenting `node` would change a string's value (a multi-line literal)."""
    found = False

    class Finder(cst.CSTVisitor):
        def visit_SimpleString(self, string: cst.SimpleString) -> None:
            nonlocal found
            found = found or "\n" in string.value

        def visit_FormattedString(self, string: cst.FormattedString) -> None:
            nonlocal found
            found = found or "\n" in cst.Module([]).code_for_node(string)

    node.visit(Finder())
    return found


def wrap_in_with(ctx, statement: cst.BaseCompoundStatement, header: str) -> Edit | None:
    """`statement` moved into a new `with header:` block, one indent deeper."""
    if _spans_lines_verbatim(statement):
        return None
    line, column, end_line, end_column = span(ctx, statement)
    lines = ctx.source.splitlines(keepends=True)[line - 1 : end_line]
    indent = " " * (column - 1)
    if lines[0][: column - 1].strip() or "\t" in lines[0][:column]:
        return None  # not at the start of its line, or tab-indented
    body = [lines[0][column - 1 :]]
    body += [_INDENT + text if text.strip() else text for text in lines[1:]]
    text = "".join(body)
    cut = len(lines[-1]) - (end_column - 1)
    text = text[: len(text) - cut] if cut > 0 else text
    return Edit(line, column, end_line, end_column, f"with {header}:\n{indent}{_INDENT}{text}")


def imports_plainly(ctx, module: str) -> bool:
    """Whether the file has a top-level `import module` (so `module.x` can be written)."""
    for statement in ctx.module.body:
        if not isinstance(statement, cst.SimpleStatementLine):
            continue
        for small in statement.body:
            if isinstance(small, cst.Import) and any(
                isinstance(a.name, cst.Name) and a.name.value == module and a.asname is None
                for a in small.names
            ):
                return True
    return False


def activation_input(tracker, call: cst.BaseExpression, kinds: set[str]) -> cst.CSTNode | None:
    """What the activation `call` is applied to: `x` in `F.softmax(x, 1)`, `x.softmax(1)`,
    `torch.sigmoid(x)`; None when `call` is not one of the `kinds` (softmax, sigmoid)."""
    if not isinstance(call, cst.Call) or not isinstance(call.func, cst.Attribute | cst.Name):
        return None
    names = {q.rsplit(".", 1)[-1] for q in tracker.torch_names(call.func)}
    if names & kinds:
        first = [a for a in call.args if a.keyword is None and not a.star]
        given = first[0].value if first else None
        keyword = next(
            (a.value for a in call.args if a.keyword and a.keyword.value == "input"), None
        )
        return given or keyword
    if isinstance(call.func, cst.Attribute) and call.func.attr.value in kinds:
        if not tracker.torch_names(call.func.value):  # `x.softmax(1)`, not a module attribute
            return call.func.value
    return None


def activation_source(tracker, expr: cst.BaseExpression, kinds: set[str]) -> cst.Call | None:
    """The one activation call whose output `expr` reads: `expr` itself, or the value
    of the names it reads (`probs = F.softmax(...)`, then `loss(probs.view(-1), y)`)."""
    if activation_input(tracker, expr, kinds) is not None:
        return expr
    sources = set()
    for node in tracker.walk(expr):
        if not isinstance(node, cst.Name) or not isinstance(
            tracker.ctx.parent(node), cst.BaseExpression | cst.Arg
        ):
            continue
        assigned = tracker.assigned_values(node)
        if len(assigned) == 1 and activation_input(tracker, assigned[0], kinds) is not None:
            sources.add(assigned[0])
    return sources.pop() if len(sources) == 1 else None


def drop_activation(tracker, call: cst.Call, kinds: set[str]) -> Edit | None:
    """`F.softmax(logits, 1)` replaced by `logits`."""
    inner = activation_input(tracker, call, kinds)
    if inner is None:
        return None
    return replace(tracker.ctx, call, operand(tracker.ctx, inner))


def keyword_at_site(path: Path, line: int, classes: set[str], keyword: str) -> Edit | None:
    """`, keyword` added to the one call of a class in `classes` (by its last name,
    `nn.Conv2d`) that starts on `line` of `path`; None when there is not exactly one
    or the call already passes the keyword (a graph finding's construction line)."""
    try:
        module = cst.parse_module(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, cst.ParserSyntaxError):
        return None
    wrapper = cst.MetadataWrapper(module, unsafe_skip_copy=True)
    positions = wrapper.resolve(cst.metadata.PositionProvider)
    found: list[cst.Call] = []

    class Calls(cst.CSTVisitor):
        def visit_Call(self, call: cst.Call) -> None:
            func = call.func
            last = (
                func.attr.value if isinstance(func, cst.Attribute) else getattr(func, "value", None)
            )
            if last in classes and positions[call].start.line == line:
                found.append(call)

    module.visit(Calls())
    if len(found) != 1:
        return None
    call = found[0]
    name = keyword.split("=", 1)[0]
    if any(a.keyword is not None and a.keyword.value == name for a in call.args):
        return None
    if any(a.star for a in call.args):
        return None  # `**kwargs` may already carry it
    if not call.args:
        end = positions[call].end
        return Edit.insert(end.line, end.column, keyword)  # before the closing parenthesis
    end = positions[call.args[-1].value].end
    return Edit.insert(end.line, end.column + 1, f", {keyword}")

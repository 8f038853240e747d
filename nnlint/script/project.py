"""What a script's local imports define: the part of the project the script phase can see.

Training scripts import their helpers from modules beside them (`from utils.torch_utils
import smart_inference_mode`, `from fp16_util import zero_grad`). This resolves such a
name to its `def` in the module's file, which is read with `ast` (several times cheaper
than libcst) and cached per process, so a rule can follow a decorator, a context
manager or a helper one file away. Modules are looked up from the file's folder up to
the run root, as `python train.py` and `python -m` would find them. Nothing is imported
or executed, and a module that cannot be read is simply not seen.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

_MAX_BYTES = 1_000_000


@cache
def module_tree(path: Path) -> ast.Module | None:
    """The parsed module at `path`, or None when it cannot be read or parsed."""
    try:
        if path.stat().st_size > _MAX_BYTES:
            return None
        return ast.parse(path.read_bytes())
    except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def search_dirs(path: Path, root: Path) -> list[Path]:
    """The file's folder and its parents up to `root` (the folders a local import may start from)."""
    folders = [path.parent]
    try:
        path.parent.resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return folders
    current = path.parent
    while current.resolve() != root.resolve() and current.parent != current:
        current = current.parent
        folders.append(current)
    return folders


@cache
def module_file(dotted: str, path: Path, root: Path) -> Path | None:
    """The file of module `dotted` as imported from `path` (`.x` relative to it)."""
    if dotted.startswith("."):
        level = len(dotted) - len(dotted.lstrip("."))
        base = path.parent
        for _ in range(level - 1):
            base = base.parent
        bases, parts = [base], dotted.lstrip(".").split(".")
    else:
        bases, parts = search_dirs(path, root), dotted.split(".")
    for base in bases:
        stem = base.joinpath(*parts) if parts != [""] else base
        for candidate in (stem.with_suffix(".py"), stem / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def imported_function(qualified: str, path: Path, root: Path) -> ast.FunctionDef | None:
    """The top-level `def` that the qualified name `pkg.mod.fn` imported into `path` names."""
    module, _, name = qualified.rpartition(".")
    if not module or not name:
        return None
    found = module_file(module, path, root)
    tree = module_tree(found) if found is not None else None
    if tree is None:
        return None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    return None


def dotted(node: ast.AST) -> str:
    """`torch.no_grad` for an attribute chain, '' for anything else."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


@cache
def _python_files(folder: Path) -> tuple[Path, ...]:
    try:
        return tuple(sorted(folder.glob("*.py"))[:_MAX_FILES])
    except OSError:
        return ()


_MAX_FILES = 300


def calls_elsewhere(name: str, path: Path, root: Path) -> list[bool]:
    """Calls of `name(...)` imported from `path`, in the other files of its folders up to `root`.

    One entry per call: whether the code around it (its function, or the module's
    top level) switches a model to eval mode before the call, as a training loop
    that validates through a helper of another file does.
    """
    needle = f"{name}(".encode()
    found: list[bool] = []
    for folder in search_dirs(path, root):
        for other in _python_files(folder):
            if other == path:
                continue
            try:
                if needle not in other.read_bytes():
                    continue
            except OSError:
                continue
            tree = module_tree(other)
            if tree is not None:
                found.extend(_eval_before_calls(tree, name, _imported_as(tree, path.stem, name)))
    return found


def _imported_as(tree: ast.Module, stem: str, name: str) -> set[str]:
    """How `tree` calls `name` of module `stem`: `name` itself, or `alias.name`."""
    ways: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if (node.module or "").rpartition(".")[2] == stem:
                ways |= {a.asname or a.name for a in node.names if a.name == name}
            ways |= {f"{a.asname or a.name}.{name}" for a in node.names if a.name == stem}
        elif isinstance(node, ast.Import):
            ways |= {
                f"{a.asname or a.name}.{name}"
                for a in node.names
                if a.name.rpartition(".")[2] == stem
            }
    return ways


def _eval_before_calls(tree: ast.Module, name: str, ways: set[str]) -> list[bool]:
    if not ways:
        return []
    bodies: list[list[ast.AST]] = [
        [s for s in tree.body if not isinstance(s, ast.FunctionDef | ast.ClassDef)]
    ]
    bodies += [
        n.body for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
    ]
    found = []
    for body in bodies:
        nodes = [n for stmt in body for n in ast.walk(stmt)]
        evals = [n.lineno for n in nodes if _switches_to_eval(n)]
        for node in nodes:
            if isinstance(node, ast.Call) and dotted(node.func) in ways:
                found.append(any(line <= node.lineno for line in evals))
    return found


def _switches_to_eval(node: ast.AST) -> bool:
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
        return False
    if node.func.attr == "eval" and not node.args:
        return True
    return (
        node.func.attr == "train"
        and len(node.args) == 1
        and isinstance(node.args[0], ast.Constant)
        and node.args[0].value is False
    )


def clears_grads(fn: ast.FunctionDef) -> bool:
    """Whether a helper's body clears gradients: `.zero_grad()`, `p.grad = None`, `p.grad.zero_()`."""
    for node in ast.walk(fn):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr == "zero_grad":
                return True
            if node.func.attr in ("zero_", "detach_") and dotted(node.func.value).endswith("grad"):
                return True
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Attribute) and t.attr == "grad" for t in node.targets
        ):
            return True
    return False


def clips_grads(fn: ast.FunctionDef) -> bool:
    """Whether a helper's body clips gradients: torch's clip functions, or `p.grad` scaled in place."""
    for node in ast.walk(fn):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr.startswith(("clip_grad_norm", "clip_grad_value")):
                return True
            receiver = dotted(node.func.value)
            if node.func.attr in ("mul_", "clamp_", "div_") and ".grad" in f"{receiver}.":
                return True
    return False

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

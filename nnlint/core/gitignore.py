"""Which paths git ignores: the `.gitignore` files (and `.git/info/exclude`) of a tree.

Matching is pathspec's `GitIgnoreSpec`, which follows git's own rules
(anchoring, `**`, `dir/` patterns, negation, and git's quirk that a file
inside an ignored folder cannot be re-included). The files are read from the
repository's top (the nearest folder with `.git`, else the run root) down to
each folder, and the deepest one that has a say decides, as in git.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pathspec


class GitIgnore:
    """Answers `ignored(path)` for paths under one run root, reading each file once."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.top = next((p for p in (self.root, *self.root.parents) if (p / ".git").exists()), None)
        self._specs: dict[Path, pathspec.GitIgnoreSpec | None] = {}

    def _spec(self, folder: Path) -> pathspec.GitIgnoreSpec | None:
        if folder not in self._specs:
            lines: list[str] = []
            sources = [folder / ".gitignore"]
            if folder == self.top:
                sources.append(folder / ".git" / "info" / "exclude")
            for source in sources:
                try:
                    lines += source.read_text(encoding="utf-8", errors="replace").splitlines()
                except OSError:
                    continue
            self._specs[folder] = _compile(lines) if lines else None
        return self._specs[folder]

    def _folders(self, path: Path) -> list[Path]:
        """The folders whose ignore files apply to `path`, deepest first."""
        base = self.top or self.root
        if path != base and base not in path.parents:
            return []
        folders = []
        for folder in path.parents:
            folders.append(folder)
            if folder == base:
                break
        return folders

    def ignored(self, path: Path) -> bool:
        path = path.resolve()
        is_dir = path.is_dir()
        for folder in self._folders(path):
            spec = self._spec(folder)
            if spec is None:
                continue
            rel = path.relative_to(folder).as_posix() + ("/" if is_dir else "")
            verdict = spec.check_file(rel).include
            if verdict is not None:
                return verdict
        return False


def _compile(lines: list[str]) -> pathspec.GitIgnoreSpec:
    # Imported here: pathspec takes longer to import than a small file takes to
    # lint, and a tree without ignore files never needs it.
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines(lines)

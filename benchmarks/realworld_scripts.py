"""Precision and recall of the script rules on real training scripts.

The manifest (`realworld_scripts.json`) pins real training and evaluation
scripts of public repositories by (repository, commit, path, sha256), records a
verdict for every finding nnlint gave on them, and holds mutation recipes:
line-level edits, each checked against the exact text it expects, that plant
one bug of a rule's category into one of those scripts.

Nothing third-party is stored in this repository. The scripts are read from
bare git mirrors (the search tool's `fetch` puts them in /work/.mirror/owner+name)
into a cache folder (benchmarks/.cache/realworld, git-ignored) and checked
against their sha256 every run.

It prints, per rule: the findings on the clean scripts with their verdict
(true bug, or false alarm and why), and the recall on the mutants (a mutant
counts as found when the planted rule reports more findings on it than on the
clean script). nnlint runs through its command line only, once per repository
from the repository's own root (as its users run it), so this keeps working
whatever the package layout.

    python benchmarks/realworld_scripts.py                # materialise, lint, report
    python benchmarks/realworld_scripts.py --show-missed  # also list every missed mutant
    python benchmarks/realworld_scripts.py --rule NN206   # one rule's findings and mutants
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "realworld_scripts.json"
MUTANTS = HERE / "realworld_mutants.json"
CACHE = HERE / ".cache" / "realworld"
MIRRORS = Path(os.environ.get("NNLINT_MIRRORS", "/work/.mirror"))
MUTANT_TAG = "__nnmut_"


def git_dir(mirror: Path) -> Path | None:
    """The git directory of a fetched snapshot (bare, or a clone with a work tree)."""
    for candidate in (mirror / "repo" / ".git", mirror / "repo", mirror):
        if (candidate / "HEAD").is_file() and (candidate / "objects").is_dir():
            return candidate
    return None


def read_blob(gitdir: Path, commit: str, path: str) -> bytes | None:
    done = subprocess.run(
        ["git", "--git-dir", str(gitdir), "show", f"{commit}:{path}"],
        capture_output=True,
        check=False,
    )
    return done.stdout if done.returncode == 0 else None


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def folder(repo: str) -> str:
    return repo.replace("/", "+")


def materialise(manifest: dict, cache: Path) -> tuple[dict[tuple[str, str], Path], list[str]]:
    """Write every pinned file into `cache`; returns the scripts written and the problems."""
    problems: list[str] = []
    written: dict[tuple[str, str], Path] = {}
    by_repo: dict[str, list[dict]] = defaultdict(list)
    for entry in manifest["scripts"]:
        by_repo[entry["repository"]].append(entry)
    for repo, entries in sorted(by_repo.items()):
        info = manifest["repositories"][repo]
        gitdir = git_dir(MIRRORS / folder(repo))
        if gitdir is None:
            problems.append(
                f"missing mirror: {repo} (expected under {MIRRORS / folder(repo)}; "
                f"fetch github:{repo}); its {len(entries)} scripts are skipped"
            )
            continue
        root = cache / folder(repo)
        pinned = [(e, "script") for e in entries] + [
            ({**c, "repository": repo, "commit": info["commit"]}, "context")
            for c in info.get("context", ())
        ]
        for entry, kind in pinned:
            target = root / entry["path"]
            data = target.read_bytes() if target.is_file() else None
            if data is None or sha256(data) != entry["sha256"]:
                data = read_blob(gitdir, entry["commit"], entry["path"])
                if data is None:
                    problems.append(f"{repo}@{entry['commit'][:10]}: no {entry['path']} in mirror")
                    continue
                if sha256(data) != entry["sha256"]:
                    problems.append(f"{repo}: {entry['path']} sha256 mismatch")
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            if kind == "script":
                written[(repo, entry["path"])] = target
    return written, problems


def mutate(text: str, recipe: dict) -> str:
    """Apply a recipe's line edits (1-based, against the clean text); raises on a mismatch."""
    lines = text.split("\n")
    edits = sorted(recipe["edits"], key=lambda e: e["line"], reverse=True)
    for edit in edits:
        index = edit["line"] - 1
        if index >= len(lines) or lines[index].strip() != edit["expect"].strip():
            found = lines[index].strip() if index < len(lines) else "<end of file>"
            raise ValueError(f"line {edit['line']}: expected {edit['expect']!r}, found {found!r}")
        indent = lines[index][: len(lines[index]) - len(lines[index].lstrip())]
        new = [indent + line if line else line for line in edit.get("replace", [])]
        where = edit.get("where", "replace")
        if where == "replace":
            lines[index : index + 1] = new
        elif where == "before":
            lines[index:index] = new
        elif where == "after":
            lines[index + 1 : index + 1] = new
        else:
            raise ValueError(f"unknown edit position {where!r}")
    return "\n".join(lines)


def write_mutants(
    recipes: list[dict], scripts: dict[tuple[str, str], Path], problems: list[str]
) -> dict[str, Path]:
    """Each mutant beside its clean script (so the script's local imports still resolve)."""
    out: dict[str, Path] = {}
    for recipe in recipes:
        clean = scripts.get((recipe["repository"], recipe["path"]))
        if clean is None:
            problems.append(f"mutant {recipe['id']}: its script is not materialised")
            continue
        try:
            text = mutate(clean.read_text(encoding="utf-8"), recipe)
            compile(text, recipe["id"], "exec", dont_inherit=True)
        except (ValueError, SyntaxError) as exc:
            problems.append(f"mutant {recipe['id']}: recipe does not apply: {exc}")
            continue
        target = clean.with_name(f"{clean.stem}{MUTANT_TAG}{recipe['id']}.py")
        target.write_text(text, encoding="utf-8")
        out[recipe["id"]] = target
    return out


def nnlint_command() -> list[str]:
    found = shutil.which("nnlint", path=str(Path(sys.executable).parent)) or shutil.which("nnlint")
    return [found] if found else [sys.executable, "-m", "nnlint"]


def lint(root: Path, files: list[Path]) -> list[dict]:
    """nnlint's JSON findings for `files`, run from `root` as a user of that project would."""
    if not files:
        return []
    cmd = [
        *nnlint_command(),
        "--static-only",
        "--isolated",
        "--format",
        "json",
        "-j",
        "1",
        "--exit-zero",
        *(str(f.relative_to(root)) for f in files),
    ]
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(
            f"nnlint failed in {root} (exit {done.returncode}):\n{done.stderr[-2000:]}"
        )
    findings = json.loads(done.stdout)["findings"]
    for f in findings:
        f["path"] = Path(f["path"]).as_posix()
    return findings


def lint_all(cache: Path, groups: dict[str, list[Path]]) -> dict[str, list[dict]]:
    """Findings per repository; paths in them are relative to the repository's root."""
    return {repo: lint(cache / folder(repo), files) for repo, files in sorted(groups.items())}


def verdict_key(repo: str, path: str, code: str, line: int) -> str:
    return f"{repo}:{path}:{line}:{code}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=CACHE, help="where the scripts are written")
    parser.add_argument("--rule", help="only this rule code (NN2xx)")
    parser.add_argument("--show-missed", action="store_true", help="list every missed mutant")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)

    manifest = json.loads(MANIFEST.read_text())
    recipes = json.loads(MUTANTS.read_text())["mutants"] if MUTANTS.is_file() else []
    cache = args.cache.resolve()
    scripts, problems = materialise(manifest, cache)
    mutants = write_mutants(recipes, scripts, problems)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)

    clean_groups: dict[str, list[Path]] = defaultdict(list)
    for (repo, _), path in scripts.items():
        clean_groups[repo].append(path)
    clean = lint_all(cache, clean_groups)

    mutant_groups: dict[str, list[Path]] = defaultdict(list)
    for recipe in recipes:
        if recipe["id"] in mutants:
            mutant_groups[recipe["repository"]].append(mutants[recipe["id"]])
    mutated = lint_all(cache, mutant_groups)

    verdicts = {v["key"]: v for v in manifest.get("verdicts", ())}
    repos = {r for r, _ in scripts}
    lines = sum(p.read_text(encoding="utf-8").count("\n") for p in scripts.values())
    print(
        f"{len(scripts)} clean scripts ({lines} lines) from {len(repos)} repositories; "
        f"{len(mutants)} mutants"
    )

    per_rule: dict[str, list[tuple[str, dict]]] = defaultdict(list)
    for repo, findings in clean.items():
        for f in findings:
            per_rule[f["code"]].append((repo, f))
    codes = sorted(set(per_rule) | {r["rule"] for r in recipes})
    if args.rule:
        codes = [c for c in codes if c == args.rule]

    counts_clean: dict[tuple[str, str, str], int] = Counter()
    for repo, findings in clean.items():
        for f in findings:
            counts_clean[(repo, f["path"], f["code"])] += 1
    counts_mut: dict[tuple[str, str, str], int] = Counter()
    for repo, findings in mutated.items():
        for f in findings:
            counts_mut[(repo, f["path"], f["code"])] += 1

    totals = Counter()
    results = {"clean": [], "mutants": []}
    for code in codes:
        found = per_rule.get(code, [])
        rule_recipes = [r for r in recipes if r["rule"] == code and r["id"] in mutants]
        caught, missed = [], []
        for recipe in rule_recipes:
            rel = mutants[recipe["id"]].relative_to(cache / folder(recipe["repository"]))
            key_m = (recipe["repository"], rel.as_posix(), code)
            key_c = (recipe["repository"], recipe["path"], code)
            (caught if counts_mut[key_m] > counts_clean[key_c] else missed).append(recipe)
            results["mutants"].append({"id": recipe["id"], "rule": code, "found": recipe in caught})
        recall = f"{len(caught)}/{len(rule_recipes)}" if rule_recipes else "-"
        judged = Counter()
        rows = []
        for repo, f in sorted(found, key=lambda rf: (rf[0], rf[1]["path"], rf[1]["line"])):
            v = verdicts.get(verdict_key(repo, f["path"], code, f["line"]))
            kind = v["verdict"] if v else "unjudged"
            judged[kind] += 1
            rows.append(
                f"    [{kind}] {repo}:{f['path']}:{f['line']}: {f['message']}"
                + (f"\n        reason: {v['reason']}" if v else "")
            )
            results["clean"].append({"repository": repo, **f, "verdict": kind})
        summary = ", ".join(f"{n} {k}" for k, n in sorted(judged.items())) or "none"
        print(f"\n{code}: {len(found)} findings on clean scripts ({summary}); mutants {recall}")
        if rows:
            print("\n".join(rows))
        if args.show_missed:
            for recipe in missed:
                print(f"    missed {recipe['id']}: {recipe['repository']}:{recipe['path']}")
                print(f"        planted: {recipe['what']}")
        totals.update(judged)
        totals["caught"] += len(caught)
        totals["mutants"] += len(rule_recipes)

    n_clean = sum(v for k, v in totals.items() if k not in ("caught", "mutants"))
    rate = 100 * totals["caught"] / totals["mutants"] if totals["mutants"] else 0.0
    print(
        f"\ntotal: {n_clean} findings on clean scripts "
        f"({totals['true']} true, {totals['false']} false alarms, "
        f"{totals['debatable']} debatable, {totals['unjudged']} unjudged); "
        f"recall on mutants {totals['caught']}/{totals['mutants']} ({rate:.1f}%)"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The script phase does work linear in a file's length.

A flat script that repeats its training loop at module level assigns `loss`,
`out`, `x` and `y` once per block; an analysis that hands every read all the
earlier assignments of its name grows with the square of the file (libcst's
`ScopeProvider` did: 70 s and 1.5 GB for 10,000 lines). The work is counted,
never timed: the Python function calls of one `lint_file` with every script
rule on, for files of 50, 100 and 200 blocks: each added block must cost the same.
"""

from __future__ import annotations

import sys

from nnlint.core.registry import load_registry
from nnlint.core.rule import Phase
from nnlint.script.phase import lint_file

HEAD = """import torch
from torch import nn

model = nn.Linear(4, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
loss_fn = nn.CrossEntropyLoss()
"""
BLOCK = """for x, y in loader:
    opt.zero_grad()
    out = model(x)
    loss = loss_fn(out, y)
    loss.backward()
    opt.step()
"""


def calls_to_lint(tmp_path, blocks: int) -> int:
    path = tmp_path / f"flat_{blocks}.py"
    path.write_text(HEAD + BLOCK * blocks)
    rules = [r() for r in load_registry().rules if r.kind is Phase.SCRIPT]
    count = 0

    def tally(frame, event, arg):
        nonlocal count
        if event == "call":
            count += 1

    sys.setprofile(tally)
    try:
        findings = lint_file(path, path.name, rules, tmp_path)
    finally:
        sys.setprofile(None)
    assert not [f for f in findings if f.code.startswith("NN0")], findings
    return count


def test_work_grows_linearly_with_the_length_of_a_flat_script(tmp_path):
    small, medium, large = (calls_to_lint(tmp_path, blocks) for blocks in (50, 100, 200))
    # The 100 blocks added last cost twice the 50 before them when the work is
    # linear (2.02 measured); libcst's scope analysis made it 2.49.
    first, second = medium - small, large - medium
    assert second < 2.2 * first, f"{first} calls for blocks 51-100, {second} for blocks 101-200"

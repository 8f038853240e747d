"""Results do not depend on how busy the machine is.

Every core is kept busy by processes this test starts, then the examples and
the bad-input cases that go through the training-script capture run exactly
as on an idle machine: the same exit codes and the same findings (measured
numbers masked, as in the golden tests). Budgets are CPU time of the work they
bound, so a loaded machine only makes the run take longer.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_bad_input import CASES, execute
from test_examples import EXAMPLES, lint, normalize

# The bad-input cases that run the training script in the capture child.
CAPTURED = [
    c
    for c in CASES
    if c.outcome == "finding"
    and "--model" in c.args
    and not {"--no-capture", "--no-dynamic"} & set(c.args)
    and not c.xfail
]


def _spin() -> None:
    while True:
        pass


@pytest.fixture(scope="module")
def busy_machine():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    context = multiprocessing.get_context("spawn")
    spinners = [context.Process(target=_spin, daemon=True) for _ in range(cores or 1)]
    for spinner in spinners:
        spinner.start()
    try:
        yield len(spinners)
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.join()


@pytest.fixture(scope="module")
def loaded_examples(busy_machine):
    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(EXAMPLES, pool.map(lint, EXAMPLES), strict=True))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: f"{e.parent.name}/{e.name}")
def test_examples_give_the_same_findings_on_a_busy_machine(example, loaded_examples):
    run = loaded_examples[example]
    expected = normalize((example / "expected.txt").read_text())
    assert normalize(run.stdout) == expected, run.stdout + run.stderr
    assert run.returncode == (1 if example.name == "buggy" else 0)


@pytest.mark.parametrize("case", CAPTURED, ids=lambda c: c.id)
def test_captured_bad_input_exits_the_same_on_a_busy_machine(case, busy_machine, tmp_path):
    result = execute(case, tmp_path / "project")
    shown = f"exit {result.code}\n--- stdout\n{result.out}\n--- stderr\n{result.err}"
    assert result.after == result.before, shown
    assert result.code == case.exit, shown
    codes = reported_codes(result.out, case.fmt)
    assert case.code in codes and "NN001" not in codes, shown


def reported_codes(out: str, fmt: str) -> set[str]:
    if fmt == "json":
        return {f["code"] for f in json.loads(out)["findings"]}
    if fmt == "sarif":
        return {r["ruleId"] for run in json.loads(out)["runs"] for r in run["results"]}
    return {line.split(": ", 1)[1].split()[0] for line in out.splitlines() if ": NN" in line}

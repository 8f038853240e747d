"""nnlint's dynamic phase against neural_net_checklist's full suites, on the same models.

For each model, in one run: the wall time of neural_net_checklist's `assert_all_*`
suite (classification or causal-LM variant) and the wall time of
`nnlint.check(model, batch=..., loss_fn=..., optimizer=..., select=<NN3 defaults>)`
(the dynamic rules that are on by default, as the CLI runs them, in this
process), their ratio (checklist / nnlint, so
above 1 means nnlint is faster) and what each concluded.

Models, all written here:
  * LeNet          1x28x28 images, 10 classes, batch 32, cross-entropy; healthy.
  * TinyGPT        a causal transformer (token + position embedding, 2 pre-norm
                   blocks with a causal mask, LM head), vocabulary 32, 32 sequences
                   of 16 tokens; healthy.
  * LeNet+sigmoid  LeNet whose output goes through a sigmoid before cross-entropy:
                   the logits live in [0, 1], so the loss can never go below
                   log(1 + 9/e) = 1.46 and the model cannot overfit.
  * LeNet+detach   LeNet whose output is detached: it cannot overfit either, but
                   the checklist stops at its gradient check (a RuntimeError) within
                   milliseconds, long before its overfit stage, so there it is the
                   faster tool; the row shows where the 100x target does not apply.

Fairness: torch, the checklist and nnlint (with its rule modules) are imported, and
torch warmed up with one training step, before either side is timed; both sides run with the same torch thread count (`--threads`, default 1,
which is also what nnlint's checks use), get a fresh model from the same seed, the
same batch and the same loss. The checklist always trains with its own Adam(lr=3e-4)
and cannot be given an optimizer through `assert_all_*`; nnlint is given that same
optimizer. The checklist's progress bars and prints go to a buffer, not the terminal.
nnlint's figure is the median of `--repeat` calls (3; 1 with `--quick`), the
checklist's a single run.

The checklist stops at the first failed assertion (or exception); the output
records where. Its overfit check trains up to 65,536 steps for a loss below 1e-4
(0.1 for LMs), and `assert_all_*` offers no way to shorten it. On the models that
cannot overfit this script therefore runs the checklist's own
`assert_overfit_to_batch` for only `--overfit-steps` steps (512; 128 with `--quick`;
the suite's other checks run in full) and, if it fails there, extrapolates that stage
linearly to 65,536 steps; the output marks such figures with `*` and says so. The
sigmoid bounds the loss at 1.46, far above 1e-4, so the real run would use all
65,536 steps.

The command line (skipped with `--no-cli`): what the dynamic phase costs a user, in
CPU seconds of the whole process tree. For each model a temporary folder gets
`models.py` (the model class) and `train.py` (a training script with the same batch,
loss and Adam), and `nnlint train.py --model models.py:Name --select <the same dynamic
rules>` runs as a subprocess with one thread (OMP_NUM_THREADS=1), once as it is and
once with `--no-dynamic`, in `--cli-repeat` pairs (7; 3 with `--quick`). A small
wrapper runs nnlint's `main()` as `python -m nnlint` would and writes, at exit, the CPU
seconds of nnlint's own process and of its children: the contained model child, where
every piece of user code and the whole dynamic phase run (the training script in the
capture child, the copies, the checks, the rule modules they import, what the optimizer
step pulls in). The dynamic phase's figure is what it adds to that child's tree: the
median over the pairs of the child's CPU with the phase minus without. nnlint's own
process does the same work either way (parsing flags, importing torch, printing); its
medians for both sides are printed beside the figure so that this can be seen. Its
whole run is about 3 s of CPU, mostly torch's import, whose spread between runs on a
shared machine (up to a second) is larger than the dynamic phase itself, so a
difference of whole runs would mostly measure noise. It is set against the CPU seconds
of the checklist's suite (extrapolated as above), which a user pays on top of their
own process too: the mean of its run before nnlint's and a second run after the
command-line pairs, since this machine's speed drifts by a third or more over the
minutes between them and a single run of either side alone would carry that drift
into the ratio (both runs are printed). The totals are shown beside it, as information: nnlint's whole run
against the suite plus a process that imports torch and the checklist and takes one
training step (what the checklist's own process pays before its suite); both are
dominated by the interpreter and torch's import (about 1.5 s), which no linter of a
PyTorch model avoids.

Memory (skipped with `--no-memory` or `--quick`): the peak resident set size (VmHWM
from /proc/self/status; not `ru_maxrss`, which Linux carries across exec from the
parent that forked the process) of a fresh subprocess that imports torch, builds the
model and batch and runs `nnlint.check(...)`, against a fresh subprocess that imports
torch, builds the same model and batch and takes one Adam step. Both include the
interpreter and torch itself, which dominate for models this small. Target: nnlint
at most 1.3x.

Usage:
  python benchmarks/dynamic_vs_checklist.py            # everything (about 2 minutes)
  python benchmarks/dynamic_vs_checklist.py --quick    # under a minute
  python benchmarks/dynamic_vs_checklist.py --json     # one line of rows for run.py
  python benchmarks/dynamic_vs_checklist.py --case LeNet --case TinyGPT --no-memory
  python benchmarks/dynamic_vs_checklist.py --cpu-time # CPU time, steadier when busy

Needs `pip install --no-deps neural-net-checklist numpy tqdm pillow` (its metadata
asks for torchvision, which its code never imports); exits 2 without it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

BENCHMARK = "dynamic_vs_checklist"
CHECKLIST_OVERFIT_STEPS = 2**16  # neural_net_checklist's default max_steps
CHECKLIST_LR = 3e-4  # the Adam learning rate neural_net_checklist trains with
CLASSES = 10
VOCAB, SEQ, LM_BATCH = 32, 16, 32  # the LM suite takes min(128, vocab) sequences
clock = time.perf_counter  # time.process_time with --cpu-time


# -- models ---------------------------------------------------------------------


class LeNet(nn.Module):
    def __init__(self, squash: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, CLASSES)
        self.squash = squash

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        logits = self.fc3(F.relu(self.fc2(x)))
        return torch.sigmoid(logits) if self.squash else logits


class SquashedLeNet(LeNet):
    """LeNet with a sigmoid on its output, fed to cross-entropy: cannot overfit."""

    def __init__(self):
        super().__init__(squash=True)


class DetachedLeNet(LeNet):
    """LeNet whose output is detached from the graph: nothing can train."""

    def forward(self, x):
        return super().forward(x).detach()


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def attend(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)
        q, k, v = (z.reshape(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // self.heads)
        future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        weights = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(b, t, d))

    def forward(self, x):
        x = x + self.attend(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyGPT(nn.Module):
    """Token and position embeddings, two causal blocks, a final norm and an LM head."""

    def __init__(self, vocab: int = VOCAB, dim: int = 32, heads: int = 2, layers: int = 2):
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim)
        self.position = nn.Embedding(64, dim)
        self.blocks = nn.Sequential(*(Block(dim, heads) for _ in range(layers)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, tokens):
        # `tokens` is (batch, time) ids; the checklist feeds (batch, time, vocab) one-hots
        # through its patched embedding, so only the first two dimensions are used here.
        t = tokens.shape[1]
        x = self.embedding(tokens) + self.position(torch.arange(t, device=tokens.device))
        return self.head(self.norm(self.blocks(x)))


def lm_loss(logits, targets):
    """Next-token cross-entropy over (batch, time, vocab) logits, averaged over tokens."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


# -- data -----------------------------------------------------------------------


def image_batch(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST-like: a fixed pattern per class plus noise, balanced labels."""
    g = torch.Generator().manual_seed(0)
    templates = torch.randn(CLASSES, 1, 28, 28, generator=g)
    labels = (torch.arange(n) % CLASSES)[torch.randperm(n, generator=g)]
    images = templates[labels] + 0.5 * torch.randn(n, 1, 28, 28, generator=g)
    return images, labels


def token_batch(n: int = LM_BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences that follow a fixed rule (t -> 5t + 3 mod vocab) from a random start."""
    g = torch.Generator().manual_seed(0)
    seq = torch.empty(n, SEQ + 1, dtype=torch.long)
    seq[:, 0] = torch.randint(0, VOCAB, (n,), generator=g)
    for i in range(SEQ):
        seq[:, i + 1] = (5 * seq[:, i] + 3) % VOCAB
    return seq[:, :-1].contiguous(), seq[:, 1:].contiguous()


# -- cases ----------------------------------------------------------------------


@dataclass
class Case:
    name: str
    factory: Callable[[], nn.Module]
    batch: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    loss_fn: Any
    suite: str  # "classification" or "causal_lm"
    healthy: bool
    target: float | None  # the ratio nnlint should reach; None where no target applies

    @property
    def target_text(self) -> str:
        if self.target is None:
            return "n/a: the checklist stops at an exception"
        return f">= {self.target:g}x"


CE, CLS = F.cross_entropy, "classification"
CASES = [
    Case("LeNet", LeNet, image_batch, CE, CLS, True, 15),
    Case("TinyGPT", TinyGPT, token_batch, lm_loss, "causal_lm", True, 15),
    Case("LeNet+sigmoid", SquashedLeNet, image_batch, CE, CLS, False, 100),
    Case("LeNet+detach", DetachedLeNet, image_batch, CE, CLS, False, None),
]


def train_step(model: nn.Module, batch, loss_fn) -> None:
    """One Adam step (only the forward and loss where no gradient reaches the loss)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=CHECKLIST_LR)
    optimizer.zero_grad()
    loss = loss_fn(model(batch[0]), batch[1])
    if loss.requires_grad:
        loss.backward()
        optimizer.step()


# -- neural_net_checklist side --------------------------------------------------


@dataclass
class ChecklistRun:
    seconds: float  # measured, or measured + extrapolated overfit stage
    measured: float  # wall time actually spent
    outcome: str
    stages: list[tuple[str, float]] = field(default_factory=list)
    extrapolated: str | None = None
    cpu: float = 0.0  # process CPU seconds, extrapolated as `seconds` is


def checklist_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("neural_net_checklist")
    except PackageNotFoundError:
        return None


def run_checklist(case: Case, overfit_steps: int | None) -> ChecklistRun:
    """The checklist's full suite; with `overfit_steps`, its overfit stage is cut short
    there and extrapolated to the 65,536 steps the suite would spend."""
    from neural_net_checklist import torch_diagnostics as td

    stages: list[tuple[str, float]] = []
    cpu_stages: list[float] = []
    overfit: dict[str, Any] = {}
    originals = {
        name: getattr(td, name)
        for name in dir(td)
        if name.startswith("assert_") and not name.startswith("assert_all_")
    }

    def timed(name: str, fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            if name == "assert_overfit_to_batch" and overfit_steps is not None:
                kwargs["max_steps"] = overfit_steps
            start, cpu_start = clock(), time.process_time()
            try:
                return fn(*args, **kwargs)
            except Exception as error:
                kind = "" if isinstance(error, AssertionError) else f"{type(error).__name__}: "
                text = (str(error).strip().splitlines() or [""])[0][:160]
                overfit.setdefault("failed", (name, kind + text))
                raise
            finally:
                stages.append((name, clock() - start))
                cpu_stages.append(time.process_time() - cpu_start)

        return wrapper

    batch = case.batch()
    buffer = io.StringIO()
    torch.manual_seed(0)
    start, cpu_start = clock(), time.process_time()
    try:
        for name, fn in originals.items():
            setattr(td, name, timed(name, fn))
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            if case.suite == "classification":
                td.assert_all_for_classification_cross_entropy_loss(
                    case.factory, batch, num_classes=CLASSES
                )
            else:
                td.assert_all_for_causal_llm_cross_entropy_loss(
                    case.factory, batch, embedding_layer_name="embedding", vocab_size=VOCAB
                )
        reached = re.search(r"below threshold \(([^)]*)\) at step (\d+)", buffer.getvalue())
        outcome = "all checks passed"
        if reached:
            outcome += f" (overfit: loss below {reached[1]} at step {reached[2]})"
    except Exception:  # an assertion, or a crash (as on a detached output)
        stage, message = overfit["failed"]
        outcome = f"aborted at {stage.removeprefix('assert_')}: {message}"
    finally:
        for name, fn in originals.items():
            setattr(td, name, fn)
    measured = clock() - start
    run = ChecklistRun(measured, measured, outcome, stages, cpu=time.process_time() - cpu_start)
    last = stages[-1][0] if stages else ""
    if overfit_steps is not None and last == "assert_overfit_to_batch" and "failed" in overfit:
        spent = stages[-1][1]
        full = spent * CHECKLIST_OVERFIT_STEPS / overfit_steps
        run.seconds = measured - spent + full
        run.cpu += cpu_stages[-1] * (CHECKLIST_OVERFIT_STEPS / overfit_steps - 1)
        run.extrapolated = (
            f"overfit stage run for {overfit_steps} of its {CHECKLIST_OVERFIT_STEPS} steps"
            f" ({spent:.2f}s) and extrapolated linearly to {full:.1f}s"
        )
        run.outcome = (
            f"aborted at overfit_to_batch after {CHECKLIST_OVERFIT_STEPS} steps (extrapolated;"
            f" at step {overfit_steps}: {message_tail(overfit['failed'][1])})"
        )
    return run


def message_tail(message: str) -> str:
    return message.split("Final loss:")[-1].strip(" .") if "Final loss" in message else message


# -- nnlint side ----------------------------------------------------------------


def run_nnlint(case: Case) -> tuple[float, list]:
    import nnlint

    batch = case.batch()
    torch.manual_seed(0)
    model = case.factory()
    optimizer = torch.optim.Adam(model.parameters(), lr=CHECKLIST_LR)
    start = clock()
    findings = nnlint.check(
        model, batch=batch, loss_fn=case.loss_fn, optimizer=optimizer, select=dynamic_defaults()
    )
    return clock() - start, findings


def dynamic_defaults() -> list[str]:
    """The dynamic rules a plain `nnlint train.py --model ...` runs (on by default)."""
    from nnlint.core.finding import Phase
    from nnlint.core.registry import load_registry

    return [r.code for r in load_registry().rules if r.kind is Phase.DYNAMIC and r.default_enabled]


def describe(findings: list) -> str:
    if not findings:
        return "no findings"
    return ", ".join(sorted({f"{f.code} {f.name}" for f in findings}))


# -- the command line: CPU seconds of the whole process tree ----------------------

MODELS_PY = """import sys

sys.path.insert(0, {here!r})
from dynamic_vs_checklist import DetachedLeNet, LeNet, SquashedLeNet, TinyGPT  # noqa: E402, F401
"""
# The training script a user would have: the same model, batch, loss and optimizer.
TRAIN_PY = """import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, {here!r})
from dynamic_vs_checklist import CHECKLIST_LR, {batch}  # noqa: E402
from models import {model}  # noqa: E402

torch.manual_seed(0)
model = {model}()
optimizer = torch.optim.Adam(model.parameters(), lr=CHECKLIST_LR)
inputs, targets = {batch}()
for step in range(3):
    optimizer.zero_grad()
    logits = model(inputs)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    if loss.requires_grad:
        loss.backward()
        optimizer.step()
"""


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_thread_env(threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


# Runs nnlint's command line as `python -m nnlint` does, then writes the CPU seconds
# of nnlint's own process and of its children (the contained model child and what it
# started: the capture child, the checks) to the file named in NNLINT_BENCH_TIMES.
CLI_WRAPPER = """
import atexit, json, os, resource, sys

def _times():
    # getrusage, not os.times(): that one counts in clock ticks (10 ms)
    mine = resource.getrusage(resource.RUSAGE_SELF)
    theirs = resource.getrusage(resource.RUSAGE_CHILDREN)
    own, children = mine.ru_utime + mine.ru_stime, theirs.ru_utime + theirs.ru_stime
    with open(os.environ["NNLINT_BENCH_TIMES"], "w") as f:
        json.dump({"own": own, "children": children}, f)

atexit.register(_times)
from nnlint.cli import main
sys.argv = ["nnlint", *sys.argv[1:]]
sys.exit(main())
"""


@dataclass
class CliRun:
    """One command-line run: CPU seconds of the whole tree, of nnlint's own process and
    of its children (the model child, where every piece of user code and the dynamic
    phase run), and the codes it reported."""

    tree: float
    own: float
    children: float
    codes: list[str]


def run_cli(case: Case, threads: int, extra: tuple[str, ...] = ()) -> CliRun:
    """`nnlint train.py --model models.py:Name` in a fresh process (the capture child included)."""
    here = str(Path(__file__).resolve().parent)
    model, batch = case.factory.__name__, case.batch.__name__
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "models.py").write_text(MODELS_PY.format(here=here))
        (root / "train.py").write_text(TRAIN_PY.format(here=here, model=model, batch=batch))
        command = [sys.executable, "-c", CLI_WRAPPER, "train.py", "--model", f"models.py:{model}"]
        command += ["--isolated", "--no-cache", "--format", "json"]
        command += ["--select", ",".join(dynamic_defaults()), *extra]
        env = one_thread_env(threads)
        env["NNLINT_BENCH_TIMES"] = str(root / "times.json")
        before = children_cpu()
        done = subprocess.run(command, cwd=root, capture_output=True, text=True, env=env)
        cpu = children_cpu() - before
        if done.returncode not in (0, 1):
            raise SystemExit(
                f"nnlint exited {done.returncode} on {case.name}: {done.stderr.strip()}"
            )
        times = json.loads((root / "times.json").read_text())
    codes = sorted({f["code"] for f in json.loads(done.stdout)["findings"]})
    return CliRun(cpu, times["own"], times["children"], codes)


def startup_child(case_name: str, threads: int) -> None:
    """Runs in a subprocess: what the checklist's own process pays besides its suite
    (the interpreter, torch, the checklist, the model and batch, a first training step)."""
    import neural_net_checklist.torch_diagnostics  # noqa: F401

    torch.set_num_threads(threads)
    case = next(c for c in CASES if c.name == case_name)
    torch.manual_seed(0)
    train_step(case.factory(), case.batch(), case.loss_fn)


def startup_cpu(case: Case, threads: int) -> float:
    before = children_cpu()
    subprocess.run(
        [sys.executable, __file__, "--startup-child", case.name, "--threads", str(threads)],
        check=True,
        env=one_thread_env(threads),
    )
    return children_cpu() - before


# -- memory (one subprocess per measurement) -------------------------------------


def rss_child(side: str, case_name: str, threads: int) -> None:
    """Runs in a subprocess: one side on one case, then prints the peak RSS in KiB."""
    torch.set_num_threads(threads)
    case = next(c for c in CASES if c.name == case_name)
    if side == "nnlint":
        run_nnlint(case)
    else:
        torch.manual_seed(0)
        train_step(case.factory(), case.batch(), case.loss_fn)
    print(peak_rss_kib())


def peak_rss_kib() -> int:
    """This process's peak resident set size (VmHWM). Not `ru_maxrss`: Linux carries
    that across exec from the forking parent, which holds far more than the child."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def peak_rss_mib(side: str, case: Case, threads: int) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", side, case.name, "--threads", str(threads)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.split()[-1]) / 1024


# -- driver ---------------------------------------------------------------------


@dataclass
class Row:
    case: Case
    checklist: ChecklistRun
    nnlint: float
    findings: list
    memory: tuple[float, float] | None = None  # (nnlint MiB, baseline MiB)
    # The command line, CPU seconds of the process tree: nnlint's full run, the same run
    # with --no-dynamic, the checklist's suite and that suite plus its process's start-up;
    # and the codes nnlint reported on the full run.
    cli: tuple[float, float, float, float] | None = None
    cli_codes: list[str] = field(default_factory=list)
    # What the dynamic phase adds to the model child's tree (median of paired runs), and
    # the median CPU of nnlint's own process with and without it (the same work).
    cli_added: float = math.nan
    cli_own: tuple[float, float] = (math.nan, math.nan)
    checklist_cpus: tuple[float, float] = (math.nan, math.nan)  # the suite before, after

    @property
    def cli_dynamic(self) -> float:
        """What the dynamic phase adds to a command-line run."""
        return max(self.cli_added, 1e-3) if self.cli else math.nan

    @property
    def cli_ratio(self) -> float:
        return self.cli[2] / self.cli_dynamic if self.cli else math.nan

    @property
    def cli_total_ratio(self) -> float:
        return self.cli[3] / self.cli[0] if self.cli else math.nan

    @property
    def cli_verdict(self) -> str:
        if self.case.healthy:
            return "ok" if not self.cli_codes else "FALSE FINDING"
        # From the command line the detached LeNet's script trains nothing: NN306 says so.
        return "ok" if {"NN309", "NN306"} & set(self.cli_codes) else "MISSED"

    @property
    def ratio(self) -> float:
        return self.checklist.seconds / self.nnlint

    @property
    def verdict(self) -> str:
        """Whether nnlint's answer is the right one for this model."""
        codes = {f.code for f in self.findings}
        if self.case.healthy:
            return "ok" if not codes else "FALSE FINDING"
        return "ok" if "NN309" in codes else "MISSED"


def measure(args) -> list[Row]:
    import neural_net_checklist.torch_diagnostics  # noqa: F401  both libraries imported untimed

    import nnlint.api  # noqa: F401
    from nnlint.core.registry import load_registry

    load_registry()  # nnlint imports its rule modules once per process
    rows = []
    cases = [c for c in CASES if not args.case or c.name in args.case]
    unknown = set(args.case or ()) - {c.name for c in CASES}
    if unknown:
        raise SystemExit(f"unknown case(s): {', '.join(sorted(unknown))}")
    for case in cases:
        torch.manual_seed(0)
        train_step(case.factory(), case.batch(), case.loss_fn)  # warm-up, untimed
        cap = None if case.healthy else args.overfit_steps
        checklist = run_checklist(case, cap)
        times, findings = [], []
        for _ in range(args.repeat):
            seconds, findings = run_nnlint(case)
            times.append(seconds)
        row = Row(case, checklist, statistics.median(times), findings)
        if args.cli:
            runs, bare = [], []
            for _ in range(args.cli_repeat):  # in pairs, so a busy spell hits both alike
                runs.append(run_cli(case, args.threads))
                bare.append(run_cli(case, args.threads, ("--no-dynamic",)))
            row.cli_codes = runs[-1].codes
            started = startup_cpu(case, args.threads)
            again = run_checklist(case, cap)  # the machine drifts: the suite before and after
            row.checklist_cpus = (checklist.cpu, again.cpu)
            suite = statistics.mean(row.checklist_cpus)
            full = min(r.tree for r in runs)
            row.cli = (full, min(r.tree for r in bare), suite, suite + started)
            # The dynamic phase runs in the model child: what it adds there, pair by pair.
            row.cli_added = statistics.median(
                a.children - b.children for a, b in zip(runs, bare, strict=True)
            )
            row.cli_own = (
                statistics.median(r.own for r in runs),
                statistics.median(r.own for r in bare),
            )
        if args.memory:
            row.memory = (
                peak_rss_mib("nnlint", case, args.threads),
                peak_rss_mib("baseline", case, args.threads),
            )
        rows.append(row)
        if not args.json:
            print(f"  measured {case.name}", file=sys.stderr)
    return rows


def print_table(rows: list[Row], args, version: str) -> None:
    print(
        f"neural_net_checklist {version} full suite vs nnlint.check(dynamic rules on by default); "
        f"torch {torch.__version__}, {args.threads} thread(s),"
        f" {'process CPU time' if args.cpu_time else 'wall time'}; nnlint: median of {args.repeat}"
        f" in process, median of {args.cli_repeat} pairs from the command line"
    )
    print()
    header = f"{'model':<14} {'checklist s':>12} {'nnlint s':>9} {'ratio':>8} {'target':>8}  met"
    print(header)
    print("-" * len(header))
    for r in rows:
        star = "*" if r.checklist.extrapolated else " "
        met = "n/a" if r.case.target is None else "yes" if r.ratio >= r.case.target else "NO"
        print(
            f"{r.case.name:<14} {r.checklist.seconds:>11.2f}{star} {r.nnlint:>9.2f}"
            f" {r.ratio:>7.{1 if r.ratio >= 1 else 2}f}x {r.case.target_text:>8}  {met}"
        )
    print()
    for r in rows:
        print(f"{r.case.name}:")
        print(f"  checklist: {r.checklist.outcome}")
        print(f"  nnlint:    {describe(r.findings)}  [{r.verdict}]")
        for f in r.findings:
            print(f"             {f.code}: {f.message}")
        stages = ", ".join(f"{n.removeprefix('assert_')} {s:.2f}s" for n, s in r.checklist.stages)
        print(f"  checklist stages (measured): {stages}")
        if r.checklist.extrapolated:
            print(
                f"  * EXTRAPOLATED: {r.checklist.extrapolated}; {r.checklist.measured:.2f}s"
                " actually measured"
            )
    if any(r.cli for r in rows):
        print()
        print(
            "command line, CPU seconds: what the dynamic phase adds to"
            " `nnlint train.py --model ...` (the model child's tree minus the same with"
            " --no-dynamic, median of pairs) vs the checklist's suite (mean of a run before"
            " and one after the pairs); nnlint's own process with / without it:"
        )
        print(f"{'model':<14} {'checklist s':>12} {'nnlint s':>9} {'ratio':>8} {'target':>8}  met")
        for r in rows:
            if r.cli:
                star = "*" if r.checklist.extrapolated else " "
                target = r.case.target
                met = "n/a" if target is None else "yes" if r.cli_ratio >= target else "NO"
                codes = ", ".join(r.cli_codes) or "no findings"
                print(
                    f"{r.case.name:<14} {r.cli[2]:>11.2f}{star} {r.cli_dynamic:>9.2f}"
                    f" {r.cli_ratio:>7.{1 if r.cli_ratio >= 1 else 2}f}x {r.case.target_text:>8}"
                    f"  {met}  ({codes} [{r.cli_verdict}];"
                    f" own {r.cli_own[0]:.2f} / {r.cli_own[1]:.2f})"
                )
        print()
        print(
            "information, whole runs: nnlint's (with --no-dynamic) vs the checklist's suite"
            " plus its process's start-up (interpreter, torch, one step):"
        )
        for r in rows:
            if r.cli:
                print(
                    f"{r.case.name:<14} {r.cli[3]:>11.2f}  {r.cli[0]:>6.2f} ({r.cli[1]:.2f})"
                    f" {r.cli_total_ratio:>7.{1 if r.cli_total_ratio >= 1 else 2}f}x"
                )
    if any(r.memory for r in rows):
        print()
        print("peak RSS (VmHWM of a fresh subprocess per side; interpreter and torch included):")
        print(f"{'model':<14} {'nnlint MiB':>11} {'1 step MiB':>11} {'nnlint/step':>12}  target")
        for r in rows:
            if r.memory:
                mine, base = r.memory
                print(
                    f"{r.case.name:<14} {mine:>11.0f} {base:>11.0f} {mine / base:>11.2f}x  <= 1.3x"
                )


def json_rows(rows: list[Row], version: str) -> list[dict]:
    out = []
    for r in rows:
        note = f"checklist: {r.checklist.outcome}; nnlint: {describe(r.findings)} [{r.verdict}]"
        if r.checklist.extrapolated:
            note += f"; EXTRAPOLATED: {r.checklist.extrapolated}"
        out.append(
            {
                "benchmark": BENCHMARK,
                "case": r.case.name,
                "nnlint": round(r.nnlint, 4),
                "alternative": f"neural_net_checklist {version}",
                "alt": round(r.checklist.seconds, 4),
                "ratio": round(r.ratio, 3),
                "unit": "s",
                "target": r.case.target_text,
                "note": note,
            }
        )
    for r in rows:
        if r.cli:
            note = (
                "CPU seconds that the dynamic phase adds to `nnlint train.py --model ...`:"
                " the model child's tree (where the script, the capture and the checks run)"
                " minus the same with --no-dynamic, median of paired runs; nnlint's own"
                f" process {r.cli_own[0]:.2f} with, {r.cli_own[1]:.2f} without (medians);"
                " against the checklist's suite (mean of its runs before and after:"
                f" {r.checklist_cpus[0]:.2f} and {r.checklist_cpus[1]:.2f}); whole runs (least):"
                f" nnlint {r.cli[0]:.2f} ({r.cli[1]:.2f} with --no-dynamic), the checklist's"
                " suite plus its process's start-up"
                f" {r.cli[3]:.2f}; nnlint: {', '.join(r.cli_codes) or 'no findings'}"
                f" [{r.cli_verdict}]"
            )
            if r.checklist.extrapolated:
                note += "; checklist EXTRAPOLATED as above"
            out.append(
                {
                    "benchmark": BENCHMARK,
                    "case": f"{r.case.name}, command line",
                    "nnlint": round(r.cli_dynamic, 4),
                    "alternative": f"neural_net_checklist {version}",
                    "alt": round(r.cli[2], 4),
                    "ratio": round(r.cli_ratio, 3),
                    "unit": "s",
                    "target": r.case.target_text,
                    "note": note,
                }
            )
    for r in rows:
        if r.memory:
            mine, base = r.memory
            out.append(
                {
                    "benchmark": BENCHMARK,
                    "case": f"{r.case.name} peak RSS",
                    "nnlint": round(mine, 1),
                    "alternative": "torch + model + one training step",
                    "alt": round(base, 1),
                    "ratio": round(base / mine, 3),
                    "unit": "MiB",
                    "target": ">= 0.77x (nnlint <= 1.3x the baseline)",
                    "note": "peak RSS (VmHWM) of a fresh subprocess per side; interpreter and torch included",
                }
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON rows for benchmarks/run.py")
    parser.add_argument("--quick", action="store_true", help="fewer overfit steps, no memory")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both sides")
    parser.add_argument("--repeat", type=int, default=None, help="nnlint runs (median)")
    parser.add_argument(
        "--cli-repeat", type=int, default=None, help="command-line run pairs (median)"
    )
    parser.add_argument(
        "--overfit-steps",
        type=int,
        default=None,
        help="checklist overfit steps actually run on the model that cannot overfit",
    )
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time with the process's CPU clock (steadier on a busy machine, with --threads 1)",
    )
    parser.add_argument("--no-memory", dest="memory", action="store_false")
    parser.add_argument(
        "--no-cli", dest="cli", action="store_false", help="skip the command-line figure"
    )
    parser.add_argument("--startup-child", metavar="CASE", help=argparse.SUPPRESS)
    parser.add_argument("--case", action="append", help="only this case (repeatable)")
    parser.add_argument("--rss-child", nargs=2, metavar=("SIDE", "CASE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        rss_child(*args.rss_child, args.threads)
        return 0
    if args.startup_child:
        startup_child(args.startup_child, args.threads)
        return 0
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.cli_repeat is None:
        args.cli_repeat = 3 if args.quick else 7
    if args.overfit_steps is None:
        args.overfit_steps = 128 if args.quick else 512
    if args.quick:
        args.memory = False
    version = checklist_version()
    if version is None:
        print(
            "neural_net_checklist is not installed: "
            "pip install --no-deps neural-net-checklist numpy tqdm pillow",
            file=sys.stderr,
        )
        return 2
    torch.set_num_threads(args.threads)
    if args.cpu_time:
        global clock
        clock = time.process_time
    rows = measure(args)
    if args.json:
        print(json.dumps(json_rows(rows, version)))  # one line: run.py reads the last
    else:
        print_table(rows, args, version)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Inside the forked child: run the training script with its training setup intercepted.

`nnlint.capture.intercept` catches the `--model` instance as the script
builds it, its training call, the loss, `backward` and the optimizer at its
first step, where the script is stopped. Where the script asks for CUDA and
the machine has none, it runs on the CPU (`nnlint.capture.cuda`) and a note
says where. The graph and dynamic phases then run here, on the model as the
script built it, with its first batch: custom losses and classes defined in
`__main__` cannot be pickled back, the findings can.

The script runs with the global RNGs seeded (`seed_globals`), as if it had
called `torch.manual_seed(0)` first, so an unseeded script gives the same
findings on every run.

Before the script runs, the child is contained (`nnlint.setup.contain`): the
project, the home folder and the script's folder are overlaid, so whatever the
script writes, by any means, lands in the run's scratch folder and the user's
files stay as they were. Where the kernel offers less, the audit hooks of
`nnlint.setup.sandbox` refuse the writes instead.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import pickle
import re
import runpy
import signal
import sys
import tempfile
import time
import traceback
import types
from pathlib import Path
from typing import Any

import torch

from nnlint.capture.cuda import CudaOnCpu, cuda_fallback
from nnlint.capture.intercept import (
    State,
    StepReached,
    drawn_at_random,
    patch_backward,
    patch_loaders,
    patch_losses,
    patch_model,
    stop_at_first_step,
)
from nnlint.core.config import WALL_FACTOR
from nnlint.core.diagnostics import NoInputs, ScriptNotRun, one_line
from nnlint.core.files import display_path
from nnlint.core.finding import Finding
from nnlint.core.notebook import compile_notebook, is_notebook
from nnlint.dynamic.phase import dynamic_phase
from nnlint.graph.phase import run_graph_phase
from nnlint.script.losses import loss_kind_in_script, loss_kind_named
from nnlint.setup.contain import Protection, contain
from nnlint.setup.inputs import Batch, provide_batch
from nnlint.setup.load import TargetSpec, definition_site
from nnlint.setup.resolve import resolve
from nnlint.setup.sandbox import cache_dirs, guarded
from nnlint.setup.sites import Site, recording, user_site
from nnlint.setup.specs import LossSpec, OptimizerSpec, Setup

SCRIPT_SEED = 0  # what an unseeded training script runs with


class CaptureTimeout(BaseException):
    """The script did not reach its first step in time."""


def run_child(
    fd: int,
    script: Path,
    settings: Any,
    rules: list,
    model_site: Site | None,
    send: Any,
    scratch: str,
) -> None:
    sandbox = os.path.join(scratch, "tmp")
    os.mkdir(sandbox)
    # first, while this process has one thread: user namespaces need that
    protection = contain(project_dirs(script, settings), scratch)
    send(fd, ("contained", protection.description, str(protection)))
    torch.set_num_threads(1)  # a forked child's first parallel op hangs otherwise
    saved_err = os.dup(2)
    log = os.open(os.path.join(scratch, "output.log"), os.O_WRONLY | os.O_CREAT)
    os.dup2(log, 1)
    os.dup2(log, 2)
    state = State()
    cuda = cuda_fallback()
    reason, line = _run_script(script, settings, state, sandbox, protection, cuda)
    notes = _cuda_note(cuda, script, settings)
    if reason is None:
        try:
            setup = _setup(state, settings)
        except Exception as exc:  # the user's forward or loss on the captured batch
            reason, line = f"replaying its first batch raised {one_line(exc)}", 1
        else:
            reason = _not_found(state, settings) if setup is None else None
    if reason is not None:
        send(fd, ("failed", reason, line, notes))
        return
    sys.stderr = os.fdopen(saved_err, "w")
    notes += _kwargs_note(state, setup, script, settings)
    site = user_site(model_site or _site(state, setup.model, script), Site(str(script), 1))
    captured = _picklable(setup)
    start = time.perf_counter()
    notes += _graph_phase(setup, captured, script, rules, settings, site)
    timings = {"graph": time.perf_counter() - start}
    send(fd, ("captured", captured, notes))
    insights: dict = {}
    found = dynamic_phase(setup, rules, settings, site, timings, insights)
    send(fd, ("done", found, timings, setup.describe(), insights))


def project_dirs(script: Path, settings: Any) -> list[str]:
    """The folders a script may write to as it would outside nnlint, onto a copy."""
    return [str(settings.root), str(Path.home()), str(script.parent), os.getcwd()]


def _run_script(
    script: Path,
    settings: Any,
    state: State,
    sandbox: str,
    protection: Protection,
    cuda: CudaOnCpu | None,
) -> tuple[str | None, int]:
    os.chdir(script.parent)
    sys.path.insert(0, str(script.parent))
    sys.argv = [str(script), *settings.script_args]
    tempfile.tempdir = sandbox
    os.environ["TMPDIR"] = sandbox
    patch_model(TargetSpec.parse(settings.model), str(script), state)
    patch_losses(state)
    patch_loaders(state)
    patch_backward(state)
    if not (protection.copy_on_write and "landlock" in protection.layers):
        # the kernel holds only part of the line: refuse in Python what it does not
        project = [str(settings.root), str(script.parent), os.getcwd()]
        state.guard = guarded(  # referenced for the child's life
            sandbox, *protection.overlaid, shared=cache_dirs(), protect=project
        )
        state.guard.__enter__()
    stop_at_first_step(state)
    seed_globals()

    def expire(_signum: int, _frame: Any) -> None:
        raise CaptureTimeout()

    # The script's CPU time bounds it, so a busy machine changes no verdict;
    # the wall clock stops one that waits without working.
    limit = float(settings.capture_timeout)
    signal.signal(signal.SIGPROF, expire)
    signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_PROF, limit)
    signal.setitimer(signal.ITIMER_REAL, limit * WALL_FACTOR)
    try:
        with recording(), cuda or contextlib.nullcontext():
            if is_notebook(script):
                _run_notebook(script)
            else:
                runpy.run_path(str(script), run_name="__main__")
    except StepReached:
        return None, 1
    except CaptureTimeout:
        return f"it did not reach its first optimizer step within {settings.capture_timeout:g} s", 1
    except SystemExit as exc:
        return f"it exited (sys.exit({exc.code!r})) before its first optimizer step", _line(script)
    except BaseException as exc:
        text = str(exc).splitlines()[0] if str(exc) else ""
        return f"it raised {type(exc).__name__}: {text}", _line(script)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.setitimer(signal.ITIMER_PROF, 0)
        for undo in reversed(state.undo):
            undo()
    return "it finished without calling optimizer.step()", 1


def seed_globals() -> None:
    """Seed Python's, torch's and NumPy's global RNGs before the script runs, so that a
    script that never seeds itself builds the same model and batch on every run and
    the verdicts do not change from one run to the next. A script's own seed wins.
    This is the child's RNG: the user's process is not touched."""
    import random

    random.seed(SCRIPT_SEED)
    torch.manual_seed(SCRIPT_SEED)
    if "numpy.random" in sys.modules:
        sys.modules["numpy.random"].seed(SCRIPT_SEED)
    elif "numpy" in sys.modules:  # torch imports numpy, not its random module (9 ms)
        sys.meta_path.insert(0, _SeedOnImport())


class _SeedOnImport(importlib.abc.MetaPathFinder):
    """Seeds `numpy.random` when the script first imports it, as if it had been seeded
    at the start: importing it only to seed it would cost every run 9 ms of CPU."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "numpy.random":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run = loader.exec_module

        def exec_module(module: types.ModuleType) -> None:
            run(module)
            module.seed(SCRIPT_SEED)

        loader.exec_module = exec_module
        return spec


def _run_notebook(script: Path) -> None:
    """Run a notebook's code cells in order as `__main__`, as `runpy.run_path` runs a script."""
    main = types.ModuleType("__main__")
    main.__file__ = str(script)
    saved = sys.modules.get("__main__")
    sys.modules["__main__"] = main
    try:
        exec(compile_notebook(script), main.__dict__)
    finally:
        if saved is not None:
            sys.modules["__main__"] = saved


def _line(script: Path) -> int:
    frames = traceback.extract_tb(sys.exc_info()[2])
    lines = [f.lineno for f in frames if Path(f.filename).resolve() == script and f.lineno]
    return lines[-1] if lines else 1


def _setup(state: State, settings: Any) -> Setup | None:
    called = [m for m in state.candidates() if id(m) in state.calls]
    called = [m for m in called if id(m) in state.training] or called
    if not called:
        return None
    held = {id(p) for g in state.optimizer.param_groups for p in g["params"]}
    model = next(
        (m for m in reversed(called) if any(id(p) in held for p in m.parameters())), called[-1]
    )
    args, kwargs = state.calls[id(model)]
    output = state.outputs.get(id(model))
    loss = None
    model_loss = getattr(output, "loss", None)
    if isinstance(model_loss, torch.Tensor):
        # the HF Trainer divides the summed loss by this batch's token count; without
        # it the model takes the same mean, and a replay on another batch stays one
        kwargs = {k: v for k, v in kwargs.items() if k != "num_items_in_batch"}
    if isinstance(model_loss, torch.Tensor) and "labels" in kwargs:
        loss = LossSpec("model", target=kwargs["labels"])
    elif state.losses:
        match = [c for c in state.losses if c[5] == state.backward] or state.losses
        name, extra, target, shape, site, _ = match[-1]
        loss = LossSpec(name, extra, target, input_shape=shape, site=site)
    setup = resolve(model, tuple(args), dict(kwargs), None, None, None, settings, loss=loss)
    setup.optimizer = OptimizerSpec.from_optimizer(state.optimizer, model)
    setup.real_batch = True  # the batch the script trained on
    setup.shuffled = drawn_at_random(state.loaders[-1]) if state.loaders else None
    return setup


def _picklable(setup: Setup) -> Any:
    target = setup.loss.target if setup.loss is not None else None
    batch = Batch(setup.args, setup.kwargs, "training script", target, shuffled=setup.shuffled)
    try:
        pickle.dumps(batch)
    except Exception:
        return None
    return batch


def _not_found(state: State, settings: Any) -> str:
    """Why no model could be taken from the run, in words the user can act on."""
    name = TargetSpec.parse(settings.model).attr.split(".")[-1]
    made = state.candidates()
    if not made:
        return f"it never built {name} (--model {settings.model}) before its first optimizer step"
    if any(hasattr(m, "training_step") for m in made):
        return (
            f"its {name} was never called before its first optimizer step: its training_step "
            "calls a submodule itself; name that submodule's class or factory with --model"
        )
    return f"it built {name} but never called it before its first optimizer step"


def _site(state: State, model: Any, script: Path) -> Site | None:
    """The line that defines what built `model`, when `--model` names the script itself:
    the named class (a submodule its `training_step` calls is checked in its name)."""
    if state.factory is not None:
        return Site(state.factory.co_filename, state.factory.co_firstlineno)
    model = state.models[0] if state.models else model
    if type(model).__module__ != "__main__":
        return definition_site(type(model), model)
    # inspect would look in nnlint's own __main__, which runpy has put back
    pattern = re.compile(rf"class\s+{re.escape(type(model).__name__)}\b")
    lines = script.read_text(encoding="utf-8", errors="replace").splitlines()
    hits = [n for n, text in enumerate(lines, 1) if pattern.match(text)]
    return Site(str(script), hits[0]) if hits else None


def _kwargs_note(state: State, setup: Setup, script: Path, settings: Any) -> list[Finding]:
    """`--model-kwargs` is for a model nnlint builds: where the script built its own,
    the checks ran on that one, and the user hears that the flag was not applied."""
    kwargs = getattr(settings, "model_kwargs", None)
    if not kwargs:
        return []
    path, line, column = state.made_at.get(id(setup.model), (str(script), 1, 1))
    name = TargetSpec.parse(settings.model).attr.split(".")[-1]
    return [
        ScriptNotRun.make(
            display_path(Path(path), Path(settings.root)),
            line,
            column,
            outcome="used as it is",
            reason=f"it calls {name}(...) itself, so --model-kwargs was not applied; "
            "the checks ran on the model it built (--no-capture checks the model "
            "built from --model-kwargs instead)",
        )
    ]


def _cuda_note(cuda: CudaOnCpu | None, script: Path, settings: Any) -> list[Finding]:
    if cuda is None or not cuda.asked:
        return []
    path, line = cuda.site or (str(script), 1)
    return [
        ScriptNotRun.make(
            display_path(Path(path), Path(settings.root)),
            line,
            outcome="run on the CPU",
            reason="it asks for CUDA here and this machine has none; "
            "its first step was taken on the CPU instead",
        )
    ]


def _graph_phase(
    setup: Setup, captured: Batch | None, script: Path, rules: list, settings: Any, site: Site
) -> list[Finding]:
    """The graph findings for the model as the script built it, on its first batch."""
    batch, reason = provide_batch(setup.model, settings, captured)
    found: list[Finding] = []
    if batch is None:
        found.append(
            NoInputs.make(display_path(Path(site.path), settings.root), site.line, reason=reason)
        )
    # The loss the script was seen calling outranks a reading of its source, which
    # cannot tell which branch of `A() if flag else B()` runs.
    spec = setup.loss
    if spec is not None and not spec.synthesized and (spec.name != "model" or spec.computes):
        loss = loss_kind_named(spec.computes if spec.name == "model" else spec.name)
    else:
        loss = loss_kind_in_script(script)
    found.extend(run_graph_phase(setup.model, batch, loss, rules, settings, site))
    return found

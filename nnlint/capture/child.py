"""Inside the forked child: run the training script with its training setup intercepted.

Caught: the `--model` instance (the named class or factory is patched in
its module before the script imports it, and classes of that name defined in
`__main__` are caught as they are built), its first call's arguments, the
losses from `torch.nn.functional` applied outside the model (or the model's
own `.loss`), the tensor `backward()` ran on, and the optimizer at its first
step, where the script is stopped.

Before the script runs, the child is contained (`nnlint.setup.contain`): the
project, the home folder and the script's folder are overlaid, so whatever the
script writes, by any means, lands in the run's scratch folder and the user's
files stay as they were. Where the kernel offers less, the audit hooks of
`nnlint.setup.sandbox` refuse the writes instead.
"""

from __future__ import annotations

import functools
import os
import pickle
import runpy
import signal
import sys
import tempfile
import traceback
import types
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.optim.optimizer import register_optimizer_step_pre_hook

from nnlint.core.config import WALL_FACTOR
from nnlint.core.diagnostics import one_line
from nnlint.core.notebook import compile_notebook, is_notebook
from nnlint.dynamic.phase import dynamic_phase
from nnlint.setup.contain import Protection, contain
from nnlint.setup.inputs import Batch
from nnlint.setup.load import TargetSpec
from nnlint.setup.resolve import resolve
from nnlint.setup.sandbox import cache_dirs, guarded
from nnlint.setup.sites import Site, recording, user_frame, user_site
from nnlint.setup.specs import KNOWN_LOSSES, LossSpec, OptimizerSpec, Setup
from nnlint.setup.tensors import map_tensors


class StepReached(BaseException):
    """Raised at the first optimizer step to stop the script."""


class CaptureTimeout(BaseException):
    """The script did not reach its first step in time."""


class State:
    def __init__(self) -> None:
        self.models: list[Any] = []
        self.calls: dict[int, tuple] = {}
        self.outputs: dict[int, Any] = {}
        self.losses: list[tuple] = []
        self.backward: Any = None
        self.optimizer: Any = None
        self.depth = 0
        self.undo: list[Any] = []
        self.guard: Any = None


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
    reason, line = _run_script(script, settings, state, sandbox, protection)
    if reason is not None:
        send(fd, ("failed", reason, line))
        return
    try:
        setup = _setup(state, settings)
    except Exception as exc:  # the user's forward or loss on the captured batch
        send(fd, ("failed", f"replaying its first batch raised {one_line(exc)}", 1))
        return
    if setup is None:
        send(fd, ("failed", "nnlint could not tell which module was the --model", 1))
        return
    send(fd, ("captured", _picklable(setup)))
    sys.stderr = os.fdopen(saved_err, "w")
    timings: dict[str, float] = {}
    site = user_site(model_site, Site(str(script), 1))
    insights: dict = {}
    found = dynamic_phase(setup, rules, settings, site, timings, insights)
    send(fd, ("done", found, timings, setup.describe(), insights))


def project_dirs(script: Path, settings: Any) -> list[str]:
    """The folders a script may write to as it would outside nnlint, onto a copy."""
    return [str(settings.root), str(Path.home()), str(script.parent), os.getcwd()]


def _run_script(
    script: Path, settings: Any, state: State, sandbox: str, protection: Protection
) -> tuple[str | None, int]:
    os.chdir(script.parent)
    sys.path.insert(0, str(script.parent))
    sys.argv = [str(script)]
    tempfile.tempdir = sandbox
    os.environ["TMPDIR"] = sandbox
    _patch_model(settings.model, state)
    _patch_losses(state)
    _patch_backward(state)
    if not (protection.copy_on_write and "landlock" in protection.layers):
        # the kernel holds only part of the line: refuse in Python what it does not
        project = [str(settings.root), str(script.parent), os.getcwd()]
        state.guard = guarded(  # referenced for the child's life
            sandbox, *protection.overlaid, shared=cache_dirs(), protect=project
        )
        state.guard.__enter__()
    hook = register_optimizer_step_pre_hook(_stop_at_step(state))

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
        with recording():
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
        hook.remove()
        for undo in reversed(state.undo):
            undo()
    return "it finished without calling optimizer.step()", 1


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


def _patch_model(text: str, state: State) -> None:
    spec = TargetSpec.parse(text)
    holder, leaf = sys.modules.get(spec.module_name), spec.attr.split(".")[-1]
    for part in spec.attr.split(".")[:-1]:
        holder = getattr(holder, part, None)
    target = getattr(holder, leaf, None) if holder is not None else None
    if isinstance(target, type) and issubclass(target, torch.nn.Module):
        original_init = target.__init__

        @functools.wraps(original_init)
        def init(self: Any, *args: Any, **kwargs: Any) -> None:
            original_init(self, *args, **kwargs)
            _catch(self, state)

        target.__init__ = init
        state.undo.append(lambda: setattr(target, "__init__", original_init))
    elif callable(target) and holder is not None:

        @functools.wraps(target)
        def factory(*args: Any, **kwargs: Any) -> Any:
            made = target(*args, **kwargs)
            if isinstance(made, torch.nn.Module):
                _catch(made, state)
            return made

        setattr(holder, leaf, factory)
        state.undo.append(lambda: setattr(holder, leaf, target))
    module_init = torch.nn.Module.__init__

    def any_init(self: Any, *args: Any, **kwargs: Any) -> None:
        module_init(self, *args, **kwargs)
        if type(self).__name__ == leaf and type(self).__module__ == "__main__":
            _catch(self, state)

    torch.nn.Module.__init__ = any_init
    state.undo.append(lambda: setattr(torch.nn.Module, "__init__", module_init))


def _catch(model: Any, state: State) -> None:
    if any(m is model for m in state.models):
        return
    state.models.append(model)

    def before(module: Any, args: tuple, kwargs: dict) -> None:
        state.depth += 1
        if id(module) not in state.calls:
            snapshot = map_tensors((args, kwargs), lambda t: t.detach().clone())
            state.calls[id(module)] = snapshot

    def after(module: Any, _args: tuple, _kwargs: dict, output: Any) -> None:
        state.depth -= 1
        state.outputs.setdefault(id(module), output)

    handles = (
        model.register_forward_pre_hook(before, with_kwargs=True),
        model.register_forward_hook(after, with_kwargs=True),
    )
    state.undo.extend(h.remove for h in handles)


def _patch_losses(state: State) -> None:
    for name in KNOWN_LOSSES:
        original = getattr(F, name)

        def wrapper(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            result = _original(*args, **kwargs)
            if state.depth == 0 and len(args) >= 2 and isinstance(args[0], torch.Tensor):
                frame = user_frame(sys._getframe(1))
                site = (frame.f_code.co_filename, frame.f_lineno) if frame else None
                extra = {k: v for k, v in kwargs.items() if v is not None}
                target = args[1].detach().clone() if isinstance(args[1], torch.Tensor) else args[1]
                state.losses.append((_name, extra, target, tuple(args[0].shape), site, id(result)))
            return result

        setattr(F, name, functools.wraps(original)(wrapper))
        state.undo.append(lambda n=name, o=original: setattr(F, n, o))


def _patch_backward(state: State) -> None:
    original = torch.Tensor.backward

    def backward(self: Any, *args: Any, **kwargs: Any) -> Any:
        state.backward = id(self)
        return original(self, *args, **kwargs)

    torch.Tensor.backward = backward
    state.undo.append(lambda: setattr(torch.Tensor, "backward", original))


def _stop_at_step(state: State) -> Any:
    def hook(optimizer: Any, _args: Any, _kwargs: Any) -> None:
        state.optimizer = optimizer
        raise StepReached()

    return hook


def _setup(state: State, settings: Any) -> Setup | None:
    called = [m for m in state.models if id(m) in state.calls]
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
    if isinstance(model_loss, torch.Tensor) and "labels" in kwargs:
        loss = LossSpec("model", target=kwargs["labels"])
    elif state.losses:
        match = [c for c in state.losses if c[5] == state.backward] or state.losses
        name, extra, target, shape, site, _ = match[-1]
        loss = LossSpec(name, extra, target, input_shape=shape, site=site)
    setup = resolve(model, tuple(args), dict(kwargs), None, None, None, settings, loss=loss)
    setup.optimizer = OptimizerSpec.from_optimizer(state.optimizer, model)
    return setup


def _picklable(setup: Setup) -> Any:
    target = setup.loss.target if setup.loss is not None else None
    batch = Batch(setup.args, setup.kwargs, "training script", target)
    try:
        pickle.dumps(batch)
    except Exception:
        return None
    return batch

"""The model phases in order: setup, then (capture), graph, dynamic.

`run_model_phases` loads the model (unless `nnlint.check` gave one), runs the
training script up to its first optimizer step where there is one
(`nnlint.capture`: the dynamic checks then run in the capture child, on the
objects it intercepted), finds a batch, runs the graph phase, and runs the
dynamic phase itself when the capture did not. From the command line all of
it runs in the contained model child of `nnlint.capture.isolated`, each stage
under the time bounds of `nnlint.setup.bounds`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnlint.capture.isolated import Progress, run_isolated
from nnlint.capture.parent import CHECKS_LIMIT, learn_from_script
from nnlint.core.config import WALL_FACTOR
from nnlint.core.diagnostics import CheckSkipped, NoInputs, one_line
from nnlint.core.errors import UsageError
from nnlint.core.files import display_path
from nnlint.core.finding import Finding, Phase
from nnlint.core.merge import one_per_line
from nnlint.dynamic.phase import dynamic_phase
from nnlint.graph.phase import run_graph_phase
from nnlint.script.losses import loss_kind, loss_kind_in_script, loss_kind_named
from nnlint.setup.bounds import Bounds, Stopped
from nnlint.setup.contain import Protection
from nnlint.setup.inputs import Batch, as_batch, channels_last_hint, provide_batch
from nnlint.setup.load import (
    TargetSpec,
    build_model,
    definition_site,
    import_target,
    require_torch,
    search_dirs,
)
from nnlint.setup.preserve import global_rngs
from nnlint.setup.resolve import resolve
from nnlint.setup.sandbox import cache_dirs, guarded
from nnlint.setup.sites import (
    Site,
    is_library_file,
    raised_in,
    recording,
    short_path,
    user_site,
)
from nnlint.setup.specs import LossSpec, loss_from_spec


@dataclass
class CallerObjects:
    """What `nnlint.check` was handed; all None from the command line."""

    model: Any = None
    batch: Any = None
    loss_fn: Any = None
    optimizer: Any = None
    site: Site | None = None  # the user's line that called nnlint.check


@contextlib.contextmanager
def user_output(verbose: bool) -> Iterator[None]:
    """Keep what the user's code prints out of nnlint's report on stdout.

    What the model's code prints while it is imported and run goes to stderr
    under `--verbose` and is dropped otherwise, so a JSON or SARIF report on
    stdout stays one whole document.
    """
    with contextlib.redirect_stdout(sys.stderr if verbose else io.StringIO()):
        yield


def run_model_phases(
    settings: Any,
    rules: list,
    timings: dict[str, float],
    caller: CallerObjects | None = None,
    about: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> list[Finding]:
    """The graph and dynamic findings for the `--model` (or the model `nnlint.check` was handed).

    From the command line, all of it runs in a contained child process
    (`nnlint.capture.isolated`). A model handed to `nnlint.check` lives in the
    caller's process and is checked there, with writes outside a temporary
    directory refused. `about` receives how the code was contained
    (`protection`, `protection_detail`) and the training setup the dynamic
    checks used (`setup`: task and loss, and what chose them). `progress`, called
    in this process, hears of each stage of the contained child (it never prints
    itself: the command line shows it).
    """
    caller = caller or CallerObjects()
    about = {} if about is None else about
    if caller.model is None and hasattr(os, "fork"):
        work = functools.partial(_contained, settings, rules)
        return run_isolated(work, settings, model_dirs(settings), timings, about, progress)
    cwd = os.getcwd()  # model code may chdir; nnlint's own paths are relative to it
    try:
        with tempfile.TemporaryDirectory(prefix="nnlint-") as sandbox, _guard(settings, sandbox):
            with global_rngs():
                return _run_phases(settings, rules, timings, caller, about, sandbox, Bounds())
    finally:
        os.chdir(cwd)


def _contained(
    settings: Any,
    rules: list,
    bounds: Bounds,
    protection: Protection,
    sandbox: str,
    timings: dict[str, float],
    about: dict[str, Any],
) -> list[Finding]:
    """In the contained child: the model phases, refusing in Python what the kernel does not."""
    whole = protection.copy_on_write and "landlock" in protection.layers
    with contextlib.nullcontext() if whole else _guard(settings, sandbox, *protection.overlaid):
        return _run_phases(settings, rules, timings, CallerObjects(), about, sandbox, bounds)


def _guard(settings: Any, sandbox: str, *also: str) -> Any:
    return guarded(
        sandbox,
        *also,
        shared=[tempfile.gettempdir(), *cache_dirs()],
        protect=project(settings),
    )


def project(settings: Any) -> list[str]:
    """The user's folders: never writable, even where they lie under the temp folder."""
    dirs = [os.getcwd(), *map(str, search_dirs(settings))]
    module = (getattr(settings, "model", None) or "").rpartition(":")[0]
    if module and TargetSpec(module, module, "").is_file:
        dirs.append(os.path.dirname(os.path.abspath(module)))
    return dirs


def model_dirs(settings: Any) -> list[str]:
    """What the model child overlays: the user's folders and the home folder."""
    return [*project(settings), str(Path.home())]


@contextlib.contextmanager
def script_argv(settings: Any) -> Iterator[None]:
    """`sys.argv` as the training script sees it, while user code is imported."""
    saved = sys.argv
    if getattr(settings, "script", None):
        sys.argv = [str(settings.script), *settings.script_args]
    try:
        yield
    finally:
        sys.argv = saved


def _target(settings: Any) -> tuple[TargetSpec, Any]:
    """The `--model` spec and the object it names; None where that object is the
    training script's own, which only its run (or the fallback) imports."""
    spec = TargetSpec.parse(settings.model)
    search = search_dirs(settings)
    script = Path(settings.script).resolve() if getattr(settings, "script", None) else None
    module = Path(spec.module) if spec.is_file else Path(*spec.module.split(".")).with_suffix(".py")
    places = [module] if spec.is_file else [folder / module for folder in search]
    if script is not None and any(p.resolve() == script for p in places):
        return spec, None
    with recording(), script_argv(settings):
        return spec, import_target(spec, search)


def _check_loss(settings: Any) -> None:
    """A `--loss module:fn` that cannot be imported or built is a usage error, as a
    `--model` is, also where the training script's own loss will be the one used."""
    text = getattr(settings, "loss", None) or ""
    if ":" not in text:
        return  # a loss by name: checked before anything ran
    with recording(), script_argv(settings):
        try:
            loss_from_spec(text)
        except UsageError:
            raise
        except Exception as exc:  # the user's loss class raising as it is built
            raise UsageError(f"--loss {text!r}: building it raised {one_line(exc)}") from None


def _load(
    settings: Any, caller: CallerObjects, spec: TargetSpec | None, target: Any
) -> tuple[Any, Site | None]:
    """The model and its class line: the one given, else built from `--model`."""
    if caller.model is not None:
        return caller.model, definition_site(caller.model, caller.model)
    with recording(), script_argv(settings):
        if target is None:
            target = import_target(spec, search_dirs(settings))
        model = build_model(spec, target, settings.model_kwargs)
    if getattr(settings, "device", "cpu") != "cpu":
        model.to(settings.device)
    return model, definition_site(target, model)


def _run_phases(
    settings: Any,
    rules: list,
    timings: dict[str, float],
    caller: CallerObjects,
    about: dict[str, Any],
    sandbox: str,
    bounds: Bounds,
) -> list[Finding]:
    """The training script's run first: where it gives the model it built, the
    graph and dynamic phases ran there; else the model is built here."""
    findings: list[Finding] = []
    budget = float(settings.capture_timeout)
    model_site = None
    try:
        start = time.perf_counter()
        spec, target = None, None
        if caller.model is None:
            require_torch()
            with bounds.stage("importing the model", budget):
                spec, target = _target(settings)
                _check_loss(settings)
        timings["load"] = time.perf_counter() - start
        script_run = None
        if caller.model is None and caller.batch is None:
            model_site = definition_site(target, target) if target is not None else None
            if model_site is not None:
                bounds.located(display_path(Path(model_site.path), settings.root), model_site.line)
            wait = budget * WALL_FACTOR + 2 * CHECKS_LIMIT * WALL_FACTOR
            with bounds.stage("running the training script", None, wait):
                script_run = learn_from_script(
                    settings, rules, model_site, timings, sandbox, bounds.show
                )
            if script_run is not None:
                findings.extend(script_run.notes)
                if script_run.protection is not None:
                    about["protection"] = script_run.protection
                    about["protection_detail"] = script_run.protection_detail or ""
                if script_run.findings is not None:  # checked on the model the script built
                    timings.update(script_run.timings)
                    if script_run.setup is not None:
                        about["setup"] = script_run.setup
                    if script_run.stats:
                        about["stats"] = script_run.stats
                    return _placed(findings + script_run.findings, settings, caller, model_site)

        start = time.perf_counter()
        with bounds.stage("importing and building the model", budget):
            try:
                model, model_site = _load(settings, caller, spec, target)
            except UsageError as exc:
                raise UsageError(_with_run(str(exc), script_run)) from None
        timings["load"] += time.perf_counter() - start
        if model_site is not None:
            bounds.located(display_path(Path(model_site.path), settings.root), model_site.line)
        if not any(r.kind in (Phase.GRAPH, Phase.DYNAMIC) for r in rules):
            return _placed(findings, settings, caller, model_site)
        captured = script_run.batch if script_run is not None else None

        start = time.perf_counter()
        with bounds.stage("running the model's forward", budget):
            found, batch = _graph(model, settings, caller, captured, rules, model_site)
        findings.extend(found)
        timings["graph"] = time.perf_counter() - start

        with bounds.stage("running the dynamic checks", None, CHECKS_LIMIT * WALL_FACTOR):
            bounds.show(None)  # they show their own progress bar
            found = _dynamic_here(model, batch, caller, rules, settings, model_site, timings, about)
        findings.extend(found)
    except Stopped as stop:
        where = model_site or _module_site(settings) or Site(str(settings.root / "<model>"), 1)
        path = display_path(Path(where.path), settings.root)
        note = CheckSkipped.make(
            path, where.line, rule="graph and dynamic checks", reason=stop.reason
        )
        findings.append(note)
    return _placed(findings, settings, caller, model_site)


def _module_site(settings: Any) -> Site | None:
    """The first line of the `--model` file, where nothing better is known (its import
    did not finish)."""
    spec = TargetSpec.parse(settings.model) if getattr(settings, "model", None) else None
    if spec is None or not spec.is_file:
        return None
    return Site(os.path.abspath(spec.module), 1)


def _placed(
    findings: list[Finding], settings: Any, caller: CallerObjects, model_site: Site | None
) -> list[Finding]:
    """Findings that never point into a library, one per rule and line.

    A finding at a line of torch or an installed package (a module a library's
    helper built, a library model's class) moves to the model's line in the
    user's code, else to the line that called `nnlint.check`, with the library's
    line as a note; then the findings of one rule about modules built at one
    line become one (`one_per_line`).
    """
    root = Path(settings.root)
    default = caller.site or Site(str(root / "<model>"), 1)
    home = user_site(model_site, default)
    placed = []
    for f in findings:
        if caller.site is not None and os.path.basename(f.path) == "<model>":
            site = caller.site  # no line of the user's own: the one that called nnlint.check
            f = dataclasses.replace(f, path=display_path(Path(site.path), root), line=site.line)
        elif is_library_file(f.path):
            note = f"in {short_path(f.path)}:{f.line}"
            path = display_path(Path(home.path), root)
            f = dataclasses.replace(
                f,
                path=path,
                line=home.line,
                column=1,
                end_line=None,
                end_column=None,
                note=f"{f.note}; {note}" if f.note else note,
                fix=None,
            )
        placed.append(f)
    return one_per_line(placed)


def _with_run(error: str, script_run: Any) -> str:
    """A model nnlint cannot build, with why the script that builds it did not either."""
    reason = getattr(script_run, "reason", None)
    return error if reason is None else f"{error} (the training script was not used: {reason})"


def _graph(
    model: Any,
    settings: Any,
    caller: CallerObjects,
    captured: Any,
    rules: list,
    model_site: Site | None,
) -> tuple[list[Finding], Batch | None]:
    """The graph findings, and the batch they were found on (None: NN005 says why)."""
    findings = []
    batch, reason = _batch(model, settings, caller, captured)
    if batch is None:
        where = model_site or Site(str(settings.root / "<model>"), 1)
        path = display_path(Path(where.path), settings.root)
        findings.append(NoInputs.make(path, where.line, reason=reason))
    if isinstance(caller.loss_fn, LossSpec):
        spec = caller.loss_fn
        loss = loss_kind_named(spec.computes if spec.name == "model" else spec.name)
    elif caller.loss_fn is not None:
        loss = loss_kind(caller.loss_fn)
    else:
        loss = loss_kind_in_script(settings.script)
    findings.extend(run_graph_phase(model, batch, loss, rules, settings, model_site))
    return findings, batch


def _batch(
    model: Any, settings: Any, caller: CallerObjects, captured: Any
) -> tuple[Batch | None, str | None]:
    if caller.batch is not None:
        return as_batch(caller.batch, model, "the batch given to nnlint.check"), None
    return provide_batch(model, settings, captured)


def _dynamic_here(
    model: Any,
    batch: Batch | None,
    caller: CallerObjects,
    rules: list,
    settings: Any,
    model_site: Site | None,
    timings: dict[str, float],
    about: dict[str, Any],
) -> list[Finding]:
    """The dynamic phase in this process, on `batch`; `about["stats"]` for `--report`."""
    if batch is None or not settings.dynamic or not any(r.kind is Phase.DYNAMIC for r in rules):
        return []
    start = time.perf_counter()
    site = user_site(model_site, Site(str(Path(settings.root) / "<model>"), 1))
    try:
        setup = resolve(
            model,
            batch.args,
            batch.kwargs,
            batch.target,
            caller.loss_fn,
            caller.optimizer,
            settings,
        )
    except UsageError:
        raise
    except Exception as exc:  # the user's forward on their batch: theirs to see, not a crash
        reason = f"the model's forward on {batch.origin} raised {one_line(exc)}"
        reason += channels_last_hint(exc)
        at = user_site(raised_in(exc), site)
        path = display_path(Path(at.path), settings.root)
        return [NoInputs.make(path, at.line, reason=reason)]
    setup.real_batch = not batch.made_up
    setup.shuffled = batch.shuffled
    about["setup"] = setup.describe()
    insights: dict[str, Any] = {}
    found = dynamic_phase(setup, rules, settings, site, timings, insights)
    if insights:
        about["stats"] = insights
    timings["dynamic"] = time.perf_counter() - start
    return found

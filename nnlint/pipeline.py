"""The model phases in order: setup, then (capture), graph, dynamic.

`run_model_phases` loads the model (unless `nnlint.check` gave one), runs the
training script up to its first optimizer step where there is one
(`nnlint.capture`: the dynamic checks then run in the child, on the objects it
intercepted), finds a batch, runs the graph phase, and runs the dynamic phase
in this process when the capture did not.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnlint.capture.parent import learn_from_script
from nnlint.core.diagnostics import NoInputs, one_line
from nnlint.core.errors import UsageError
from nnlint.core.files import display_path
from nnlint.core.finding import Finding, Phase
from nnlint.dynamic.phase import dynamic_phase
from nnlint.graph.phase import run_graph_phase
from nnlint.script.losses import loss_kind, loss_kind_in_script
from nnlint.setup.inputs import Batch, as_batch, provide_batch
from nnlint.setup.load import (
    TargetSpec,
    definition_site,
    load_model,
    require_torch,
    search_dirs,
)
from nnlint.setup.preserve import global_rngs
from nnlint.setup.resolve import resolve
from nnlint.setup.sandbox import cache_dirs, guarded
from nnlint.setup.sites import Site, recording, user_site


@dataclass
class CallerObjects:
    """What `nnlint.check` was handed; all None from the command line."""

    model: Any = None
    batch: Any = None
    loss_fn: Any = None
    optimizer: Any = None


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
    about: dict[str, str] | None = None,
) -> list[Finding]:
    """The graph and dynamic findings for the `--model` (or the model `nnlint.check` was handed).

    The user's code runs with writes outside a temporary directory refused
    here; the training script runs contained in its own process. `about`
    receives how it was contained (`protection`, `protection_detail`).
    """
    caller = caller or CallerObjects()
    about = {} if about is None else about
    cwd = os.getcwd()  # model code may chdir; nnlint's own paths are relative to it
    try:
        guard = {"shared": [tempfile.gettempdir(), *cache_dirs()], "protect": project(settings)}
        with tempfile.TemporaryDirectory(prefix="nnlint-") as sandbox, guarded(sandbox, **guard):
            with global_rngs():
                return _run_phases(settings, rules, timings, caller, about, sandbox)
    finally:
        os.chdir(cwd)


def project(settings: Any) -> list[str]:
    """The user's folders: never writable, even where they lie under the temp folder."""
    dirs = [os.getcwd(), *map(str, search_dirs(settings))]
    module = (getattr(settings, "model", None) or "").rpartition(":")[0]
    if module and TargetSpec(module, module, "").is_file:
        dirs.append(os.path.dirname(os.path.abspath(module)))
    return dirs


def _load(
    settings: Any, caller: CallerObjects, timings: dict[str, float]
) -> tuple[Any, Site | None]:
    """The model and its class line: the one given, else built from `--model`."""
    start = time.perf_counter()
    if caller.model is not None:
        model, site = caller.model, definition_site(caller.model, caller.model)
    else:
        require_torch()
        with recording():
            loaded = load_model(settings.model, settings.model_kwargs, search_dirs(settings))
        model, site = loaded.model, loaded.site
        if getattr(settings, "device", "cpu") != "cpu":
            model.to(settings.device)
    timings["load"] = time.perf_counter() - start
    return model, site


def _run_phases(
    settings: Any,
    rules: list,
    timings: dict[str, float],
    caller: CallerObjects,
    about: dict[str, str],
    sandbox: str,
) -> list[Finding]:
    model, model_site = _load(settings, caller, timings)
    findings: list[Finding] = []
    if not any(r.kind in (Phase.GRAPH, Phase.DYNAMIC) for r in rules):
        return findings
    script_run, captured = None, None
    if caller.model is None and caller.batch is None:
        script_run = learn_from_script(settings, rules, model_site, timings, sandbox)
        if script_run is not None:
            findings.extend(script_run.notes)
            captured = script_run.batch
            if script_run.protection is not None:
                about["protection"] = script_run.protection
                about["protection_detail"] = script_run.protection_detail or ""

    start = time.perf_counter()
    batch, reason = _batch(model, settings, caller, captured)
    if batch is None:
        where = model_site or Site(str(settings.root / "<model>"), 1)
        path = display_path(Path(where.path), settings.root)
        findings.append(NoInputs.make(path, where.line, reason=reason))
    if caller.loss_fn is not None:
        loss = loss_kind(caller.loss_fn)
    else:
        loss = loss_kind_in_script(settings.script)
    findings.extend(run_graph_phase(model, batch, loss, rules, settings, model_site))
    timings["graph"] = time.perf_counter() - start

    if script_run is not None and script_run.findings is not None:
        findings.extend(script_run.findings)
        timings.update(script_run.timings)
    else:
        findings.extend(_dynamic_here(model, batch, caller, rules, settings, model_site, timings))
    return findings


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
) -> list[Finding]:
    """The dynamic phase in this process, on `batch`."""
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
        path = display_path(Path(site.path), settings.root)
        return [NoInputs.make(path, site.line, reason=reason)]
    found = dynamic_phase(setup, rules, settings, site, timings)
    timings["dynamic"] = time.perf_counter() - start
    return found

"""nnlint's own diagnostics (NN0xx), shared by every phase.

They are rules in the registry, so they can be listed, explained, selected,
ignored and suppressed like any other, but the engine emits them itself.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from typing import Any

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import EngineRule


class InternalError(EngineRule):
    """A rule or a phase of nnlint crashed.

    ## What it does
    Reports a rule that raised an exception; the other rules still run and
    nnlint exits with status 2 at the end.

    ## Why is this bad?
    A crashed rule checked nothing, so its silence means nothing. This is a bug
    in nnlint (or in a plugin): please report it with `--debug` output.

    ## Example
    Any input that makes a rule raise.

    ## Use instead
    Run with `--debug` to see the traceback, and `--ignore` the rule meanwhile.
    """

    code = "NN001"
    name = "internal-error"
    message = "rule {rule} crashed: {error}; run with --debug for the traceback"
    severity = Severity.ERROR


class SyntaxErrorFinding(EngineRule):
    """A file is not valid Python.

    ## What it does
    Reports the first syntax error of a file; the other files are still linted.

    ## Why is this bad?
    No rule can read a file that does not parse, and Python will not run it.

    ## Example
    ```python
    for batch in loader
        loss.backward()
    ```

    ## Use instead
    ```python
    for batch in loader:
        loss.backward()
    ```
    """

    code = "NN002"
    name = "syntax-error"
    message = "syntax error: {error}"
    severity = Severity.ERROR


class UnreadableFile(EngineRule):
    """A file cannot be read or decoded as Python source.

    ## What it does
    Reports files that are binary, not decodable in their declared encoding
    (PEP 263, UTF-8 by default), or that the operating system refuses to read,
    and folders of a walk that it refuses to list.

    ## Why is this bad?
    nnlint skipped the file or folder, so nothing in it was checked.

    ## Example
    A `.py` file saved as Latin-1 with no coding declaration.

    ## Use instead
    Save it as UTF-8, or declare its encoding: `# -*- coding: latin-1 -*-`.
    Where permission is denied, give the user running nnlint read access to
    the file, and read and search (`chmod u+rx`) access to its folders, or
    leave the folder out with `exclude`.
    """

    code = "NN003"
    name = "unreadable-file"
    message = "cannot read {kind}: {error}"
    severity = Severity.ERROR


class CaptureFailed(EngineRule):
    """The model's graph could not be captured.

    ## What it does
    Reports why neither recording a forward nor tracing with torch.fx worked;
    the graph rules are skipped and the other phases go on.

    ## Why is this bad?
    The structural checks of the model did not run.

    ## Example
    A forward that raises on the example input.

    ## Use instead
    Give a real batch with `--data module:fn`, or fix the error in the message.
    """

    code = "NN004"
    name = "capture-failed"
    message = "could not capture the model graph: {reason}"


class NoInputs(EngineRule):
    """No example input could be built for the model.

    ## What it does
    Reports that nnlint found no batch: none from `--data`, none captured from
    the training script, no `example_inputs` on the model, and synthesis from
    its first layer failed. Rules that need a forward are skipped.

    ## Why is this bad?
    Shape-aware graph rules and every dynamic check need a real input.

    ## Example
    A model whose first layer is a custom module taking a dict.

    ## Use instead
    Pass `--data module:fn` returning a batch, or `--input-shape 3,32,32`.
    """

    code = "NN005"
    name = "no-inputs"
    message = "no input for the model: {reason}; pass --data module:fn or --input-shape"


class ScriptNotRun(EngineRule):
    """The training script could not be used to learn the training setup, or not as it is.

    ## What it does
    Reports why the run of the training script stopped before its first
    optimizer step (it needs a dataset or the network, exited, hung, or its
    training framework kept its first batch out of reach). nnlint falls back
    to `--data` and `--task`. A script that asks for CUDA on a machine
    without it is run on the CPU instead, and this note names the line.

    ## Why is this bad?
    The dynamic checks then use a synthesized batch and a guessed loss, not
    the ones you train with.

    ## Example
    A script that downloads MNIST on start.

    ## Use instead
    Make the script runnable offline (pass it arguments with `--script-args`),
    or pass `--data`, `--loss` and `--task`.
    """

    code = "NN006"
    name = "script-not-run"
    message = "training script {outcome}: {reason}"


class CheckSkipped(EngineRule):
    """A check could not apply, or ran out of time.

    ## What it does
    Reports a dynamic or graph check that was skipped and why (no labels, no
    causal structure, its time budget ran out).

    ## Why is this bad?
    It is not: it says what was not checked.

    ## Example
    The causal-leak check on an image classifier.

    ## Use instead
    Nothing to change; raise the time budget if a check timed out.
    """

    code = "NN007"
    name = "check-skipped"
    message = "{rule} skipped: {reason}"


class InvalidSuppression(EngineRule):
    """A suppression comment names an nnlint code or rule that does not exist.

    ## What it does
    Reports `# noqa: NN999` or `# nnlint: disable=no-such-rule`. Codes of
    other tools (`# noqa: E501`) are left alone. Off by default.

    ## Why is this bad?
    The comment suppresses nothing; often it is a typo of the code you meant.

    ## Example
    ```python
    optimizer.step()  # noqa: NN2001
    ```

    ## Use instead
    ```python
    optimizer.step()  # noqa: NN201
    ```
    """

    code = "NN008"
    name = "invalid-suppression"
    message = "suppression names unknown nnlint code {token!r}"
    severity = Severity.WARNING
    default_enabled = False


class NotAnalysed(EngineRule):
    """A valid file that the script phase cannot analyse.

    ## What it does
    Reports a file that Python compiles but that nnlint leaves out: nested
    too deeply for its parser (a generated expression thousands of terms
    long), or written in a form libcst's parser does not accept. The other
    files are still linted.

    ## Why is this bad?
    It is not a bug in the file: it says that no script rule checked it.

    ## Example
    A generated file holding `x = a + a + a + ...` with 10,000 terms.

    ## Use instead
    Nothing to change; exclude generated files with `exclude = [...]`.
    """

    code = "NN009"
    name = "file-not-analysed"
    message = "script rules skipped: {reason}"


ENGINE_RULES = (
    InternalError,
    SyntaxErrorFinding,
    UnreadableFile,
    CaptureFailed,
    NoInputs,
    ScriptNotRun,
    CheckSkipped,
    InvalidSuppression,
    NotAnalysed,
)


def one_line(exc: BaseException) -> str:
    """`Type: first line of the message`, for a finding that reports an exception."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def run_rule(rule: Any, ctx: Any, display: str, debug: bool = False) -> Iterator[Finding]:
    """Run one rule of any kind; a crash becomes an NN001 finding instead of stopping the run.

    `display` is the path the NN001 finding points at (the file, or the model's source).
    """
    try:
        found = list(rule.check(ctx))
    except Exception as exc:
        yield InternalError.make(
            display,
            1,
            1,
            rule=f"{rule.code} ({rule.name})",
            error=f"{type(exc).__name__}: {exc}",
            note=traceback.format_exc() if debug else None,
        )
        return
    yield from found

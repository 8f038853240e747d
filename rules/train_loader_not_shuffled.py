from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import Option, ScriptRule
from nnlint.script import edits
from nnlint.script.cstwalk import is_name
from nnlint.script.loaders import ITERABLE, loaders


class TrainLoaderNotShuffled(ScriptRule):
    """A training `DataLoader` reads its dataset in the same order every epoch.

    ## What it does
    Flags a `DataLoader` built for training (kept as `train_loader`, or
    reading `train_set`) with neither `shuffle=` nor a `sampler`. An
    evaluation loader built with `shuffle=True` is reported at info severity.

    ## Why is this bad?
    Without shuffling every epoch sees the batches in the same order, and in
    the dataset's storage order, which is often sorted by class or by source:
    each batch then holds one class, the gradients swing from class to class
    and the model ends up fitted to the last ones it saw. Shuffling an
    evaluation loader does no harm to the metrics but makes runs harder to
    compare and per-sample outputs harder to line up.

    ## Example
    ```python
    train_loader = DataLoader(train_set, batch_size=64)
    test_loader = DataLoader(test_set, batch_size=256, shuffle=True)
    ```

    ## Use instead
    ```python
    train_loader = DataLoader(train_set, batch_size=64, shuffle=True)
    test_loader = DataLoader(test_set, batch_size=256)
    ```

    ## Fix
    Unsafe (the batches then come in another order each run): `shuffle=True`
    is added after the training loader's last argument. A call that passes
    `*args` or `**kwargs` has no fix.

    ## Known problems
    The role of a loader is read from its names; a loader whose names say
    neither training nor evaluation is left alone, and so are files with
    iterable (streamed) datasets, which cannot be shuffled by the loader.
    An explicit `shuffle=False` on a training loader is taken as deliberate.
    `eval_shuffle` is off by default: in the real scripts of nnlint's
    benchmark every shuffled evaluation loader was shuffled on purpose (to
    show a different sample of images or validation batches each time).
    """

    needs_all = ("torch", "DataLoader")
    code = "NN217"
    name = "train-loader-not-shuffled"
    message = "{problem}; {fix}"
    severity = Severity.WARNING
    options = {"eval_shuffle": Option(False, "also report `shuffle=True` on evaluation loaders")}

    invalid = (
        """
import torch
from torch.utils.data import DataLoader
train_loader = DataLoader(train_set, batch_size=64, num_workers=4)
""",
        """
import torch
from torch.utils import data
loaders = {"train": data.DataLoader(dataset, batch_size=64, drop_last=True)}
""",
    )
    fixes = (
        (
            """
import torch
from torch.utils.data import DataLoader
train_loader = DataLoader(
    train_set,
    batch_size=64,
)
""",
            """
import torch
from torch.utils.data import DataLoader
train_loader = DataLoader(
    train_set,
    batch_size=64, shuffle=True,
)
""",
        ),
    )
    valid = (
        """
import torch
from torch.utils.data import DataLoader
train_loader = DataLoader(train_set, batch_size=64, shuffle=True)
val_loader = DataLoader(val_set, batch_size=256)
sampled = DataLoader(train_set, batch_size=64, sampler=sampler)
test_loader = DataLoader(test_set, batch_size=256, shuffle=True)
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        if any(word in ctx.source for word in ITERABLE):
            return
        for loader in loaders(ctx):
            if loader.role == "train" and not any(
                loader.given(k) for k in ("shuffle", "sampler", "batch_sampler")
            ):
                yield ctx.report(
                    self,
                    loader.call,
                    problem="this training DataLoader never shuffles: every epoch sees the "
                    "batches in the same order",
                    fix="pass `shuffle=True` (or a sampler)",
                    autofix=_shuffled(ctx, loader.call),
                )
            elif (
                self.settings["eval_shuffle"]
                and loader.role == "eval"
                and is_name(loader.arguments.get("shuffle"), "True")
            ):
                yield ctx.report(
                    self,
                    loader.call,
                    problem="this evaluation DataLoader shuffles",
                    fix="evaluation needs no shuffling; drop `shuffle=True`",
                    severity=Severity.INFO,
                )


def _shuffled(ctx, call: cst.Call):
    """`shuffle=True` after the last argument; none where `**kwargs` may already hold it."""
    if not call.args or any(a.star for a in call.args):
        return None
    edit = edits.insert_after(ctx, call.args[-1].value, ", shuffle=True")
    return edits.fix("Pass `shuffle=True`", edit, safe=False)

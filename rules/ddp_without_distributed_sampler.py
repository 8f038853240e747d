from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import ScriptRule
from nnlint.script.loaders import ITERABLE, loaders
from nnlint.script.values import values

_DDP = (
    "torch.nn.parallel.DistributedDataParallel",
    "torch.nn.parallel.distributed.DistributedDataParallel",
)
# Ways to shard the data across ranks other than a sampler argument.
_SHARDED = (*ITERABLE, "DistributedSampler", "accelerator", "prepare_data_loader", "num_replicas")


class DdpWithoutDistributedSampler(ScriptRule):
    """A model trained with DDP reads the whole dataset on every rank.

    ## What it does
    Flags a training `DataLoader` without a `sampler` built in the function
    that wraps the model in `DistributedDataParallel`, in a file that never
    builds a `DistributedSampler`.

    ## Why is this bad?
    Each DDP process runs its own copy of the loader. Without a
    `DistributedSampler` every rank iterates over the full dataset, so the
    ranks train on the same batches (or the same samples in another order):
    an epoch costs N times the data it should, the effective batch is full of
    duplicates, and adding GPUs does not make an epoch any shorter.

    ## Example
    ```python
    model = DistributedDataParallel(model, device_ids=[rank])
    train_loader = DataLoader(train_set, batch_size=64, shuffle=True)
    ```

    ## Use instead
    ```python
    model = DistributedDataParallel(model, device_ids=[rank])
    sampler = DistributedSampler(train_set)
    train_loader = DataLoader(train_set, batch_size=64, sampler=sampler)
    # and call sampler.set_epoch(epoch) at the start of each epoch
    ```

    ## Known problems
    Files that shard in another way (iterable datasets split by rank,
    Accelerate's `prepare`) are left alone; so are loaders whose names do not
    say they are for training.
    """

    needs_all = ("torch", "DataLoader", "DistributedDataParallel")
    code = "NN221"
    name = "ddp-without-distributed-sampler"
    message = (
        "the model is wrapped in DistributedDataParallel but this training DataLoader has no "
        "sampler: every rank reads the whole dataset; pass `sampler=DistributedSampler(dataset)`"
    )
    severity = Severity.WARNING

    invalid = (
        """
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
model = DDP(Net().cuda(rank), device_ids=[rank])
train_loader = DataLoader(train_set, batch_size=64, shuffle=True)
""",
    )
    valid = (
        """
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler
model = DDP(Net().cuda(rank), device_ids=[rank])
sampler = DistributedSampler(train_set)
train_loader = DataLoader(train_set, batch_size=64, sampler=sampler)
""",
        """
import torch
from torch.utils.data import DataLoader
model = torch.nn.DataParallel(Net().cuda())
train_loader = DataLoader(train_set, batch_size=64, shuffle=True)
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        if any(word in ctx.source for word in _SHARDED):
            return
        tracker = values(ctx)
        # Only loaders built in the function that wraps the model: another function's
        # loader may serve a single-process run.
        wrapping = {
            tracker.enclosing(c, cst.FunctionDef)
            for c in tracker.calls
            if ctx.qualified_name_strings(c.func) & set(_DDP)
        }
        for loader in loaders(ctx):
            if (
                loader.role == "train"
                and not loader.given("sampler")
                and not loader.given("batch_sampler")
                and tracker.enclosing(loader.call, cst.FunctionDef) in wrapping
            ):
                yield ctx.report(self, loader.call)

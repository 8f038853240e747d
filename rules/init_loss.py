from __future__ import annotations

import math
from collections.abc import Iterator

from nnlint.core.finding import Finding
from nnlint.core.rule import DynamicRule, Option

_BINARY = ("binary_cross_entropy", "binary_cross_entropy_with_logits")


class InitLoss(DynamicRule):
    """The loss at initialization is far from what a fresh classifier should give.

    ## What it does
    Runs one forward of the real batch and compares the loss with ln C (C
    classes, near-uniform predictions after a default init) and with the
    entropy of the batch's labels (a final bias set from the label prior).
    A loss above ln C or below the label entropy by more than `tolerance`
    (relative) is flagged. Binary losses are judged against ln 2, unless they
    weigh the samples (`pos_weight`, `weight`), which moves the loss at init. A loss
    nnlint had to guess (no target and nothing saying the task) is not judged.

    ## Why is this bad?
    A loss far above ln C means overconfident random predictions, usually
    logits scaled up at init: the first iterations are spent shrinking them (the
    "hockey stick" loss curve). A loss far below means the model already knows
    the labels, which is a leak.

    ## Example
    ```python
    self.head = nn.Linear(128, 10)
    nn.init.normal_(self.head.weight, std=1.0)   # logits of std ~10
    ```

    ## Use instead
    ```python
    self.head = nn.Linear(128, 10)               # default init, or std=0.01
    ```
    """

    code = "NN301"
    name = "init-loss"
    message = "loss at init {measured}, expected {expected}; {hint}"
    options = {"tolerance": Option(0.25, "allowed relative distance from the expected loss")}

    valid = (
        """
import torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
batch = (torch.randn(16, 32), torch.randint(0, 10, (16,)))
loss_fn = torch.nn.functional.cross_entropy
""",
    )
    invalid = (
        """
import torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
torch.nn.init.normal_(model[2].weight, std=3.0)
batch = (torch.randn(16, 32), torch.randint(0, 10, (16,)))
loss_fn = torch.nn.functional.cross_entropy
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        from nnlint.dynamic import probes
        from nnlint.dynamic.context import Skip, guessed_loss, rounded

        loss = ctx.loss
        if loss is None or not (loss.classification or loss.name in _BINARY):
            raise Skip("needs a classification loss")
        if loss.guessed:
            raise Skip(guessed_loss(loss))
        base = ctx.passes()
        if base.loss is None or not math.isfinite(base.loss):
            raise Skip("the loss at init is not finite (see non-finite)")
        if loss.name in _BINARY:
            weighted = [k for k in ("pos_weight", "weight") if loss.kwargs.get(k) is not None]
            if weighted:
                raise Skip(
                    f"the binary loss is weighted ({weighted[0]}): ln(2) is not its value at init"
                )
            classes, labels = 2, None
            target = loss.target
            if target is not None and not loss.synthesized:
                p = float(target.float().mean().clamp(1e-6, 1 - 1e-6))
                prior = -(p * math.log(p) + (1 - p) * math.log(1 - p))
            else:
                prior = math.log(2)
        else:
            probs = probes.class_probabilities(loss, base.output)
            if probs is None:
                raise Skip("no class logits in the output")
            classes = probs.shape[-1]
            labels = None if loss.synthesized else probes.labels(loss)
            prior = (
                _entropy(labels, classes)
                if labels is not None and labels.numel()
                else math.log(classes)
            )
        uniform = math.log(classes)
        tol = self.settings["tolerance"]
        measured = base.loss
        if loss.synthesized and labels is None and loss.name not in _BINARY:
            # Made-up labels: judge the loss averaged over every possible label,
            # which does not depend on which labels were drawn (and is >= ln C).
            measured = float(-probs.clamp_min(1e-12).log().mean())
        if measured > uniform * (1 + tol):
            hint = "the initial logits are too large: scale down the last layer's init"
            expected = f"{rounded(uniform)} = ln({classes}) for near-uniform predictions over {classes} classes"
        elif measured < min(prior, uniform) * (1 - tol):
            hint = "the model predicts its labels before training: check for labels leaking into the input"
            expected = f"at least {rounded(min(prior, uniform))}, the entropy of the batch's labels"
        else:
            return
        yield ctx.report(self, ctx.head(), measured=rounded(measured), expected=expected, hint=hint)


def _entropy(labels, classes: int) -> float:
    import torch

    counts = torch.bincount(
        labels.reshape(-1).long().clamp(0, classes - 1), minlength=classes
    ).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())

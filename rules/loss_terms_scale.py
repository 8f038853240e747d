from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator

from nnlint.core.finding import Finding
from nnlint.core.rule import DynamicRule, Option

# Scalar ops a sum of loss terms is made of: walking them from the loss stays on scalars.
_SUM = ("AddBackward0", "SubBackward0")
_WEIGHT = ("MulBackward0", "DivBackward0", "NegBackward0")
_FRAME = re.compile(r'File "(?P<path>[^"]+)", line (?P<line>\d+), in [^\n]*\n\s*(?P<code>[^\n]*)')


class LossTermsScale(DynamicRule):
    """One term of a loss made of several gets almost none of the gradient.

    ## What it does
    When the loss is a sum of terms (`ce + 0.1 * kl`, `recon + beta * reg`),
    takes the gradient of each term alone (with its weight) at init and
    flags a term whose gradient norm is below `min_share` of the terms'
    total, naming the term that dominates. It reads the sum from the
    autograd graph of the loss: the loss must be one the checks replay whole
    (a `loss_fn` given to `nnlint.check`, `--loss module:fn`, a model's own
    `.loss`). Off by default: a heuristic.

    ## Why is this bad?
    A term with 0.1% of the gradient does almost nothing: the regularizer,
    auxiliary head or reconstruction term you added is switched off in
    practice, usually because the terms are on different scales (a sum over
    pixels against a mean over the batch) or the weight is off by orders of
    magnitude.

    ## Example
    ```python
    def loss_fn(out, y):
        return F.cross_entropy(out, y) + 1e-5 * out.pow(2).mean()
    ```

    ## Use instead
    ```python
    def loss_fn(out, y):
        return F.cross_entropy(out, y) + 0.1 * out.pow(2).mean()
    ```

    ## Known problems
    From a training script nnlint replays the loss function called last, one
    term; the sum is seen only when the loss is given whole. The shares are
    those at init, where a term may be small by design (a KL term that grows
    as the encoder trains).
    """

    code = "NN323"
    name = "loss-terms-scale"
    message = "loss term {term} gets {share} of the gradient norm, against {top} for {dominant}; rescale the terms so that each gets a share"
    default_enabled = False
    options = {"min_share": Option(0.01, "smallest share of the gradient norm a term may get")}

    valid = (
        """
import torch
import torch.nn.functional as F
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
batch = (torch.randn(16, 4), torch.randint(0, 3, (16,)))

def loss_fn(out, y):
    return F.cross_entropy(out, y) + 0.5 * out.pow(2).mean()
""",
    )
    invalid = (
        """
import torch
import torch.nn.functional as F
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
batch = (torch.randn(16, 4), torch.randint(0, 3, (16,)))

def loss_fn(out, y):
    ce = F.cross_entropy(out, y)
    penalty = out.pow(2).mean()
    return ce + 1e-5 * penalty
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        import warnings

        import torch

        from nnlint.dynamic.context import Skip

        model = ctx.fresh(train=True, dropout=False)
        own = ctx.loss is not None and ctx.loss.name == "model"  # the forward computes it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # anomaly mode says it is slow
            out = None if own else ctx.run(model)
            with torch.autograd.detect_anomaly(check_nan=False):  # where each node was made
                loss = ctx.loss_of(ctx.run(model) if own else out)
        if loss.grad_fn is None:
            raise Skip("the loss needs no gradient")
        terms = _terms(loss.grad_fn)
        if len(terms) < 2:
            raise Skip("the loss is not a sum of terms nnlint can see")
        params = [p for p in model.parameters() if p.requires_grad]
        norms = [_norm_alone(loss, terms, i, params) for i in range(len(terms))]
        total = sum(norms)
        if not total or not all(math.isfinite(n) for n in norms):
            return
        top = max(range(len(terms)), key=norms.__getitem__)
        for i, norm in enumerate(norms):
            if norm == 0 or norm / total >= self.settings["min_share"]:
                continue  # a term without any gradient at init is another story
            path, line, code = _where(terms[i])
            yield self.make(
                path or ctx.path,
                line or ctx.line,
                term=f"`{code}`" if code else f"{i + 1} of {len(terms)}",
                share=f"{100 * norm / total:.2g}%",
                top=f"{100 * norms[top] / total:.3g}%",
                dominant=f"`{_where(terms[top])[2] or top + 1}`",
            )


def _terms(root) -> list:
    """The autograd nodes of the terms of a scalar sum, their weights included."""
    found, stack = [], [root]
    while stack:
        node = stack.pop()
        children = [n for n, _ in node.next_functions if n is not None]
        name = type(node).__name__
        if name in _SUM or (
            name in _WEIGHT and len(children) == 1 and type(children[0]).__name__ in _SUM
        ):
            stack.extend(reversed(children))  # `a + b`, `0.5 * (a + b)`
        elif node is not root and name != "AccumulateGrad":
            found.append(node)  # a term, with its weight: `0.1 * kl`
    return found


def _norm_alone(loss, terms, index, params) -> float:
    """The gradient norm of the loss with only term `index` letting its gradient through."""
    import torch

    def block(grads):
        return tuple(None if g is None else torch.zeros_like(g) for g in grads)

    handles = [t.register_prehook(block) for i, t in enumerate(terms) if i != index]
    try:
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    squares = [float(g.double().pow(2).sum()) for g in grads if g is not None]
    return math.sqrt(sum(squares))


def _where(node) -> tuple[str | None, int | None, str]:
    """The file, line and code in the user's source where a term's value was made:
    through its weight to the term itself (`penalty = ...` rather than `return ce + 1e-5 * penalty`)."""
    inner = node
    while type(inner).__name__ in _WEIGHT:
        children = [n for n, _ in inner.next_functions if n is not None]
        if len(children) != 1:
            break
        inner = children[0]
    for candidate in (inner, node):
        frames = (candidate.metadata or {}).get("traceback_") or []
        for frame in reversed(frames):
            match = _FRAME.search(frame)
            if match and not _library(match["path"]):
                return match["path"], int(match["line"]), match["code"].strip()
    return None, None, ""


def _library(path: str) -> bool:
    """Frames of torch, nnlint or an installed package: not where the user wrote the term."""
    parts = path.replace(os.sep, "/").split("/")
    return "site-packages" in parts or "dist-packages" in parts or "nnlint" in parts[-3:-1]

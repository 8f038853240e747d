from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from nnlint.core.finding import Finding, Severity
from nnlint.core.rule import Option, ScriptRule
from nnlint.script.loops import BACKWARD, STEP, analyze

# Words in a name, attribute or string that say the learning rate is managed somewhere.
_SCHEDULING = ("sched", "warmup", "warm_up", "param_groups", "lr_lambda", "adjust_learning_rate")
_LR_CALL = ("adjust", "update", "set", "get", "cos", "decay", "step")
_EPISODES = ("epi", "game", "rollout")
# Graph learning: a dataset is one graph or a few dozen, so hundreds of epochs are a short run.
_FEW_SAMPLES = {"torch_geometric", "dgl"}


class NoLrSchedule(ScriptRule):
    """A long training run with a constant learning rate and no warm-up.

    ## What it does
    Flags a file whose training loop (a `backward()` and an optimizer step)
    runs, by what the file itself declares, at least `min_epochs` epochs or
    `min_steps` steps (`range(300)`, `range(args.epochs)` with an argparse
    default of 300, `num_epochs = 300`), when nothing in the file changes the
    learning rate: no `torch.optim.lr_scheduler`, no scheduler or warm-up of
    any library, no write to `param_groups`, no `adjust_learning_rate`. An
    iteration of a loop whose optimizer steps sit in an inner loop is an
    epoch; one that steps directly is a step. Left alone: files with two
    optimizers (a GAN's generator and discriminator, an actor and a critic,
    whose recipes keep the rate constant), reinforcement learning (episodes
    are not epochs) and the epochs of graph learning (PyG, DGL: an epoch is
    a handful of steps). Off by default, at info: a recommendation.

    ## Why is this bad?
    Over a long run a constant learning rate is either too high at the end,
    where the loss settles noisily above its floor, or too low at the
    start. Decaying it (step, cosine, one-cycle) typically buys a few points
    of accuracy for free, and a warm-up keeps adaptive optimizers and large
    batches from diverging in the first steps.

    ## Example
    ```python
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch in range(300):
        for x, y in loader:
            ...
    ```

    ## Use instead
    ```python
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=300)
    for epoch in range(300):
        for x, y in loader:
            ...
        scheduler.step()
    ```

    ## Known problems
    The length must be a literal the file declares: a run whose epochs come
    from a config file, or whose learning rate a library changes out of
    sight, is left alone.
    """

    needs = ("backward",)
    needs_all = ("torch", "backward", "step")
    code = "NN223"
    name = "no-lr-schedule"
    message = "{length} with a constant learning rate and no warm-up; decay it with a scheduler from `torch.optim.lr_scheduler` (cosine, step or one-cycle)"
    severity = Severity.INFO
    default_enabled = False
    options = {
        "min_epochs": Option(100, "fewest declared epochs that make a run long"),
        "min_steps": Option(20000, "fewest declared steps that make a run long"),
    }

    invalid = (
        """
import argparse
import torch
parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=300)
args = parser.parse_args()
model = torch.nn.Linear(4, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for epoch in range(args.epochs):
    for x, y in loader:
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
""",
        """
import torch
model = torch.nn.Linear(4, 2)
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
max_iters = 50000
for it in range(max_iters):
    x, y = get_batch()
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step()
""",
    )
    valid = (
        """
import torch
generator, discriminator = torch.nn.Linear(8, 4), torch.nn.Linear(4, 1)
opt_g = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
opt_d = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
for epoch in range(200):
    for real in loader:
        opt_d.zero_grad()
        fake = generator(torch.randn(len(real), 8))
        d_loss = discriminator(fake.detach()).mean() - discriminator(real).mean()
        d_loss.backward()
        opt_d.step()
        opt_g.zero_grad()
        (-discriminator(fake).mean()).backward()
        opt_g.step()
""",
        """
import torch
model = torch.nn.Linear(4, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=300)
for epoch in range(300):
    for x, y in loader:
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    sched.step()
""",
        """
import torch
model = torch.nn.Linear(4, 2)
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
for it in range(50000):
    lr = get_lr(it)
    for group in opt.param_groups:
        group["lr"] = lr
    x, y = get_batch()
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step()
""",
        """
import torch
model = torch.nn.Linear(4, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for epoch in range(10):
    for x, y in loader:
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        analysis = analyze(ctx)
        training = [
            u for u in analysis.loops if u.of(BACKWARD) and any(not e.manual for e in u.of(STEP))
        ]
        imported = _top_imports(ctx)
        if not training or _manages_lr(ctx, analysis) or imported & {"gym", "gymnasium"}:
            return  # reinforcement learning counts episodes, not epochs
        optimizers = _optimizer_calls(analysis)
        if len(optimizers) != 1:
            return  # none nnlint knows, or a GAN's or actor-critic's pair: constant by recipe
        defaults = _argparse_defaults(analysis)
        for loop in training:
            # Each iteration of a loop whose steps sit in an inner loop is an epoch;
            # each iteration of one that steps directly is a step (a full-batch epoch).
            epochs = any(e.loops for e in loop.of(STEP))
            for outer in _loops_around(analysis, loop.node):
                per_epoch = epochs or outer is not loop.node
                if per_epoch and imported & _FEW_SAMPLES:
                    continue  # an epoch of a graph dataset is a handful of steps
                length = self._length(analysis, outer, defaults, per_epoch)
                if length is not None:
                    yield ctx.report(self, optimizers[0], length=length)
                    return

    def _length(self, analysis, loop, defaults, epochs: bool) -> str | None:
        """'300 epochs' or '50000 steps' when `loop` runs that long by the file's own literals."""
        if not isinstance(loop, cst.For) or not isinstance(loop.iter, cst.Call):
            return None
        call = loop.iter
        if analysis.code(call.func) != "range" or not call.args or len(call.args) > 2:
            return None
        bound = call.args[-1].value
        words = (analysis.code(loop.target) + " " + analysis.code(bound)).lower()
        if any(w in words for w in _EPISODES):
            return None  # reinforcement learning: episodes, not epochs
        count = _literal(analysis, bound, defaults)
        if count is None:
            return None
        if epochs:
            return f"{count} epochs" if count >= self.settings["min_epochs"] else None
        return f"{count} steps" if count >= self.settings["min_steps"] else None


def _manages_lr(ctx, analysis) -> bool:
    """Whether anything in the file looks like it changes the learning rate."""
    for node in analysis.values.walk(ctx.module):
        if isinstance(node, cst.Name | cst.SimpleString):
            text = node.value.lower()
            if any(word in text for word in _SCHEDULING):
                return True
            if isinstance(node, cst.Name) and _lr_function(text):
                return True
        elif isinstance(node, cst.Attribute) and any(
            w in node.attr.value.lower() for w in _SCHEDULING
        ):
            return True
    return False


def _top_imports(ctx) -> set[str]:
    """The top-level packages the file imports (`gym`, `torch_geometric`)."""
    return {
        name.split(".")[0]
        for node in ctx.module.body
        if isinstance(node, cst.SimpleStatementLine)
        for stmt in node.body
        if isinstance(stmt, cst.Import | cst.ImportFrom)
        for name in _imported(stmt)
    }


def _imported(stmt: cst.Import | cst.ImportFrom) -> list[str]:
    if isinstance(stmt, cst.Import):
        return [cst.Module([]).code_for_node(a.name) for a in stmt.names]
    return [cst.Module([]).code_for_node(stmt.module)] if stmt.module is not None else []


def _lr_function(name: str) -> bool:
    """A name like `get_lr`, `adjust_lr`, `lr_decay`, `cosine_lr`."""
    parts = name.split("_")
    return ("lr" in parts or "learning_rate" in name) and any(
        any(p.startswith(w) for w in _LR_CALL) for p in parts if p != "lr"
    )


def _argparse_defaults(analysis) -> dict[str, cst.BaseExpression]:
    """`dest -> default` of each `add_argument("--name", default=...)` in the file."""
    found = {}
    for call in analysis.values.calls:
        if not (isinstance(call.func, cst.Attribute) and call.func.attr.value == "add_argument"):
            continue
        flags = [
            a.value
            for a in call.args
            if a.keyword is None and isinstance(a.value, cst.SimpleString)
        ]
        default = next(
            (a.value for a in call.args if a.keyword and a.keyword.value == "default"), None
        )
        if not flags or default is None:
            continue
        dest = next((a.value for a in call.args if a.keyword and a.keyword.value == "dest"), None)
        if isinstance(dest, cst.SimpleString):
            found[dest.evaluated_value] = default
            continue
        names = [f.evaluated_value for f in flags if isinstance(f.evaluated_value, str)]
        long = [n for n in names if n.startswith("--")] or names
        if long:
            found[long[0].lstrip("-").replace("-", "_")] = default
    return found


def _literal(analysis, expr, defaults, depth: int = 0) -> int | None:
    """The integer `expr` is by the file's literals: `300`, a name assigned one, an
    argparse default read as `args.name`, a product such as `3 * 10**5`."""
    if depth > 4:
        return None
    if isinstance(expr, cst.Integer):
        return int(expr.evaluated_value)
    if isinstance(expr, cst.Float):
        value = expr.evaluated_value
        return int(value) if value == int(value) else None
    if isinstance(expr, cst.BinaryOperation) and isinstance(
        expr.operator, cst.Multiply | cst.Power
    ):
        left = _literal(analysis, expr.left, defaults, depth + 1)
        right = _literal(analysis, expr.right, defaults, depth + 1)
        if left is None or right is None:
            return None
        return left * right if isinstance(expr.operator, cst.Multiply) else left ** min(right, 12)
    if isinstance(expr, cst.Name):
        values = analysis.values.assigned_values(expr)
        if len(values) == 1:
            return _literal(analysis, values[0], defaults, depth + 1)
        return None
    if isinstance(expr, cst.Attribute) and isinstance(expr.value, cst.Name):
        default = defaults.get(expr.attr.value)
        if default is not None:
            return _literal(analysis, default, defaults, depth + 1)
    return None


def _loops_around(analysis, node) -> list[cst.CSTNode]:
    """`node` and the loops that enclose it, innermost first."""
    found = [node]
    current = analysis.values.enclosing(node, cst.For | cst.While)
    while current is not None:
        found.append(current)
        current = analysis.values.enclosing(current, cst.For | cst.While)
    return found


def _optimizer_calls(analysis) -> list[cst.Call]:
    """The `torch.optim.X(...)` calls that build optimizers, where their lr is set."""
    return [
        call
        for call in analysis.values.calls
        if any(
            q.startswith("torch.optim.") and ".lr_scheduler." not in q
            for q in analysis.values.torch_names(call.func)
        )
    ]

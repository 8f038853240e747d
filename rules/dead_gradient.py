from __future__ import annotations

from collections.abc import Iterator

from nnlint.core.finding import Finding
from nnlint.core.rule import DynamicRule


class DeadGradient(DynamicRule):
    """Trainable parameters get no gradient, or an exactly zero one, from the real loss.

    ## What it does
    Runs one backward of the real loss on the batch and names the trainable
    parameters whose gradient is None or exactly zero, grouped by module.
    A zero-initialised layer (a residual branch's last BatchNorm gamma, a zero
    output layer, adaLN-Zero, LoRA's B) blocks the gradient of what lies
    before it only until its first update, so a suspect is reported only if
    its gradient stays None or zero over a few real optimizer steps of a copy.
    Frozen parameters (`requires_grad=False`) are expected to get none. When
    the graph rule `unused-parameters` is on, parameters the forward never
    reads are left to it, and when `dead-units` is on, those cut off by dead
    ReLU units (the layer before them, and the layer after them) are left to
    it; those it reads but that get no gradient (`.detach()`,
    `.data`, an integer cast) are reported here. A parameter with an exactly
    zero gradient inside an installed library's module whose other own
    parameters train is that library masking the term where the loss reads
    (Funnel's position biases at the CLS token), and is not reported.

    ## Why is this bad?
    Those weights never train: a branch multiplied by zero, a `.detach()` or
    `.data` in the forward, a module whose output never reaches the loss, or a
    layer of dead ReLUs in front of it.

    ## Example
    ```python
    def forward(self, x):
        return self.a(x) + 0 * self.b(x)
    ```

    ## Use instead
    ```python
    def forward(self, x):
        return self.a(x) + self.b(x)
    ```
    """

    code = "NN306"
    name = "dead-gradient"
    message = "{params} of `{module}` {verb} {what} under the loss; {hint}"

    valid = (
        """
import torch
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
model[0].requires_grad_(False)
batch = (torch.randn(8, 4), torch.randint(0, 3, (8,)))
""",
    )
    invalid = (
        """
import torch

class Zeroed(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(4, 3)
        self.b = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.a(x) + 0 * self.b(x)

model = Zeroed()
batch = (torch.randn(8, 4), torch.randint(0, 3, (8,)))
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        from nnlint.dynamic.context import Skip, module_of

        base = ctx.passes()
        if base.loss is None:
            raise Skip("no loss to backpropagate")
        if not base.grads:
            yield from self._loss_cut(ctx)
            return
        suspects = [n for n, g in base.grads.items() if g is None or not g.any()]
        if not suspects:
            return
        # A zero-initialised layer blocks the gradient of what lies before it only
        # until its first update: dead is what stays without a gradient in training.
        trained = ctx.trained(until=lambda t: t.flowing.issuperset(suspects))
        dead = [n for n in suspects if n not in trained.flowing]
        cut = {n for n in dead if base.grads[n] is None and trained.grads.get(n) is None}
        dead = [n for n in dead if n in cut or not _masked_in_library(ctx, n, trained.flowing)]
        unread = _never_read(ctx) & cut if cut else set()
        if "unused-parameters" in ctx.selected:
            dead = [n for n in dead if n not in unread]  # unused-parameters reports those
        if dead and "dead-units" in ctx.selected:
            behind = _behind_dead_units(ctx, dead)
            dead = [n for n in dead if n not in behind]  # dead-units reports their cause
        found: dict[str, list[str]] = {}
        for name in dead:
            found.setdefault(module_of(name), []).append(name)
        for module, names in found.items():
            read_but_cut = all(n in cut and n not in unread for n in names)
            none = all(n in cut for n in names)
            hint = "check for .detach(), zeroed branches or outputs that never reach the loss"
            if read_but_cut:
                hint = "the forward reads it, but nothing it computes reaches the loss: check for .detach(), .data, an integer cast or an output the loss never uses"
            yield ctx.report(
                self,
                module,
                params=", ".join(f"`{n.rpartition('.')[2]}`" for n in names),
                module=module or type(ctx.model).__name__,
                verb="gets" if len(names) == 1 else "get",
                what="no gradient" if none else "an exactly zero gradient",
                hint=hint,
            )

    def _loss_cut(self, ctx) -> Iterator[Finding]:
        """The loss needs no gradient at all although the model has trainable parameters."""
        from nnlint.dynamic.context import Skip

        trainable = [n for n, p in ctx.model.named_parameters() if p.requires_grad]
        if not trainable:
            raise Skip("no trainable parameter")
        yield ctx.report(
            self,
            None,
            params=f"all {len(trainable)} trainable parameters",
            module=type(ctx.model).__name__,
            verb="get",
            what="no gradient",
            hint="the loss does not require a gradient: check forward for .detach(), torch.no_grad(), .data or an integer cast on the way to the output",
        )


def _masked_in_library(ctx, name: str, flowing: set[str]) -> bool:
    """True when `name` gets an exactly zero (not a missing) gradient inside a module of
    an installed library whose other own parameters train: the library multiplies that
    term by a mask at the positions the loss reads (Funnel's relative-position and
    segment biases are masked out at the CLS token, the only one its classifier
    reads). That is the library's design, nothing the user can change."""
    from nnlint.dynamic.context import module_of
    from nnlint.setup.sites import definition, is_library_file

    module = ctx.model.get_submodule(module_of(name))
    found = definition(type(module))
    if found is None or not is_library_file(found[0]):
        return False
    prefix = module_of(name)
    own = [f"{prefix}.{n}" if prefix else n for n, _ in module.named_parameters(recurse=False)]
    return any(n in flowing for n in own if n != name)


def _never_read(ctx) -> set[str]:
    """The parameters the graph phase's recorded forward never reads (what
    unused-parameters reports); empty when that capture fails, as the rule then
    reports nothing."""
    from nnlint.graph.record import CaptureError, capture
    from nnlint.setup.inputs import Batch

    try:
        graph = capture(ctx.fresh(train=True), Batch(ctx.args, ctx.kwargs))
    except CaptureError:
        return set()
    return {n for n, p in ctx.model.named_parameters() if p.requires_grad} - graph.params_read


def _behind_dead_units(ctx, names: list[str]) -> set[str]:
    """The parameters whose zero gradient dead ReLU units explain, which dead-units
    reports: those of a layer whose output is <= 0 everywhere (the ReLU after it
    passes nothing back), and those of a layer whose input is all zeros."""
    import torch

    from nnlint.dynamic.context import module_of
    from nnlint.dynamic.probes import main_output

    model = ctx.fresh(train=True)
    modules = {module_of(n) for n in names}
    explained: set[str] = set()

    def look(name):
        def hook(_module, inputs, output):
            x, y = main_output(inputs), main_output(output)
            silent = isinstance(x, torch.Tensor) and x.is_floating_point() and not x.any()
            negative = (
                isinstance(y, torch.Tensor) and y.is_floating_point() and bool((y <= 0).all())
            )
            if silent or negative:
                explained.add(name)

        return hook

    handles = [
        m.register_forward_hook(look(n)) for n, m in model.named_modules() if n and n in modules
    ]
    try:
        with torch.no_grad():
            ctx.run(model, same_rng=True)
    finally:
        for handle in handles:
            handle.remove()
    return {n for n in names if module_of(n) in explained}

from __future__ import annotations

from collections.abc import Iterator

from nnlint.core.finding import Finding
from nnlint.core.rule import DynamicRule, Option

_CLASS_LOSSES = ("cross_entropy", "nll_loss")
_BINARY_LOSSES = ("binary_cross_entropy", "binary_cross_entropy_with_logits")


class SuspiciousInputs(DynamicRule):
    """The batch the model trains on looks broken before it reaches the net.

    ## What it does
    Looks at the real batch (the training script's, `--data`'s or the one given
    to `nnlint.check`; never at inputs nnlint made up) right before the net:

    * images whose values reach the first convolution still in 0..255 (more
      than `max_image_value`), not normalised;
    * a main input whose values are all the same, or whose samples are all identical;
    * NaN or Inf in the inputs or targets (when `non-finite` is not selected,
      which reports NaN in the inputs itself);
    * class labels outside the model's outputs (a label of 10 for 10 outputs,
      a negative label other than `ignore_index`), or binary-loss targets
      outside [0, 1] (masks stored as 0/255);
    * every label of the batch the same class (at least `min_labels` labels, 3
      or more outputs) from a training script's DataLoader that reads in order:
      a dataset sorted by class, never shuffled.

    ## Why is this bad?
    Each one trains without an error and the loss moves a little, so the bug
    shows only as a model that does not learn: unnormalised pixels saturate
    the first layers, a constant input teaches only the label prior, labels of
    one class teach the bias of that class, targets beyond [0, 1] make the
    binary loss unbounded. Labels beyond the outputs raise deep inside the loss
    (or a device-side assert on a GPU) with no word about the data.

    ## Example
    ```python
    images = torch.tensor(uint8_images).float()   # 0..255
    loss = F.cross_entropy(model(images), labels)
    ```

    ## Use instead
    ```python
    images = torch.tensor(uint8_images).float() / 255
    images = (images - mean) / std
    ```

    ## Known problems
    A model that normalises its input itself is judged by what its first
    convolution receives, so `x / 255` in `forward` is fine. A shuffled batch
    of an imbalanced dataset can hold a single class by chance, so labels of
    one class are judged only when nnlint saw the training script's DataLoader
    read without shuffling; a batch handed to `nnlint.check` is not judged so.
    """

    code = "NN316"
    name = "suspicious-inputs"
    message = "{what}; {hint}"
    needs_finite = False  # NaN in the batch is one of its findings
    explains_failure = True  # labels beyond the outputs make the loss raise
    options = {
        "max_image_value": Option(10.0, "largest value normalised images reach"),
        "min_labels": Option(16, "labels in the batch needed to judge them all one class"),
    }

    valid = (
        """
import torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 5))
# one class in a batch handed over directly may be chance (a shuffled, imbalanced
# dataset): judged only from a training script's loader seen reading in order
batch = (torch.randn(32, 8), torch.full((32,), 3))
loss_fn = torch.nn.functional.cross_entropy
""",
        """
import torch
torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 14 * 14, 10)
)
batch = (torch.rand(16, 3, 16, 16), torch.randint(0, 10, (16,)))
loss_fn = torch.nn.functional.cross_entropy
""",
        """
import torch
torch.manual_seed(0)

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.fc = torch.nn.Linear(8 * 14 * 14, 10)

    def forward(self, x):
        x = x / 255  # normalised here
        return self.fc(self.conv(x).relu().flatten(1))

model = Net()
batch = (torch.randint(0, 256, (16, 3, 16, 16)).float(), torch.randint(0, 10, (16,)))
loss_fn = torch.nn.functional.cross_entropy
""",
    )
    invalid = (
        """
import torch
torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 14 * 14, 10)
)
batch = (torch.randint(0, 256, (16, 3, 16, 16)).float(), torch.randint(0, 10, (16,)))
loss_fn = torch.nn.functional.cross_entropy
""",
        """
import torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
batch = (torch.randn(16, 8), torch.randint(1, 11, (16,)))  # labels 1..10, outputs 0..9
loss_fn = torch.nn.functional.cross_entropy
""",
        """
import torch
model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
batch = (torch.zeros(16, 8), torch.randint(0, 4, (16,)))
loss_fn = torch.nn.functional.cross_entropy
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        from nnlint.dynamic.context import Skip

        if not ctx.setup.real_batch:
            raise Skip("the batch is made up by nnlint: only real data is judged")
        if not {"non-finite", "NN311"} & ctx.selected:
            yield from self._nonfinite(ctx)
        yield from self._constant(ctx)
        yield from self._images(ctx)
        yield from self._labels(ctx)

    def _nonfinite(self, ctx) -> Iterator[Finding]:
        import torch

        from nnlint.dynamic import probes

        target = ctx.loss.target if ctx.loss is not None and not ctx.loss.synthesized else None
        named = [
            (label, probes.get_input(ctx.args, ctx.kwargs, key))
            for key, label in probes.input_names(ctx.args, ctx.kwargs)
        ]
        for label, x in [*named, ("the targets", target)]:
            if isinstance(x, torch.Tensor) and x.is_floating_point():
                nan, inf = int(x.isnan().sum()), int(x.isinf().sum())
                if nan or inf:
                    what = label if label == "the targets" else f"input {label}"
                    yield ctx.report(
                        self,
                        None,
                        what=f"{what} holds {nan} NaN and {inf} Inf values",
                        hint="clean the data (missing values, a division by zero) before training",
                    )

    def _constant(self, ctx) -> Iterator[Finding]:
        import torch

        from nnlint.dynamic import probes

        key = probes.primary_key(ctx.args, ctx.kwargs)
        x = probes.get_input(ctx.args, ctx.kwargs, key) if key is not None else None
        if not isinstance(x, torch.Tensor) or x.numel() < 2 or x.dim() == 0:
            return
        label = dict(probes.input_names(ctx.args, ctx.kwargs)).get(key, "0")
        flat = x.detach().reshape(x.shape[0], -1)
        if bool((flat == flat.reshape(-1)[0]).all()):
            what = f"every value of input {label} is {flat.reshape(-1)[0].item():g}"
        elif x.shape[0] > 1 and bool((flat == flat[:1]).all()):
            what = f"the {x.shape[0]} samples of input {label} are all identical"
        else:
            return
        yield ctx.report(
            self,
            None,
            what=what,
            hint="check the data pipeline (blank inputs, one sample repeated)",
        )

    def _images(self, ctx) -> Iterator[Finding]:
        """Images still in 0..255 when they reach the first convolution."""
        import torch

        from nnlint.dynamic import probes
        from nnlint.dynamic.context import rounded

        limit = self.settings["max_image_value"]
        images = [
            (label, x)
            for key, label in probes.input_names(ctx.args, ctx.kwargs)
            if (x := probes.get_input(ctx.args, ctx.kwargs, key)).dim() == 4
            and x.shape[1] in (1, 3, 4)
            and x.numel()
            and float(x.min()) >= 0
            and float(x.max()) > limit
        ]
        if not images:
            return
        model = ctx.fresh(train=False)
        seen: list[tuple[str, torch.Tensor]] = []

        def first(module, inputs):
            if not seen and inputs and isinstance(inputs[0], torch.Tensor):
                seen.append((names[module], inputs[0].detach()))

        names = {m: n for n, m in model.named_modules()}
        convs = [m for m in model.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)]
        handles = [m.register_forward_pre_hook(first) for m in convs]
        try:
            with torch.no_grad():
                ctx.run(model)
        except Exception:
            if not seen:
                return
        finally:
            for handle in handles:
                handle.remove()
        if not seen or not seen[0][1].is_floating_point():
            return
        conv, x = seen[0]
        low, high = float(x.min()), float(x.max())
        if low >= 0 and high > limit:
            label = images[0][0]
            yield ctx.report(
                self,
                conv,
                what=f"the images of input {label} reach `{conv}` with values in [{rounded(low)}, {rounded(high)}]",
                hint="normalise them (8-bit pixels: divide by 255, then the dataset's mean and std)",
            )

    def _labels(self, ctx) -> Iterator[Finding]:
        import torch

        from nnlint.dynamic import probes

        loss = ctx.loss
        if loss is None or loss.synthesized or not isinstance(loss.target, torch.Tensor):
            return
        target = loss.target.detach()
        where = loss.site or ctx.locate(None)
        if loss.name in _BINARY_LOSSES and target.numel():
            low, high = float(target.min()), float(target.max())
            if low < 0 or high > 1:
                yield self.make(
                    *where,
                    1,
                    what=f"the targets of `{loss.name}` range over [{low:g}, {high:g}], outside [0, 1]",
                    hint="scale them to [0, 1] (masks stored as 0/255?)",
                )
            return
        if loss.name not in _CLASS_LOSSES or target.is_floating_point() or not target.numel():
            return
        classes = _classes(ctx, target)
        if classes is None:
            return
        kept = probes.labels(loss)
        if not kept.numel():
            return
        low, high = int(kept.min()), int(kept.max())
        if low < 0 or high >= classes:
            yield self.make(
                *where,
                1,
                what=f"the class labels range over [{low}, {high}] but the model has {classes} outputs",
                hint=f"make the output layer {high + 1} wide, or map the labels to 0..{classes - 1}",
            )
        elif (
            target.dim() == 1
            and kept.numel() >= self.settings["min_labels"]
            and ctx.setup.shuffled is False
            and classes >= 3
            and low == high
        ):
            yield self.make(
                *where,
                1,
                what=f"all {kept.numel()} labels of the batch are class {low}",
                hint="shuffle the training data (a loader over a dataset sorted by class?)",
            )


def _classes(ctx, target) -> int | None:
    """The model's number of outputs per labelled position, as the loss reads them;
    None when the output and the labels do not line up as (N, C, ...) and (N, ...)."""
    import torch

    from nnlint.dynamic import probes

    try:
        with torch.no_grad():
            out = probes.main_output(ctx.run(ctx.fresh(train=False)))
    except Exception:
        return None
    if not isinstance(out, torch.Tensor) or out.dim() < 2 or not out.is_floating_point():
        return None
    logits = probes.fit_to(out, ctx.loss.input_shape)
    if logits.dim() != target.dim() + 1 or logits.shape[0] != target.shape[0]:
        return None
    if tuple(logits.shape[2:]) != tuple(target.shape[1:]):
        return None
    return int(logits.shape[1])

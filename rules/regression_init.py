from __future__ import annotations

from collections.abc import Iterator

from nnlint.core.finding import Finding
from nnlint.core.rule import DynamicRule, Option

_REGRESSION_LOSSES = ("mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss")


class RegressionInit(DynamicRule):
    """For regression, the output's mean at init is far from the targets' mean.

    ## What it does
    Runs the real batch in eval mode and compares the mean of the model's
    output with the mean of the targets, in units of the targets' standard
    deviation, per output column. A distance above `max_std` is flagged. Only
    real float targets of a regression loss (`mse_loss`, `l1_loss`,
    `smooth_l1_loss`, `huber_loss`) with at least `min_samples` samples are
    judged.

    ## Why is this bad?
    A fresh regression head predicts about 0. Targets around 1000 (prices,
    temperatures in kelvin) make the first steps all about moving the bias:
    the loss starts huge, the gradients are dominated by the offset, and
    adaptive optimizers spend their early updates on it ("init well": set the
    last bias to the targets' mean, or standardise the targets).

    ## Example
    ```python
    self.head = nn.Linear(64, 1)
    loss = F.mse_loss(model(x), prices)        # prices ~ 250_000 +- 80_000
    ```

    ## Use instead
    ```python
    self.head = nn.Linear(64, 1)
    nn.init.constant_(self.head.bias, prices_mean)   # or train on standardised targets
    ```
    """

    code = "NN320"
    name = "regression-init"
    message = (
        "the output's mean at init is {output}, the targets' {target}: {distance} times their "
        "std ({std}); {hint}"
    )
    default_enabled = False  # a heuristic: some targets are meant to be learned from afar
    options = {
        "max_std": Option(3.0, "largest distance of the means, in the targets' std"),
        "min_samples": Option(8, "samples needed to estimate the targets' mean and std"),
    }

    valid = (
        """
import torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
batch = (torch.randn(32, 8), torch.randn(32, 1))
loss_fn = torch.nn.MSELoss()
""",
    )
    invalid = (
        """
import torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
batch = (torch.randn(32, 8), 300.0 + 20.0 * torch.randn(32, 1))  # temperatures in kelvin
loss_fn = torch.nn.MSELoss()
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        import torch

        from nnlint.dynamic import probes
        from nnlint.dynamic.context import Skip, rounded

        loss = ctx.loss
        if loss is None or loss.synthesized or loss.name not in _REGRESSION_LOSSES:
            raise Skip("no regression loss on real targets")
        target = loss.target
        if not isinstance(target, torch.Tensor) or not target.is_floating_point():
            raise Skip("the targets are not floats")
        if target.shape[0] < self.settings["min_samples"]:
            raise Skip("too few samples to estimate the targets' mean and std")
        with torch.no_grad():
            out = probes.main_output(ctx.run(ctx.fresh(train=False)))
        if not isinstance(out, torch.Tensor) or out.numel() != target.numel():
            raise Skip("the output and the targets do not line up")
        out = out.detach().double().reshape(target.shape[0], -1)
        y = target.detach().double().reshape(target.shape[0], -1)
        std = y.std(0)
        keep = std > 0
        if not keep.any():
            raise Skip("the targets are constant")
        distance = (out.mean(0) - y.mean(0)).abs() / std.clamp_min(1e-12)
        distance[~keep] = 0
        column = int(distance.argmax())
        if float(distance[column]) <= self.settings["max_std"]:
            return
        yield ctx.report(
            self,
            ctx.head(),
            output=rounded(float(out[:, column].mean())),
            target=rounded(float(y[:, column].mean())),
            distance=rounded(float(distance[column])),
            std=rounded(float(std[column])),
            hint="set the last layer's bias to the targets' mean, or standardise the targets",
        )

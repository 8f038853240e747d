from __future__ import annotations

from collections.abc import Iterator

from nnlint.core.finding import Finding
from nnlint.core.rule import DynamicRule, Option


class InitCalibration(DynamicRule):
    """Predictions at init are far from the label prior.

    ## What it does
    Averages the predicted class probabilities of one forward at init and
    compares them with the label frequencies of the batch (KL divergence,
    prior ‖ prediction). Needs at least `min_labels_per_class` labels per class
    to estimate the prior; skipped otherwise.

    ## Why is this bad?
    On an imbalanced dataset a network that starts uniform spends its first
    iterations learning the class biases ("hockey stick" loss). The recipe:
    set the final bias to log(prior) so the first prediction is the prior.

    ## Example
    ```python
    self.head = nn.Linear(64, 2)   # labels are 90% class 0
    ```

    ## Use instead
    ```python
    self.head = nn.Linear(64, 2)
    with torch.no_grad():
        self.head.bias.copy_(torch.log(prior))
    ```
    """

    code = "NN302"
    name = "init-calibration"
    message = "mean predicted probability of class {label} at init is {pred}, its label frequency {prior} (KL {kl}); {hint}"
    options = {
        "max_kl": Option(0.1, "largest KL(prior ‖ mean prediction) at init, in nats"),
        "min_labels_per_class": Option(20, "labels per class needed to estimate the prior"),
    }

    valid = (
        """
import torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
with torch.no_grad():
    model[2].weight.mul_(0.01)
    model[2].bias.copy_(torch.tensor([0.9, 0.1]).log())
batch = (torch.randn(200, 8), (torch.rand(200) < 0.1).long())
loss_fn = torch.nn.functional.cross_entropy
""",
    )
    invalid = (
        """
import torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
batch = (torch.randn(200, 8), (torch.rand(200) < 0.1).long())
loss_fn = torch.nn.functional.cross_entropy
""",
    )

    def check(self, ctx) -> Iterator[Finding]:
        import torch

        from nnlint.dynamic import probes
        from nnlint.dynamic.context import Skip, rounded

        loss = ctx.loss
        if loss is None or not loss.classification or loss.synthesized:
            raise Skip("needs a classification loss and real labels")
        probs = probes.class_probabilities(loss, ctx.passes().output)
        labels = probes.labels(loss)
        if probs is None or labels is None:
            raise Skip("no class probabilities or labels")
        classes = probs.shape[-1]
        if labels.numel() < self.settings["min_labels_per_class"] * classes:
            raise Skip(
                f"{labels.numel()} labels are too few to estimate the prior of {classes} classes"
            )
        prior = torch.bincount(labels.long().clamp(0, classes - 1), minlength=classes).double()
        prior /= prior.sum()
        pred = probs.double().mean(0).clamp_min(1e-12)
        kl = float((prior[prior > 0] * (prior[prior > 0] / pred[prior > 0]).log()).sum())
        if kl <= self.settings["max_kl"]:
            return
        worst = int((prior - pred).abs().argmax())
        hint = "set the final layer's bias to log(label prior)"
        yield ctx.report(
            self,
            ctx.head(),
            label=worst,
            pred=rounded(float(pred[worst])),
            prior=rounded(float(prior[worst])),
            kl=rounded(kl),
            hint=hint,
        )

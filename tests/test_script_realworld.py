"""Shapes of real training code that the script rules got wrong (issue 14).

Each case is a small project written for this test (no third-party code): the
false-alarm shapes must stay silent, the missed shapes must be found. The
benchmark behind them is benchmarks/realworld_scripts.py.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from nnlint.core.config import Settings
from nnlint.engine import run


def lint(tmp_path: Path, files: dict[str, str]) -> set[tuple[str, str]]:
    """(file, code) of the default rules' findings on the project `files`, run from its root."""
    for name, text in files.items():
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text))
    settings = Settings(paths=[str(tmp_path)], root=tmp_path, jobs=1)
    return {(f.path, f.code) for f in run(settings).findings}


# A project's own wrapper of torch.inference_mode, used as a decorator.
INFERENCE_WRAPPER = """
    import torch


    def fast_inference(enabled=True):
        def wrap(fn):
            return (torch.inference_mode if enabled else torch.no_grad)()(fn)

        return wrap
"""
DECORATED_VAL = """
    import torch
    from {module} import fast_inference


    @fast_inference()
    def run(model, loader, criterion):
        model.eval()
        loss = 0
        for x, y in loader:
            out = model(x)
            loss += criterion(out, y)
        return loss / len(loader)
"""


def test_inference_wrapper_from_a_local_module(tmp_path):
    files = {
        "tools/modes.py": INFERENCE_WRAPPER,
        "val.py": DECORATED_VAL.format(module="tools.modes"),
    }
    assert lint(tmp_path, files) == set()


def test_inference_wrapper_found_from_a_subfolder(tmp_path):
    files = {
        "tools/modes.py": INFERENCE_WRAPPER,
        "sub/val.py": DECORATED_VAL.format(module="tools.modes"),
    }
    assert lint(tmp_path, files) == set()


def test_inference_wrapper_in_the_same_file(tmp_path):
    source = INFERENCE_WRAPPER + DECORATED_VAL.format(module="torch").replace(
        "from torch import fast_inference", ""
    )
    assert lint(tmp_path, {"val.py": source}) == set()


def test_unreadable_decorator_silences_eval_without_no_grad(tmp_path):
    loop = """
            model.eval()
            hits = 0
            for x, y in loader:
                hits += (model(x).argmax(1) == y).sum().item()
            return hits
    """
    source = (
        "import torch\nfrom somewhere_else import wrapped\n\n"
        "@wrapped\ndef evaluate(model, loader):"
        + textwrap.dedent(loop).replace("\n", "\n    ")
        + "\n\ndef validate(model, loader):"
        + textwrap.dedent(loop).replace("\n", "\n    ")
    )
    findings = [f for f in run_one_source(tmp_path, source) if f.code == "NN206"]
    assert [f.line for f in findings] == [
        source.splitlines().index("def validate(model, loader):") + 5
    ]


def run_one_source(root: Path, source: str):
    (root / "val.py").write_text(source)
    return run(Settings(paths=[str(root / "val.py")], root=root, jobs=1)).findings


def test_torch_from_a_star_import(tmp_path):
    files = {
        "common.py": "import torch\nimport torch.nn as nn\n",
        "eval.py": """
            from common import *


            def evaluate(model, loader):
                model.eval()
                hits = 0
                with torch.no_grad():
                    for x, y in loader:
                        hits += (model(x).argmax(1) == y).sum().item()
                return hits
        """,
    }
    assert lint(tmp_path, files) == set()


def test_running_sum_that_is_the_returned_loss(tmp_path):
    source = """
        import torch.nn.functional as F
        from torch import nn


        class MultiViewLoss(nn.Module):
            def forward(self, views, targets):
                total = 0
                for view, target in zip(views, targets):
                    total += F.cross_entropy(view, target)
                return total / len(views)


        def perceptual(feats_a, feats_b):
            value = F.mse_loss(feats_a[0], feats_b[0])
            for i in range(1, len(feats_a)):
                value += F.mse_loss(feats_a[i], feats_b[i])
            return value


        def evaluate(model, loader):
            total = 0
            for x, y in loader:
                total += F.cross_entropy(model(x), y)
            return total / len(loader)
    """
    findings = run_one_source(tmp_path, textwrap.dedent(source))
    assert [(f.code, f.line) for f in findings] == [("NN207", 24)]


def test_loss_computed_under_no_grad_then_accumulated(tmp_path):
    source = """
        import torch
        import torch.nn.functional as F

        total = 0.0
        for x, y in val_loader:
            with torch.no_grad():
                loss = F.cross_entropy(model(x), y)
            total += loss
    """
    assert lint(tmp_path, {"valid.py": source}) == set()


def test_running_loss_reset_under_a_condition(tmp_path):
    source = """
        import torch
        import torch.nn.functional as F

        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        running = 0
        for i, (x, y) in enumerate(loader):
            opt.zero_grad()
            loss = F.nll_loss(model(x), y)
            loss.backward()
            opt.step()
            running += loss
            if (i + 1) % 10 == 0:
                print(running / 10)
                running = 0
    """
    assert lint(tmp_path, {"train.py": source}) == {("train.py", "NN207")}


def test_model_from_a_loading_helper_is_not_known_to_train(tmp_path):
    source = """
        import torch
        from helpers import load_checkpointed_model, score_loader


        @torch.no_grad()
        def evaluate(cfg):
            model = load_checkpointed_model(cfg.path)
            return score_loader(model, cfg.loader)
    """
    assert lint(tmp_path, {"evaluate.py": source}) == set()


def test_eval_mode_before_every_backward_is_on_purpose(tmp_path):
    source = """
        import torch.nn.functional as F


        def fit_head(backbone, head, loader, opt):
            backbone.eval()  # frozen backbone: its BatchNorm statistics stay fixed
            for x, y in loader:
                opt.zero_grad()
                F.cross_entropy(head(backbone(x)), y).backward()
                opt.step()


        for epoch in range(5):
            fit_head(backbone, head, loader, opt)
    """
    assert lint(tmp_path, {"probe.py": source}) == set()


PROBE = """
    import torch
    import torch.nn.functional as F
    from torch import nn


    class Probe(nn.Module):
        def __init__(self, encoder, width):
            super().__init__()
            self.encoder = encoder
            self.head = nn.Linear(width, 2)

        def head_only_train(self):
            self.encoder.requires_grad_(False)
            self.head.train()

        def forward(self, x):
            return self.head(self.encoder(x))


    probe = Probe(encoder, 16)
    opt = torch.optim.Adam(probe.head.parameters())
    for epoch in range(3):
        probe.head_only_train()
        for x, y in loader:
            opt.zero_grad()
            F.cross_entropy(probe(x), y).backward()
            opt.step()
        probe.eval()
        with torch.no_grad():
            print(sum(F.cross_entropy(probe(x), y).item() for x, y in val_loader))
"""


def test_train_mode_restored_by_a_method_of_the_models_class(tmp_path):
    assert lint(tmp_path, {"probe.py": PROBE}) == set()
    unrestored = PROBE.replace("probe.head_only_train()", "probe.encoder.requires_grad_(False)")
    assert lint(tmp_path, {"probe.py": unrestored}) == {("probe.py", "NN205")}


ENGINE = """
    import torch


    def evaluate(model, loader):
        hits = 0
        with torch.no_grad():
            for x, y in loader:
                hits += (model(x).argmax(1) == y).sum().item()
        return hits
"""
CALLER = """
    import torch
    import torch.nn.functional as F
    from engine import evaluate

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch in range(3):
        model.train()
        for x, y in loader:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        model.eval()
        print(evaluate(model, val_loader))
"""


def test_eval_mode_set_by_the_caller_in_another_file(tmp_path):
    assert lint(tmp_path, {"engine.py": ENGINE, "train.py": CALLER}) == set()


def test_caller_in_another_file_that_never_evals(tmp_path):
    caller = CALLER.replace("    model.eval()\n", "")
    unrelated = "def evaluate(m, x):\n    return m(x)\n\nmodel.eval()\nevaluate(model, x)\n"
    files = {"engine.py": ENGINE, "train.py": caller, "other.py": unrelated}
    assert lint(tmp_path, files) == {("engine.py", "NN205")}


def test_eval_function_that_hands_the_model_to_a_helper(tmp_path):
    source = """
        import torch


        def batch_loss(model, x, y):
            return torch.nn.functional.cross_entropy(model(x), y)


        def loader_loss(loader, model):
            return sum(batch_loss(model, x, y).item() for x, y in loader)


        def evaluate_model(model, loader):
            with torch.no_grad():
                total = sum(batch_loss(model, x, y).item() for x, y in loader)
            model.train()
            return total


        def validate_model(model, loader):
            with torch.no_grad():
                total = loader_loss(loader, model)
            model.train()
            return total
    """
    findings = run_one_source(tmp_path, textwrap.dedent(source))
    assert [(f.code, f.line) for f in findings] == [("NN205", 13), ("NN205", 20)]


def test_decorated_eval_function_without_eval_mode(tmp_path):
    source = """
        import torch
        from torch import nn


        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Sequential(nn.Dropout(0.5), nn.Linear(8, 2))

            def forward(self, x):
                return self.fc(x)


        model = Net().to("cpu")


        @torch.no_grad()
        def test(loader):
            correct = 0
            for x, y in loader:
                correct += int((model(x).argmax(-1) == y).sum())
            return correct
    """
    assert lint(tmp_path, {"train.py": source}) == {("train.py", "NN205")}


def test_step_before_backward_inside_the_same_branch(tmp_path):
    source = """
        import torch
        import torch.nn.functional as F

        opt = torch.optim.Adam(net.parameters())
        for step in range(10000):
            if step % 4 == 0:
                x, y = buffer.sample()
                loss = F.mse_loss(net(x), y)
                opt.zero_grad()
                opt.step()
                loss.backward()
    """
    assert lint(tmp_path, {"train.py": source}) == {("train.py", "NN203")}


def test_step_before_backward_with_two_optimizers_is_reported_once(tmp_path):
    """Which loss fills which optimizer is not in the file: NN203 stays silent, and
    NN202's claim holds (D's gradients from `g_loss.backward()` are cleared, then stepped)."""
    source = """
        import torch

        opt_g = torch.optim.Adam(gen.parameters())
        opt_d = torch.optim.Adam(disc.parameters())
        for real in loader:
            opt_g.zero_grad()
            fake = gen(torch.randn(len(real), 8))
            g_loss = bce(disc(fake), ones)
            g_loss.backward()
            opt_g.step()
            opt_d.zero_grad()
            d_loss = bce(disc(real), ones) + bce(disc(fake.detach()), zeros)
            opt_d.step()
            d_loss.backward()
    """
    assert lint(tmp_path, {"gan.py": source}) == {("gan.py", "NN202")}


CLASSIFIER = """
    import torch
    import torch.nn.functional as F
    from torch import nn


    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 3)

        def forward(self, x):
            {body}


    model = Classifier().to("cpu")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)


    def train():
        opt.zero_grad()
        loss = F.{loss}(model(x)[mask], y[mask])
        loss.backward()
        opt.step()
"""


def test_model_class_whose_forward_ends_in_softmax(tmp_path):
    for loss in ("nll_loss", "cross_entropy"):
        source = CLASSIFIER.format(body="return F.softmax(self.fc(x), dim=1)", loss=loss)
        assert lint(tmp_path, {"train.py": source}) == {("train.py", "NN204")}


def test_model_class_whose_forward_ends_in_sigmoid(tmp_path):
    source = CLASSIFIER.format(
        body="return torch.sigmoid(self.fc(x))", loss="binary_cross_entropy_with_logits"
    )
    assert lint(tmp_path, {"train.py": source}) == {("train.py", "NN212")}


def test_model_class_that_returns_softmax_only_outside_training(tmp_path):
    body = "logits = self.fc(x)\n        if self.training:\n            return logits\n        return logits.softmax(-1)"
    assert lint(tmp_path, {"train.py": CLASSIFIER.format(body=body, loss="cross_entropy")}) == set()
    body = "return F.log_softmax(self.fc(x), dim=1)"
    assert lint(tmp_path, {"train.py": CLASSIFIER.format(body=body, loss="nll_loss")}) == set()


def test_softmax_output_indexed_before_the_loss(tmp_path):
    source = """
        import torch.nn.functional as F

        out = model(x)
        loss = F.cross_entropy(out.softmax(dim=-1)[mask], y[mask])
    """
    assert lint(tmp_path, {"train.py": source}) == {("train.py", "NN204")}


def test_weights_only_not_advised_for_checkpoints_holding_objects(tmp_path):
    source = """
        import torch

        ckpt = torch.load(args.resume, map_location="cpu")
        start_epoch = ckpt["epoch"] + 1
        hparams = ckpt["args"]

        whole = torch.load("net.pkl")
        prediction = whole(x)

        checkpoint = torch.load(path)
        decoder = checkpoint["decoder"]
        decoder.eval()

        weights = torch.load("detector.pt")["model"].float().state_dict()
    """
    assert lint(tmp_path, {"resume.py": source}) == set()


def test_weights_only_not_advised_for_caches_and_whole_objects(tmp_path):
    source = """
        import torch

        if os.path.exists(cache_file):
            features = torch.load(cache_file)

        checkpoint = torch.load(args.checkpoint)
        model = checkpoint["model"]
        model = model.to(device)

        if os.path.exists(dataset_path):
            samples, longest = torch.load(dataset_path, weights_only=False)
        else:
            samples, longest = build()
            torch.save((samples, longest), dataset_path)
    """
    assert lint(tmp_path, {"resume.py": source}) == set()


def test_weights_only_still_advised_for_someone_elses_file(tmp_path):
    source = """
        import torch

        state = torch.load(downloaded, weights_only=False)
        model.load_state_dict(state)
        ckpt = torch.load(path)
        net = ckpt["model"]
        model.load_state_dict(net)
    """
    findings = run_one_source(tmp_path, textwrap.dedent(source))
    assert [(f.code, f.line) for f in findings] == [("NN209", 4), ("NN209", 6)]


def test_weights_only_still_advised_for_state_dicts(tmp_path):
    source = """
        import torch

        model.load_state_dict(torch.load("weights.pt"))
        ckpt = torch.load(args.resume, map_location="cpu")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
    """
    findings = run_one_source(tmp_path, textwrap.dedent(source))
    assert [(f.code, f.line) for f in findings] == [("NN209", 4), ("NN209", 5)]


def test_torch_floor_of_the_files_own_project(tmp_path):
    files = {
        "requirements.txt": "torch>=1.8\n",
        "sub/requirements.txt": "numpy\ntorch>=2.6\n",
        "sub/load.py": 'import torch\n\nmodel.load_state_dict(torch.load("w.pt"))\n',
        "other/load.py": 'import torch\n\nmodel.load_state_dict(torch.load("w.pt"))\n',
    }
    assert lint(tmp_path, files) == {("other/load.py", "NN209")}


def test_forward_of_a_network_that_is_not_torch(tmp_path):
    source = """
        import cv2
        import torch

        net = cv2.dnn.readNetFromONNX("model.onnx")
        net.setInput(cv2.dnn.blobFromImage(image))
        detections = net.forward()
        session = cv2.dnn.readNet("model.pb")
        more = session.forward(["output"])
        scores = torch.from_numpy(detections)
    """
    assert lint(tmp_path, {"detect.py": source}) == set()


def test_gradients_cleared_by_a_helper_of_another_module(tmp_path):
    files = {
        "fp16_utils.py": """
            def clear_grads(params):
                for p in params:
                    if p.grad is not None:
                        p.grad.detach_()
                        p.grad.zero_()
        """,
        "train.py": """
            import torch
            import torch.nn.functional as F
            from fp16_utils import clear_grads
            from elsewhere.fp16 import zero_grad

            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            for x, y in loader:
                clear_grads(model.parameters())
                F.cross_entropy(model(x), y).backward()
                opt.step()
            for x, y in loader:
                zero_grad(master_params)
                F.cross_entropy(model(x), y).backward()
                opt.step()
        """,
    }
    assert lint(tmp_path, files) == set()


MANUAL_SGD = """
    import torch
    import torch.nn.functional as F

    lr = 0.1
    for x, y in loader:
        loss = F.mse_loss(w * x + b, y)
        loss.backward()
        with torch.no_grad():
            w -= lr * w.grad
            b -= lr * b.grad
    for x, y in loader:
        F.mse_loss(net(x), y).backward()
        for p in net.parameters():
            p.data.add_(-lr * p.grad)
"""


def test_manual_sgd_that_never_clears_gradients(tmp_path):
    findings = run_one_source(tmp_path, textwrap.dedent(MANUAL_SGD))
    assert [(f.code, f.line) for f in findings] == [("NN201", 10), ("NN201", 15)]
    cleared = MANUAL_SGD.replace(
        "b -= lr * b.grad", "b -= lr * b.grad\n        w.grad = None\n        b.grad.zero_()"
    ).replace("p.data.add_(-lr * p.grad)", "p.data.add_(-lr * p.grad)\n        p.grad = None")
    assert run_one_source(tmp_path, textwrap.dedent(cleared)) == []


def test_clipping_by_a_helper_of_another_module_before_unscale(tmp_path):
    files = {
        "gradtools.py": """
            def clip_by_norm(model, limit):
                for p in model.parameters():
                    if p.grad is not None:
                        norm = p.grad.data.norm(2)
                        if norm > limit:
                            p.grad.data.mul_(limit / norm)
        """,
        "train.py": """
            import torch
            import gradtools

            scaler = torch.amp.GradScaler()
            opt = torch.optim.AdamW(model.parameters())
            for x, y in loader:
                opt.zero_grad()
                with torch.autocast("cuda", dtype=torch.float16):
                    loss = model(x, y)
                scaler.scale(loss).backward()
                gradtools.clip_by_norm(model, 1.0)
                scaler.step(opt)
                scaler.update()
        """,
    }
    assert lint(tmp_path, files) == {("train.py", "NN213")}
    unscaled = files["train.py"].replace(
        "scaler.scale(loss).backward()", "scaler.scale(loss).backward(); scaler.unscale_(opt)"
    )
    assert lint(tmp_path, {**files, "train.py": unscaled}) == set()


def test_eval_by_the_caller_and_the_loop_in_the_function_called(tmp_path):
    source = """
        import torch


        def validate(model, loader):
            scores = []
            for x, y in loader:
                scores.append((model(x).argmax(1) == y).float().mean().item())
            return scores


        def main():
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            for epoch in range(3):
                model.train()
                for x, y in loader:
                    opt.zero_grad()
                    torch.nn.functional.cross_entropy(model(x), y).backward()
                    opt.step()
                model.eval()
                validate(model, val_loader)
    """
    findings = run_one_source(tmp_path, textwrap.dedent(source))
    assert [(f.code, f.line) for f in findings] == [("NN206", 8)]
    guarded = source.replace(
        "validate(model, val_loader)",
        "with torch.no_grad():\n                    validate(model, val_loader)",
    )
    assert run_one_source(tmp_path, textwrap.dedent(guarded)) == []


def test_helper_clearing_some_gradients_between_backward_and_step(tmp_path):
    files = {
        "utils.py": """
            def cancel_last_layer(epoch, model, freeze_epochs):
                if epoch >= freeze_epochs:
                    return
                for name, p in model.named_parameters():
                    if "last_layer" in name:
                        p.grad = None
        """,
        "train.py": """
            import torch
            import utils

            opt = torch.optim.AdamW(student.parameters())
            for epoch in range(100):
                for x in loader:
                    opt.zero_grad()
                    loss_fn(student(x), teacher(x)).backward()
                    utils.cancel_last_layer(epoch, student, 1)
                    opt.step()
        """,
    }
    assert lint(tmp_path, files) == set()


def test_each_optimizer_keeps_its_own_clear(tmp_path):
    source = """
        import torch

        optimizer_G = torch.optim.Adam(gen.parameters())
        optimizer_D = torch.optim.Adam(disc.parameters())
        for real in loader:
            optimizer_G.zero_grad()
            g_loss(gen, disc).backward()
            optimizer_G.step()
            d_loss(gen, disc, real).backward()
            optimizer_D.step()
    """
    assert lint(tmp_path, {"gan.py": source}) == {("gan.py", "NN201")}


def test_no_grad_two_callers_up(tmp_path):
    source = """
        import torch


        def validation(model, loader):
            hits = 0
            for x, y in loader:
                hits += (model(x).argmax(1) == y).sum().item()
            return hits


        def benchmark_all(model, loaders):
            return [validation(model, loader) for loader in loaders]


        def test(model, loaders):
            model.eval()
            with torch.no_grad():
                print(benchmark_all(model, loaders))
                print(validation(model, loaders[0]))
    """
    assert lint(tmp_path, {"test.py": source}) == set()


def test_frozen_in_eval_mode_for_training_then_validated(tmp_path):
    source = """
        import torch
        import torch.nn.functional as F


        def train(model, loader, opt):
            model.eval()  # linear probe: the frozen backbone's BatchNorm must not move
            for x, y in loader:
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()


        def validate(model, loader):
            model.eval()
            with torch.no_grad():
                return sum((model(x).argmax(1) == y).sum().item() for x, y in loader)


        for epoch in range(90):
            train(model, train_loader, opt)
            validate(model, val_loader)
    """
    assert lint(tmp_path, {"main.py": source}) == set()


AMP_AND_ONE_LINERS = """
    import torch
    import torch.nn.functional as F


    def train_amp(model, loader, opt):
        scaler = torch.cuda.amp.GradScaler()
        for x, y in loader:
            with torch.autocast("cuda", dtype=torch.float16):
                loss = F.cross_entropy(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()


    def train_one_liners(model, loader, opt):
        for x, y in loader:
            model.train()
            loss = F.cross_entropy(model(x), y); loss.backward(); opt.step()
"""


def test_amp_step_and_statements_on_one_line_are_steps(tmp_path):
    findings = run_one_source(tmp_path, textwrap.dedent(AMP_AND_ONE_LINERS))
    assert [(f.code, f.line) for f in findings] == [("NN201", 12), ("NN201", 19)]
    assert findings[0].message.startswith("`scaler.step(opt)` in a loop")
    cleared = AMP_AND_ONE_LINERS.replace(
        "scaler.step(opt)", "scaler.step(opt); opt.zero_grad()"
    ).replace("model.train()\n", "model.train(); opt.zero_grad()\n")
    assert run_one_source(tmp_path, textwrap.dedent(cleared)) == []

"""Construction sites: findings point at the line where the user built the module."""

from __future__ import annotations

import importlib.util
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from nnlint.setup.sites import is_user_file, recording, site_for  # noqa: E402

SOURCE = """
import torch.nn as nn

class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.TransformerEncoderLayer(4, 2, dim_feedforward=8)
        self.head = Head()
        self.stack = nn.Sequential(
            nn.Linear(4, 4),
            nn.ReLU(),
        )

def build():
    return Net()
"""


@pytest.fixture
def user_module(tmp_path):
    path = tmp_path / "nnlint_sites_model.py"
    path.write_text(textwrap.dedent(SOURCE))
    spec = importlib.util.spec_from_file_location("nnlint_sites_model", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["nnlint_sites_model"] = module
    spec.loader.exec_module(module)
    yield module, str(path)
    sys.modules.pop("nnlint_sites_model", None)


def _line(text: str) -> int:
    return next(i for i, line in enumerate(textwrap.dedent(SOURCE).splitlines(), 1) if text in line)


def test_sites_point_at_the_users_assignment_lines(user_module):
    module, path = user_module
    with recording():
        model = module.build()
    assert site_for(model, "").line == _line("return Net()")
    assert site_for(model, "head").line == _line("self.head = Head()")
    assert site_for(model, "head.fc").line == _line("self.fc = nn.Linear(4, 2)")
    assert site_for(model, "stack.0").line == _line("nn.Linear(4, 4)")
    assert site_for(model, "stack.0").path == path


def test_library_built_modules_point_at_the_user_line_with_the_library_in_the_note(user_module):
    module, _ = user_module
    with recording():
        model = module.build()
    site = site_for(model, "enc.linear1")
    assert site.line == _line("self.enc = nn.TransformerEncoderLayer")
    assert "torch/nn/modules/transformer.py" in site.note


def test_recording_restores_module_init(user_module):
    module, _ = user_module
    init = nn.Module.__init__
    with recording():
        assert nn.Module.__init__ is not init
        module.build()
    assert nn.Module.__init__ is init


def test_unrecorded_instances_fall_back_to_the_class_source(user_module):
    module, _ = user_module
    model = module.build()  # built outside recording(), as an instance passed to nnlint.check
    assert site_for(model, "head.fc").line == _line("self.fc = nn.Linear(4, 2)")
    assert site_for(model, "enc").line == _line("self.enc = nn.TransformerEncoderLayer")


def test_library_files_are_not_user_files():
    assert not is_user_file(torch.nn.modules.conv.__file__)
    assert not is_user_file("<frozen importlib._bootstrap>")
    assert is_user_file(__file__)


def test_definition_lines_match_inspect_without_parsing_the_file(tmp_path, monkeypatch):
    import importlib
    import inspect

    from nnlint.setup.sites import definition

    (tmp_path / "defs_mod.py").write_text(
        "import os\n\n\n"
        "def deco(cls):\n    return cls\n\n\n"
        "@deco\n@deco\nclass Decorated:\n    pass\n\n\n"
        "class Plain:\n    class Inner:\n        pass\n\n\n"
        "def make():\n    class Plain:\n        pass\n    return Plain\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module("defs_mod")
    for obj in (mod.Decorated, mod.Plain, mod.Plain.Inner, mod.make, mod.deco):
        assert definition(obj) == (inspect.getsourcefile(obj), inspect.getsourcelines(obj)[1])
    assert definition(mod.make())[1] == inspect.getsourcelines(mod.make())[1]

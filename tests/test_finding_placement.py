"""Where model-phase findings point: one per rule and line, never into a library."""

from __future__ import annotations

import sys
import textwrap

import torch
import torch.nn as nn

import nnlint


def conv_bn(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class Stacked(nn.Module):
    """Three conv+BN blocks built by one helper call in a loop: one source line."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(*[conv_bn(3 if i == 0 else 8, 8) for i in range(3)])
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.blocks(x).mean((2, 3)))


def _batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 4, (8,), generator=g)


def test_modules_built_at_one_line_give_one_finding_listing_them():
    found = nnlint.check(Stacked, batch=_batch(), select=["NN101"])
    assert [f.code for f in found] == ["NN101"], found
    (finding,) = found
    assert "blocks.0.0" in finding.message
    assert "2 more modules built at this line" in finding.note
    assert "blocks.1.0 (Conv2d)" in finding.note and "blocks.2.0 (Conv2d)" in finding.note


def test_a_merged_finding_is_still_suppressed_at_its_line(tmp_path):
    found = nnlint.check(Stacked, batch=_batch(), select=["NN101"], ignore=["NN101"])
    assert found == []


LIBRARY = """
import torch.nn as nn


class LibNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.bn(self.conv(x)).relu().mean((2, 3)))
"""


def test_a_finding_never_points_into_site_packages(tmp_path, monkeypatch):
    package = tmp_path / "lib" / "site-packages" / "zoolib_placement"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(LIBRARY), encoding="utf-8")
    monkeypatch.syspath_prepend(str(package.parent))
    monkeypatch.delitem(sys.modules, "zoolib_placement", raising=False)
    from zoolib_placement import LibNet

    model = LibNet()
    line = sys._getframe().f_lineno + 1
    found = nnlint.check(model, batch=_batch(), select=["NN101"])
    assert [f.code for f in found] == ["NN101"], found
    (finding,) = found
    assert "site-packages" not in finding.path
    assert finding.path.endswith("test_finding_placement.py") and finding.line == line
    assert "zoolib_placement/__init__.py" in finding.note


def test_an_installed_package_is_a_package_where_the_stdlib_folder_holds_it(tmp_path, monkeypatch):
    # In a venv, sysconfig's platstdlib is the venv's lib folder, which holds its
    # site-packages: an error raised in an installed model is still the model's.
    from nnlint.setup import sites

    lib = tmp_path / "venv" / "lib" / "python3"
    package = lib / "site-packages" / "zoolib_raises"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("def boom():\n    raise ValueError('x')\n")
    monkeypatch.setattr(sites, "_LIBRARY_DIRS", (*sites._LIBRARY_DIRS, str(lib)))
    monkeypatch.setattr(sites, "_file_kinds", {})
    monkeypatch.syspath_prepend(str(package.parent))
    monkeypatch.delitem(sys.modules, "zoolib_raises", raising=False)
    import zoolib_raises

    try:
        zoolib_raises.boom()
    except ValueError as exc:
        frame = exc.__traceback__.tb_next.tb_frame
    assert frame.f_code.co_filename.endswith("zoolib_raises/__init__.py")
    assert sites.frame_kind(frame) == sites.PACKAGE

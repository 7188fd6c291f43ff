"""Notebook display: the checked IR and compiled modules as their diagram, a cost report as an
HTML table; examples/notebook.ipynb runs top to bottom under a real Jupyter kernel (nbclient)."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

import ncd
from ncd.analysis import analyze

ROOT = Path(__file__).resolve().parents[1]
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot binary is not installed")


@needs_dot
def test_checked_ir_displays_as_svg_with_every_axis():
    ir = ncd.check("transformer_encoder", D=64, H=4, F=128)
    bundle = ir._repr_mimebundle_()
    svg = bundle["image/svg+xml"]
    assert svg.lstrip().startswith(("<?xml", "<svg")) and "</svg>" in svg
    for axis in ("D=64", "H=4", "F=128", "K=16"):
        assert axis in svg
    assert ir._repr_svg_() == svg
    assert "text/plain" in bundle and "image/svg+xml" not in ir._repr_mimebundle_(exclude={"image/svg+xml"})


@needs_dot
def test_compiled_module_displays_its_block():
    model = ncd.load("transformer_encoder", D=64, H=4, F=128)
    whole = model._repr_svg_()
    attn = model.attn._repr_svg_()
    assert "EncoderLayer" in whole and ">attn: Attention<" not in attn
    assert "softmax" in attn and "relu" not in attn  # the attention block alone, not the FFN


def test_without_dot_the_bundle_carries_the_dot_text(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    bundle = ncd.check("mlp_relu")._repr_mimebundle_()
    assert "image/svg+xml" not in bundle and bundle["text/vnd.graphviz"].startswith("digraph")


def test_cost_report_is_an_html_table():
    report = analyze(ncd.check("transformer_encoder", D=64, H=4, F=128), {"B": 8, "T": 128})
    table = report._repr_html_()
    assert table.startswith("<table") and table.count("<tr>") == 1 + len(report.blocks)
    for name in ("EncoderLayer/attn", "EncoderLayer/ffn", "EncoderLayer/norm1", "total"):
        assert re.search(rf"<td[^>]*>(<b>)?{name}<", table)
    reference = sum(p.numel() for p in torch.nn.TransformerEncoderLayer(64, 4, 128).parameters())
    assert report.number(report.total["params"]) == reference == 33472
    assert "<td>33.5 k</td>" in table


def test_example_notebook_runs(tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="the ncd[notebook] extra (nbformat) is not installed")
    nbclient = pytest.importorskip("nbclient", reason="the ncd[notebook] extra (nbclient) is not installed")
    pytest.importorskip("ipykernel", reason="the ncd[notebook] extra (ipykernel) is not installed")
    nb = nbformat.read(ROOT / "examples" / "notebook.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
                            ).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    shown = [o.data for o in outputs if o.output_type == "execute_result"]
    diagram = "image/svg+xml" if shutil.which("dot") else "text/vnd.graphviz"
    assert sum(diagram in d for d in shown) == 2  # the IR and the module
    assert any("<table" in d.get("text/html", "") for d in shown)
    assert any("(2, 16, 64)" in o.get("text", "") for o in outputs if o.output_type == "stream")

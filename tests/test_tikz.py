"""TikZ figures (`ncd render SPEC -o fig.tex`), laid out by Graphviz, and costs on the boxes
(`--annotate`). Every library spec's figure compiles where a TeX engine is installed (`make tex`)."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import ncd
from ncd.analysis import analyze
from ncd.analysis.format import human
from ncd.backends.graphviz import render, render_dot
from ncd.backends.graphviz.tikz import latex_escape
from ncd.cli import main
from ncd.ir import walk
from ncd.library import library_specs

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot binary is not installed (make dot)")
ENGINE = next((e for e in ("pdflatex", "lualatex") if shutil.which(e)), None)


def _tex_ready() -> str | None:
    if ENGINE is None:
        return "no TeX engine (pdflatex or lualatex) is installed: `make tex` installs one"
    for package in ("standalone.cls", "tikz.sty"):
        found = subprocess.run(["kpsewhich", package], capture_output=True, text=True) if shutil.which("kpsewhich") else None
        if found is None or not found.stdout.strip():
            return f"the TeX installation lacks {package}: `make tex` installs it"
    return None


TEX_MISSING = _tex_ready()
needs_tex = pytest.mark.skipif(TEX_MISSING is not None, reason=TEX_MISSING or "")


def compile_tex(path: Path) -> None:
    proc = subprocess.run([ENGINE, "-interaction=nonstopmode", "-halt-on-error", path.name], cwd=path.parent,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert path.with_suffix(".pdf").stat().st_size > 1000


def drawn_blocks(ir) -> set[str]:
    names = {ir.entry_block.name}
    todo = [ir.entry_block]
    while todo:
        block = todo.pop()
        for node in walk(block.nodes):
            if node.op == "call":
                inner = ir.blocks[node.attrs["block"]]
                if inner.name not in names:
                    names.add(inner.name)
                    todo.append(inner)
    return names


@needs_dot
@pytest.mark.parametrize("spec", library_specs(), ids=lambda p: p.stem)
def test_every_library_figure_has_every_axis_and_block(spec, tmp_path):
    ir = ncd.check(spec)
    out = render(ir, tmp_path / "fig.tex")
    tex = out.read_text(encoding="utf-8")
    assert tex.startswith("%") and "\\begin{tikzpicture}" in tex and tex.rstrip().endswith("\\end{tikzpicture}")
    assert "\\documentclass" not in tex
    texts = re.findall(r"\] at \([^)]*\) \{(.*)\};$", tex, re.M)
    for axis, definition in ir.axes.items():
        if definition.prime_of is None and not axis.endswith("'"):
            assert any(t == latex_escape(axis) for t in texts), axis  # its legend entry
    bound = {a: v for a, v in ir.bindings.items()}
    for name in drawn_blocks(ir):
        assert any(latex_escape(name) in t for t in texts), name
    for axis, value in bound.items():
        assert f"{latex_escape(axis)}={value}" in texts


@needs_dot
@needs_tex
@pytest.mark.parametrize("spec", library_specs(), ids=lambda p: p.stem)
def test_every_library_figure_compiles(spec, tmp_path):
    out = render(ncd.check(spec), tmp_path / "fig.tex", standalone=True)
    assert out.read_text(encoding="utf-8").startswith("\\documentclass")
    compile_tex(out)


@needs_dot
@needs_tex
def test_a_picture_inputs_into_a_paper(tmp_path):
    render(ncd.check("gru"), tmp_path / "fig.tex", annotate="params")
    paper = tmp_path / "paper.tex"
    paper.write_text("\\documentclass{article}\n\\usepackage{tikz}\n\\begin{document}\nFigure:\n"
                     "\\resizebox{\\linewidth}{!}{\\input{fig.tex}}\n\\end{document}\n")
    compile_tex(paper)


def test_latex_escape_leaves_no_command_of_the_text():
    hostile = r"\input{/etc/passwd} $x$ 100% #1 a_b ~ ^ & {} <b> | … × ⟨T⟩ → σ ✓"
    text = latex_escape(hostile)
    assert "\\input" not in text.replace("\\textbackslash{}input", "")
    assert all(ord(c) < 128 for c in text)
    for raw in ("%", "#", "&", "_"):
        assert f"\\{raw}" in text and raw not in text.replace(f"\\{raw}", "")
    assert "$\\sigma$" in text and "\\ldots{}" in text and "$\\times$" in text


@needs_dot
@needs_tex
def test_hostile_names_compile(tmp_path):
    spec = "axis D_1 = 4\nblock Odd_Name__x(x: [D_1]) -> [D_1] { return relu(x) }\n"
    out = render(ncd.check(spec), tmp_path / "fig.tex", standalone=True)
    assert "Odd\\_Name\\_\\_x" in out.read_text()
    compile_tex(out)


# ---------------------------------------------------------------- --annotate
def notes(dot: str) -> list[str]:
    return re.findall(r'color="#5A5A5A">([^<]*)<', dot)


def test_annotate_flops_matches_the_cost_analysis_and_the_equations():
    ir = ncd.check("mlp_relu")
    sizes = {"B": 8}
    dot = render_dot(ir, annotate="flops", sizes=sizes)
    report = analyze(ir, sizes)
    assert f"{human(report.number(report.total['flops_fwd']))} FLOPs" == notes(dot)[0]  # the entry's cluster
    first_matmul = 2 * 8 * 64 * 256  # x @[E] W1: B·E·F multiply-adds (the spec's own equation)
    assert any(n == f"{human(first_matmul)} FLOPs" or n == f"{human(first_matmul + 8 * 256)} FLOPs"
               for n in notes(dot))


def test_annotate_params_counts_what_torch_counts():
    ir = ncd.check("transformer_encoder", D=32, H=4, F=64)
    dot = render_dot(ir, annotate="params")
    reference = sum(p.numel() for p in torch.nn.TransformerEncoderLayer(32, 4, 64).parameters())
    assert notes(dot)[0] == f"{human(reference)} params"
    attn = sum(p.numel() for p in torch.nn.MultiheadAttention(32, 4).parameters())
    assert f"{human(attn)} params" in notes(dot)
    assert "1.02 k params" in notes(dot)  # Wq: D·H·K = 32·32


def test_annotate_formulas_where_axes_are_free():
    dot = render_dot(ncd.check("mlp_relu"), annotate="memory")
    assert any("B" in n for n in notes(dot))  # B is free: the formula, not a number


def test_annotate_time_needs_sizes_and_reads_the_roofline():
    with pytest.raises(ncd.NcdError, match="needs every axis bound"):
        render_dot(ncd.check("mlp_relu"), annotate="time")
    dot = render_dot(ncd.check("mlp_relu"), annotate="time", sizes={"B": 64})
    assert notes(dot)[0].endswith("on h100")


def test_render_without_annotate_is_unchanged():
    ir = ncd.check("gru")
    assert render_dot(ir) == render_dot(ir, annotate=None) and "#5A5A5A" not in render_dot(ir)


# ---------------------------------------------------------------- CLI
@needs_dot
def test_cli_render_tikz(tmp_path, capsys):
    out = tmp_path / "fig.tex"
    assert main(["render", "gru", "-o", str(out), "--standalone", "--annotate", "flops", "--set", "B=4", "T=16"]) == 0
    tex = out.read_text()
    assert tex.startswith("\\documentclass") and "FLOPs" in tex
    assert main(["render", "gru", "-o", str(tmp_path / "fig.svg"), "--standalone"]) != 0
    assert "--standalone is for TikZ output" in capsys.readouterr().err


def test_a_layout_beyond_texs_dimensions_is_scaled_down():
    from ncd.backends.graphviz.tikz import MAX_EXTENT_BP, extent_scale

    assert extent_scale({"bb": "0,0,1200,800"}) == 1.0
    assert extent_scale({"bb": "0,0,32000,900"}) == MAX_EXTENT_BP / 32000
    assert extent_scale({"bb": "0,0,300,20000"}) == MAX_EXTENT_BP / 20000


@needs_dot
def test_a_contraction_label_is_one_piece_of_text_with_its_bracket(tmp_path):
    """`@[D']`: Graphviz drops a "]" right after a closing tag, and places each coloured piece at
    its own estimate of the previous piece's width (a stray space in the figure). The TikZ node
    holds the whole label, the axis in its colour, so TeX sets it without a gap."""
    ir = ncd.check("rnn_tanh")
    tex = render(ir, tmp_path / "fig.tex").read_text(encoding="utf-8")
    label = re.search(r"\{@\[\{\\fontsize.*\\color\{ncd\d+\}D'\}\{\\fontsize.*\\color\{ncd\d+\}\]\}\};$", tex, re.M)
    assert label is not None, [line for line in tex.splitlines() if "@[" in line]
    from ncd.backends.graphviz.draw import render_dot as to_dot

    svg = subprocess.run(["dot", "-Tsvg"], input=to_dot(ir), capture_output=True, text=True, check=True).stdout
    assert re.search(r">@\[</text>\s*<text[^>]*>D&#39;</text>\s*<text[^>]*>\]</text>", svg), svg

"""The Graphviz renderer: every shipped spec draws as valid SVG naming all its axes and blocks,
DOT text is deterministic, and wrong options fail with an NcdError that says what to do."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import ncd
from ncd.backends.graphviz import render, render_dot

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.ncd"))
HAVE_DOT = shutil.which("dot") is not None


def svg_texts(path: Path) -> list[str]:
    tree = ET.parse(path)  # raises on invalid XML
    assert tree.getroot().tag.endswith("svg")
    return ["".join(el.itertext()).strip() for el in tree.iter() if el.tag.endswith("text")]


@pytest.mark.skipif(not HAVE_DOT, reason="the Graphviz dot binary is not installed (make dot)")
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.stem)
def test_every_spec_renders_valid_svg_with_its_axes_and_blocks(spec, tmp_path):
    ir = ncd.check(spec)
    out = render(ir, tmp_path / f"{spec.stem}.svg")
    texts = svg_texts(out)
    joined = "\n".join(texts)
    for other in ir.entries[1:]:  # a diagram draws one entry: the others' blocks are in theirs
        joined += "\n" + "\n".join(svg_texts(render(ncd.check(spec, block=other), tmp_path / f"{other}.svg")))
    for name, axis in ir.axes.items():
        base = axis.prime_of or name.rstrip("'")
        assert base in texts, f"axis {base} has no label in the {spec.stem} diagram"
    for block in ir.blocks.values():
        assert block.name in joined, f"block {block.name} is missing from the {spec.stem} diagram"


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.stem)
def test_dot_is_deterministic(spec):
    ir = ncd.check(spec)
    first = render_dot(ir)
    assert first == render_dot(ncd.check(spec)) == render_dot(ir)
    assert first.startswith("digraph ncd {") and first.rstrip().endswith("}")


def test_dot_is_byte_identical_across_processes(tmp_path):
    """Hash randomisation must not reach the output: render in two fresh interpreters."""
    spec = ROOT / "specs" / "transformer_encoder.ncd"
    outs = []
    for seed in ("1", "2"):
        out = tmp_path / f"{seed}.dot"
        code = f"import ncd; from ncd.backends.graphviz import render; render(ncd.check({str(spec)!r}), {str(out)!r})"
        subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONHASHSEED": seed})
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    assert outs[0].decode() == render_dot(ncd.check(spec))


def test_depth_collapses_blocks_and_expand_picks_one():
    ir = ncd.check(ROOT / "specs" / "transformer_encoder.ncd")
    full, top = render_dot(ir), render_dot(ir, depth=1)
    assert 'cluster_EncoderLayer/attn"' in full and 'cluster_EncoderLayer/attn"' not in top
    assert "attn: Attention" in top and "ffn: FFN" in top
    attention = render_dot(ir, expand="Attention")
    assert attention == render_dot(ir, expand="attn")  # by block or by instance name
    assert "cluster_Attention" in attention and "FFN" not in attention.split("legend")[0]


def test_repeated_block_is_drawn_once_with_its_count():
    ir = ncd.check(ROOT / "specs" / "vit.ncd")
    dot = render_dot(ir)
    assert "×2" in dot
    assert dot.count('cluster_ViT/layers"') == 1


def test_scan_is_a_loop_carrying_its_state():
    dot = render_dot(ncd.check(ROOT / "specs" / "lstm.ncd"))
    assert "scan t over T" in dot
    assert dot.count("constraint=false") == 2  # h and c loop back to the step's start
    assert "stack over T" in dot


def test_learned_ops_are_bold_and_broadcast_is_shown():
    dot = render_dot(ncd.check(ROOT / "specs" / "mlp_relu.ncd"))
    assert "penwidth=2.2" in dot  # x @ W reads a parameter
    assert "broadcast ⟨" in dot or "⟨" in dot


def test_wire_colours_are_one_per_axis_and_in_the_legend():
    from ncd.backends.graphviz import axis_colours

    ir = ncd.check(ROOT / "specs" / "attention.ncd")
    colours = axis_colours(ir)
    assert len(set(colours.values())) == len(colours)
    dot = render_dot(ir)
    legend = dot.split("cluster_legend")[1]
    for axis, colour in colours.items():
        assert f'<font color="{colour}">{axis}</font>' in legend


def test_wrong_expand_names_the_choices():
    ir = ncd.check(ROOT / "specs" / "transformer_encoder.ncd")
    with pytest.raises(ncd.NcdError, match="no block or instance named 'Atention'") as info:
        render_dot(ir, expand="Atention")
    assert "Attention" in info.value.hint


def test_unwritable_output_is_an_ncd_error(tmp_path):
    ir = ncd.check(ROOT / "specs" / "attention.ncd")
    with pytest.raises(ncd.NcdError, match="does not exist"):
        render(ir, tmp_path / "missing" / "a.dot")
    (tmp_path / "taken.dot").mkdir()
    with pytest.raises(ncd.NcdError, match="cannot write"):
        render(ir, tmp_path / "taken.dot")
    with pytest.raises(ncd.NcdError, match="unknown format"):
        render(ir, tmp_path / "a.jpg")
    with pytest.raises(ncd.NcdError, match="unknown theme"):
        render(ir, tmp_path / "a.dot", theme="neon")


def test_without_dot_only_dot_output_works(tmp_path, monkeypatch):
    import ncd.backends.graphviz.dot as gv_dot

    monkeypatch.setattr(gv_dot.shutil, "which", lambda name: None)
    ir = ncd.check(ROOT / "specs" / "attention.ncd")
    assert render(ir, tmp_path / "a.dot").read_text().startswith("digraph")
    with pytest.raises(ncd.NcdError, match="dot` binary is not installed") as info:
        render(ir, tmp_path / "a.svg")
    assert "install" in info.value.hint and "graphviz" in info.value.hint


def test_cli_render_and_cost_entry_points(tmp_path, capsys):
    import argparse

    from ncd.cli import cost as cli_cost
    from ncd.cli import render as cli_render

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    cli_render.add_parser(sub)
    cli_cost.add_parser(sub)
    spec = str(ROOT / "specs" / "transformer_encoder.ncd")
    out = tmp_path / "t.dot"
    args = parser.parse_args(["render", spec, "-o", str(out), "--depth", "1"])
    assert cli_render.run(args) == 0 and out.read_text().startswith("digraph")
    assert "wrote" in capsys.readouterr().out
    args = parser.parse_args(["cost", spec, "--set", "B=8", "T=2048", "--json"])
    assert cli_cost.run(args) == 0
    import json

    data = json.loads(capsys.readouterr().out)
    assert data["total"]["params"] == 3152384
    args = parser.parse_args(["cost", spec, "--formula", "--by", "block"])
    assert cli_cost.run(args) == 0
    text = capsys.readouterr().out
    assert "matmul_flops_fwd   = 8·B·T·D² + 4·B·T·D·F + 4·B·T²·D" in text


def test_plain_theme_is_black_and_white():
    from ncd.backends.graphviz import PALETTE

    dot = render_dot(ncd.check(ROOT / "specs" / "attention.ncd"), theme="plain")
    assert not any(colour in dot for colour in PALETTE)


def _wide_spec(n: int) -> str:
    """A title full of control characters and markup, and n axes: a legend far beyond 16384 bytes."""
    axes = ", ".join(f"A{i} = {i % 7 + 1}" for i in range(n))
    ports = ", ".join(f"A{i}" for i in range(n))
    over = ", ".join(f"A{i}" for i in range(1, n))
    return (f"# T\x01itle \x1b[31m <b>&\u2028 {'x' * 300}\naxis {axes}\n"
            f"block F(x: [{ports}]) -> [A0] {{\n    return sum(x, over = [{over}])\n}}\n")


def test_control_characters_in_the_title_are_escaped_and_long_titles_clipped():
    dot = render_dot(ncd.check(_wide_spec(3)))
    title = next(line for line in dot.split("\n") if "label=<<b>T" in line)
    assert "\x01" not in dot and "\x1b" not in dot and "\u2028" not in dot
    assert "T\\x01itle \\x1b[31m &lt;b&gt;&amp;\\u2028" in title
    assert "x" * 300 not in title and "…" in title


@pytest.mark.skipif(shutil.which("dot") is None, reason="the Graphviz dot binary is not installed")
def test_a_legend_beyond_graphvizs_html_label_limit_is_split(tmp_path):
    from ncd.backends.graphviz.draw import HTML_LABEL_LIMIT

    ir = ncd.check(_wide_spec(400))
    dot = render_dot(ir)
    labels = re.findall(r"label=<(.*)>\]?;?$", dot, flags=re.MULTILINE)
    assert labels and max(len(label.encode()) for label in labels) < HTML_LABEL_LIMIT
    assert "legend_1 [" in dot  # the legend became several tables
    assert render(ir, tmp_path / "wide.svg").read_text().startswith("<?xml")


@pytest.mark.skipif(shutil.which("dot") is None, reason="the Graphviz dot binary is not installed")
def test_a_graphviz_timeout_is_an_ncd_error(tmp_path, monkeypatch):
    import ncd.backends.graphviz.dot as gv_dot

    monkeypatch.setattr(gv_dot, "DOT_TIMEOUT_S", 1e-4)
    with pytest.raises(ncd.NcdError, match="graphviz took longer than") as info:
        render(ncd.check(ROOT / "specs" / "attention.ncd"), tmp_path / "a.svg")
    assert "--depth" in info.value.hint
    assert not (tmp_path / "a.svg").exists()


# One `use` instance called twice in a block: inside and outside a scan (both orders), in two
# loops, twice in a row. Drawn with one set of names, the second drawing re-opened the first's
# cluster and re-declared its nodes, so one node sat in two clusters: Graphviz 2.43's dot
# segfaults on the scan-then-outside order and draws the others tangled.
SHARED_LAYER = """
axis T, D = 4
block Layer(x: [D]) -> [D] {
  param W: [D, D'] init normal(0, 0.3)
  return tanh(x @[D] W)[D' as D]
}
block Top(x: [T, D]) -> [T, D] {
  use layer = Layer
BODY
}
"""
SHARED_CALLS = {
    "scan then outside": """  ys = scan t over T carry (h: [D] = 0) {
    h = layer(h + x[t])
    emit h
  }
  return layer(ys)""",
    "outside then scan": """  y = layer(x)
  return scan t over T carry (h: [D] = 0) {
    h = layer(h + y[t])
    emit h
  }""",
    "two loops": """  repeat 2 { x = layer(x) }
  return scan t over T carry (h: [D] = 0) {
    h = layer(h + x[t])
    emit h
  }""",
    "twice in a row": "  return layer(layer(x))",
}


@pytest.mark.parametrize("case", SHARED_CALLS, ids=lambda c: c.replace(" ", "_"))
def test_an_instance_called_twice_is_drawn_twice_with_names_of_its_own(case, tmp_path):
    ir = ncd.check(SHARED_LAYER.replace("BODY", SHARED_CALLS[case]))
    dot = render_dot(ir)
    clusters = re.findall(r"^\s*subgraph (\S+) \{", dot, flags=re.MULTILINE)
    declared = re.findall(r'^\s*("[^"]+") \[', dot, flags=re.MULTILINE)
    assert len(clusters) == len(set(clusters)), "a cluster is opened twice"
    assert len(declared) == len(set(declared)), "a node is declared twice (it would sit in two clusters)"
    assert sum(c.startswith('"cluster_Top/layer') for c in clusters) == 2
    assert dot.count("label=<<b>layer: Layer</b>") == 2
    if HAVE_DOT:
        texts = svg_texts(render(ir, tmp_path / "shared.svg"))
        assert texts.count("layer: Layer") == 2


def test_a_crashing_dot_is_an_ncd_error_naming_the_signal(tmp_path, monkeypatch):
    """Should dot crash anyway (killed by a signal), the CLI says so: exit 1, no traceback."""
    import ncd.backends.graphviz.dot as gv_dot
    from ncd.cli import main

    fake = tmp_path / "dot"
    fake.write_text("#!/bin/sh\ncat > /dev/null\nkill -SEGV $$\n")
    fake.chmod(0o755)
    monkeypatch.setattr(gv_dot.shutil, "which", lambda name: str(fake))
    spec = ROOT / "specs" / "attention.ncd"
    with pytest.raises(ncd.NcdError, match=r"dot crashed \(SIGSEGV\) laying out a\.svg") as info:
        render(ncd.check(spec), tmp_path / "a.svg")
    assert "--depth" in info.value.hint and ".dot" in info.value.hint
    assert not (tmp_path / "a.svg").exists()
    assert main(["render", str(spec), "-o", str(tmp_path / "b.svg")]) == 1

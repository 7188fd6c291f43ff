"""docs/diagrams/ holds exactly one current SVG per library spec (regenerate with
`python bench/render_all.py`): no spec without a diagram, no diagram of a spec that is gone, and
each stored drawing shows what a fresh render shows (its texts and node names; positions may
differ between Graphviz versions, so they are not compared)."""
from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import ncd
from ncd.library import library_specs

ROOT = Path(__file__).resolve().parent.parent
DIAGRAMS = ROOT / "docs" / "diagrams"
HAVE_DOT = shutil.which("dot") is not None
NAMES = [p.stem for p in library_specs()]


def drawn_content(path: Path) -> tuple[list[str], list[str]]:
    """The sorted texts and node/cluster titles of an SVG: what it shows, not where."""
    tree = ET.parse(path)
    texts, titles = [], []
    for el in tree.iter():
        if el.tag.endswith("}text") or el.tag == "text":
            texts.append("".join(el.itertext()))
        elif el.tag.endswith("}title") or el.tag == "title":
            titles.append("".join(el.itertext()))
    return sorted(texts), sorted(titles)


def test_the_diagram_set_is_the_library():
    assert NAMES, "no library specs found"
    assert sorted(p.stem for p in DIAGRAMS.glob("*.svg")) == sorted(NAMES)


def test_the_index_lists_every_library_spec_once():
    index = (DIAGRAMS / "README.md").read_text(encoding="utf-8")
    listed = re.findall(r"^- \[([^\]]+)\]\(([^)]+)\.svg\)", index, flags=re.M)
    assert [name for name, _ in listed] == sorted(NAMES)
    assert all(name == file for name, file in listed)


@pytest.mark.skipif(not HAVE_DOT, reason="the Graphviz dot binary is not installed (make dot)")
@pytest.mark.parametrize("name", NAMES)
def test_each_stored_diagram_is_current(name, tmp_path):
    from ncd.backends.graphviz import render

    fresh = render(ncd.check(ncd.library.library_path(name)), tmp_path / f"{name}.svg")
    assert drawn_content(DIAGRAMS / f"{name}.svg") == drawn_content(fresh), (
        f"docs/diagrams/{name}.svg is stale: run `python bench/render_all.py`")

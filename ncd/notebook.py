"""Jupyter display: a checked spec (``ncd.check``) and a compiled module show as their diagram
(SVG through Graphviz's ``dot``; the DOT text where ``dot`` is missing), a cost report as an HTML
table. The IR, module and report classes delegate their ``_repr_*_`` methods here, so nothing
imports IPython."""
from __future__ import annotations

import shutil
from typing import Any

SVG = "image/svg+xml"
DOT = "text/vnd.graphviz"


def dot_text(ir, block: str | None = None) -> str:
    from ncd.backends.graphviz import render_dot

    expand = block if block is not None and block != ir.entry else None
    return render_dot(ir, expand=expand)


def svg(ir, block: str | None = None) -> str | None:
    """The diagram as SVG text, or None where Graphviz's ``dot`` is not installed."""
    from ncd.backends.graphviz.dot import run_dot

    if shutil.which("dot") is None:
        return None
    return run_dot(dot_text(ir, block), "svg", f"the diagram of {ir.name}").decode("utf-8")


def mimebundle(ir, block: str | None = None, summary: str = "") -> dict[str, Any]:
    """What Jupyter shows: the SVG diagram, else the DOT text; always a plain-text line."""
    bundle: dict[str, Any] = {"text/plain": summary or f"<ncd spec {ir.name}, entry {ir.entry}>"}
    image = svg(ir, block)
    if image is not None:
        bundle[SVG] = image
    else:
        bundle[DOT] = dot_text(ir, block)
    return bundle


def select(bundle: dict[str, Any], include=None, exclude=None) -> dict[str, Any]:
    return {k: v for k, v in bundle.items() if (not include or k in include) and (not exclude or k not in exclude)}

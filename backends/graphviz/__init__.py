"""The Graphviz backend: IR → DOT text (draw.py, pure) → SVG/PDF/PNG through the `dot` binary,
or TikZ for LaTeX from Graphviz's own layout (tikz.py)."""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ncd.backends.graphviz.dot import INSTALL_HINT, run_dot
from ncd.backends.graphviz.draw import PALETTE, THEMES, axis_colours, render_dot
from ncd.errors import NcdError
from ncd.ir import SpecIR

FORMATS = ("svg", "pdf", "png", "dot", "tex")


def render(ir: SpecIR, path: str | os.PathLike[str], *, depth: int | None = None, expand: str | None = None,
           theme: str = "paper", fmt: str | None = None, standalone: bool = False, annotate: str | None = None,
           sizes: Mapping[str, int] | None = None) -> Path:
    """Write the diagram of ``ir`` to ``path``; the format follows the suffix (or ``fmt``).

    ``.tex`` is TikZ: a ``standalone`` document with ``standalone``, else a ``tikzpicture`` to
    ``\\input``. ``annotate`` (flops, params, memory or time) writes each box's cost at ``sizes``."""
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt not in FORMATS:
        raise NcdError(f"cannot render to {path.name!r}: unknown format {fmt or '(none)'}",
                       hint=f"name the output with one of .{', .'.join(FORMATS)}")
    dot_text = render_dot(ir, depth=depth, expand=expand, theme=theme, annotate=annotate, sizes=sizes)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise NcdError(f"cannot write {path}: directory {parent} does not exist", hint="create it first")
    if fmt == "dot":
        data = dot_text.encode("utf-8")
    elif fmt == "tex":
        from ncd.backends.graphviz.tikz import to_tikz

        data = to_tikz(dot_text, standalone=standalone).encode("utf-8")
    else:
        data = run_dot(dot_text, fmt, path.name)
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise NcdError(f"cannot write {path}: {exc.strerror or exc}", hint="choose a writable output path") from None
    return path


__all__ = ["FORMATS", "INSTALL_HINT", "PALETTE", "THEMES", "axis_colours", "render", "render_dot"]

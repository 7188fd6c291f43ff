"""DOT → TikZ: Graphviz lays the diagram out (``dot -Tjson``: every shape, wire and text run as
xdot drawing operations at its position), this file only writes those operations as TikZ, so a
figure for a paper matches the SVG: same layout, colours per axis, bold learned ops, dashed loops.

``standalone=True`` writes a whole ``standalone`` document (``pdflatex fig.tex``); otherwise a
``tikzpicture`` to ``\\input`` (needs ``\\usepackage{tikz}``). Coordinates are Graphviz points
(``x=1bp``); scale a wide figure with ``\\resizebox{\\linewidth}{!}{\\input{fig.tex}}``.
"""
from __future__ import annotations

import json
import re
import shutil
import unicodedata
from typing import Any

from ncd.backends.graphviz.dot import INSTALL_HINT, run_dot
from ncd.errors import NcdError

SPECIAL = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#", "^": r"\^{}",
           "_": r"\_", "%": r"\%", "~": r"\~{}", "<": r"$<$", ">": r"$>$", "|": r"$|$", "-": "-{}"}
UNICODE = {"…": r"\ldots{}", "×": r"$\times$", "⟨": r"$\langle$", "⟩": r"$\rangle$", "→": r"$\to$", "←": r"$\leftarrow$",
           "−": r"$-$", "÷": r"$\div$", "━": r"\rule[0.35ex]{0.6em}{1.2pt}", "≤": r"$\leq$", "≥": r"$\geq$",
           "·": r"$\cdot$", "⊙": r"$\odot$", "√": r"$\surd$", "∑": r"$\sum$", "≠": r"$\neq$", "∞": r"$\infty$",
           "–": "--", "—": "---", "’": "'", "‘": "`", "“": "``", "”": "''", "²": r"$^2$", "³": r"$^3$",
           "¹": r"$^1$", "⁻": r"$^-$", "₀": r"$_0$", "₁": r"$_1$", "₂": r"$_2$", "\u00a0": "~"}
GREEK_CAPITALS = {"Gamma", "Delta", "Theta", "Lambda", "Xi", "Pi", "Sigma", "Upsilon", "Phi", "Psi", "Omega"}
ALIGN = {"l": "base west", "c": "base", "r": "base east"}
NAMED = {"white": "FFFFFF", "black": "000000", "transparent": None, "none": None, "red": "FF0000",
         "blue": "0000FF", "green": "00FF00", "gray": "C0C0C0", "grey": "C0C0C0"}
EDGE_OPS = ("_draw_", "_hdraw_", "_tdraw_", "_ldraw_", "_hldraw_", "_tldraw_")
MAX_OPS = 2_000_000  # a drawing this large is not a figure: stop rather than write gigabytes


def latex_escape(text: str) -> str:
    """Text safe in a LaTeX document (pdflatex, OT1 or T1): specials escaped, the diagram's
    symbols as their LaTeX commands, Greek letters as math, anything else as its closest ASCII."""
    out = []
    for ch in text:
        if ch in SPECIAL:
            out.append(SPECIAL[ch])
        elif ord(ch) < 128:
            out.append(ch)
        elif ch in UNICODE:
            out.append(UNICODE[ch])
        else:
            out.append(_fallback(ch))
    return "".join(out)


def _fallback(ch: str) -> str:
    name = unicodedata.name(ch, "")
    greek = re.fullmatch(r"GREEK (SMALL|CAPITAL) LETTER ([A-Z]+)", name)
    if greek:
        letter = greek.group(2).lower()
        if greek.group(1) == "CAPITAL":
            letter = letter.capitalize()
            if letter not in GREEK_CAPITALS:
                return unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode() or "?"
        letter = {"lamda": "lambda", "Lamda": "Lambda", "omicron": "o"}.get(letter, letter)
        return f"$\\{letter}$" if letter != "o" else "o"
    plain = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
    return latex_escape(plain) if plain else "?"


def layout(dot_text: str) -> dict[str, Any]:
    """Graphviz's own layout of the DOT text, with its drawing operations (``dot -Tjson``)."""
    if shutil.which("dot") is None:
        raise NcdError("TikZ output needs the Graphviz `dot` binary for the layout", hint=INSTALL_HINT)
    return json.loads(run_dot(dot_text, "json", "the TikZ layout").decode("utf-8"))


# TeX's largest dimension is 16383.99998pt, and pgf parses coordinates as dimensions: a layout
# wider or taller than this is drawn scaled down as a whole (positions, fonts and line widths).
MAX_EXTENT_BP = 16000.0


def extent_scale(graph: dict[str, Any]) -> float:
    """1, or the factor that brings the layout's bounding box within TeX's dimensions."""
    try:
        _, _, width, height = (float(v) for v in str(graph.get("bb", "0,0,0,0")).split(","))
    except ValueError:
        return 1.0
    largest = max(width, height)
    return MAX_EXTENT_BP / largest if largest > MAX_EXTENT_BP else 1.0


class Writer:
    """xdot drawing operations → TikZ commands, with one \\definecolor per colour used; every length
    is multiplied by ``scale`` (1 unless the layout is too large for TeX)."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale
        self.colours: dict[str, str] = {}
        self.lines: list[str] = []
        self.count = 0
        self._run: tuple[int, str, float] | None = None  # the last text node: line, baseline, right end

    def colour(self, spec: str) -> str | None:
        spec = spec.strip()
        if spec.startswith("#"):
            hexa = spec[1:]
            if len(hexa) == 8 and hexa[6:].lower() == "00":
                return None  # fully transparent
            hexa = hexa[:6].upper()
        else:
            hexa = NAMED.get(spec.lower(), "000000")
            if hexa is None:
                return None
        if not re.fullmatch(r"[0-9A-F]{6}", hexa):
            return None
        if hexa not in self.colours:
            self.colours[hexa] = f"ncd{len(self.colours)}"
        return self.colours[hexa]

    def ops(self, ops: list[dict[str, Any]]) -> None:
        pen: str | None = self.colour("#000000")
        fill: str | None = None
        width, dash, invisible = 1.0, "", False
        size, flags = 14.0, 0
        for op in ops:
            self.count += 1
            if self.count > MAX_OPS:
                raise NcdError(f"the diagram has more than {MAX_OPS} drawing operations: too large for TikZ",
                               hint="draw fewer levels: --depth 1")
            kind = op.get("op")
            if kind == "c":
                pen = self.colour(op.get("color", "#000000"))
            elif kind == "C":
                fill = self.colour(op.get("color", "#000000"))
            elif kind == "S":
                style = op.get("style", "")
                if style.startswith("setlinewidth("):
                    width = float(style[len("setlinewidth("):-1] or 1)
                elif style in ("dashed", "dotted"):
                    dash = style
                elif style == "solid":
                    dash = ""
                elif style == "bold":
                    width = 2.0
                elif style == "invis":
                    invisible = True
            elif kind == "F":
                size = float(op.get("size", size))
            elif kind == "t":
                flags = int(op.get("fontchar", 0))
            elif invisible:
                continue
            elif kind == "T":
                self.text(op, size, flags, pen)
            elif kind in ("p", "P", "b", "B", "L"):
                self.path(kind, op.get("points", []), pen, fill if kind in "PB" else None, width, dash)
            elif kind in ("e", "E"):
                x, y, rx, ry = op.get("rect", [0, 0, 0, 0])
                k = self.scale
                self.emit(self.style(pen, fill if kind == "E" else None, width, dash),
                          f"({_n(x * k)},{_n(y * k)}) ellipse [x radius={_n(rx * k)}, y radius={_n(ry * k)}]")

    def style(self, pen: str | None, fill: str | None, width: float, dash: str) -> str:
        parts = [f"draw={pen}" if pen else "draw=none"]
        if fill:
            parts.append(f"fill={fill}")
        parts.append(f"line width={_n(width * 0.8 * self.scale)}pt")
        if dash:
            parts.append(dash)
        return ", ".join(parts)

    def path(self, kind: str, points: list[list[float]], pen, fill, width, dash) -> None:
        if len(points) < 2:
            return
        pts = [f"({_n(x * self.scale)},{_n(y * self.scale)})" for x, y in points]
        if kind in "bB":
            segments = [pts[0]]
            for i in range(1, len(pts) - 2, 3):
                segments.append(f".. controls {pts[i]} and {pts[i + 1]} .. {pts[i + 2]}")
            body = " ".join(segments)
        else:
            body = " -- ".join(pts)
        if kind in "pP":
            body += " -- cycle"
        self.emit(self.style(pen, fill, width, dash), body)

    def text(self, op: dict[str, Any], size: float, flags: int, pen: str | None) -> None:
        raw = op.get("text", "")
        if not raw.strip():
            return
        x, y = (v * self.scale for v in op.get("pt", [0, 0]))
        size *= self.scale
        font = f"\\fontsize{{{_n(size)}}}{{{_n(size * 1.2)}}}\\selectfont"
        if flags & 1:
            font += "\\bfseries"
        if flags & 2:
            font += "\\itshape"
        colour = f", text={pen}" if pen else ""
        end = (_n(y), float(x) + float(op.get("width", 0)) * self.scale)
        run = self._run
        if run is not None and op.get("align") == "l" and run[1] == end[0] and abs(run[2] - float(x)) < 0.5 * self.scale:
            # the next piece of one line of text (`@[` then the axis `D'` in its colour): set in the
            # same node, so TeX's own widths place it, not Graphviz's estimate of the first piece's
            line = self.lines[run[0]]
            switch = "\\color{" + pen + "}" if pen else ""
            piece = "{" + font + switch + latex_escape(raw) + "}"
            self.lines[run[0]] = line[: -len("};")] + piece + "};"
            self._run = (run[0], end[0], end[1])
            return
        self.lines.append(f"\\node[anchor={ALIGN.get(op.get('align', 'c'), 'base')}, inner sep=0pt, "
                          f"font={font}{colour}] at ({_n(x)},{_n(y)}) {{{latex_escape(raw)}}};")
        self._run = (len(self.lines) - 1, end[0], end[1]) if op.get("align") == "l" else None

    def emit(self, style: str, body: str) -> None:
        self._run = None
        self.lines.append(f"\\path[{style}] {body};")


def _n(value: float) -> str:
    text = f"{float(value):.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def to_tikz(dot_text: str, standalone: bool = False) -> str:
    """The TikZ picture of a DOT diagram, laid out by Graphviz."""
    graph = layout(dot_text)
    writer = Writer(extent_scale(graph))
    writer.ops(graph.get("_draw_", []))
    objects = graph.get("objects", [])
    n_sub = int(graph.get("_subgraph_cnt", 0))
    for obj in objects[:n_sub]:  # clusters, outer before inner
        writer.ops(obj.get("_draw_", []))
        writer.ops(obj.get("_ldraw_", []))
    for edge in graph.get("edges", []):
        for key in EDGE_OPS:
            writer.ops(edge.get(key, []))
    for obj in objects[n_sub:]:
        writer.ops(obj.get("_draw_", []))
        writer.ops(obj.get("_ldraw_", []))
    writer.ops(graph.get("_ldraw_", []))  # the title
    colours = [f"\\definecolor{{{name}}}{{HTML}}{{{hexa}}}" for hexa, name in writer.colours.items()]
    picture = "\n".join(["% Neural Circuit Diagram drawn by ncd; layout by Graphviz (dot -Tjson)",
                         "\\begin{tikzpicture}[x=1bp, y=1bp]", *colours, *writer.lines, "\\end{tikzpicture}"])
    if not standalone:
        return picture + "\n"
    return "\n".join(["\\documentclass[tikz, border=4pt]{standalone}", "\\usepackage{fix-cm}",
                      "\\begin{document}", picture, "\\end{document}"]) + "\n"

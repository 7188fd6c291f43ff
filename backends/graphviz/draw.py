"""IR → Graphviz DOT in Neural-Circuit-Diagram style (Abbott 2024).

- Wires are axes: an edge draws one parallel line per axis of its value, each in that axis'
  colour (a fixed palette assigned by sorted axis name, so a figure and its legend agree), and
  is labelled with the axis names and their sizes where bound. ``…`` marks lifted (batch) dims.
- Operations are boxes; learned ones (reading a parameter) are bold; an op shows the axes it is
  lifted or broadcast over (``⟨T, H⟩``), and a block call the axes the block is lifted over.
- Blocks are clusters, collapsing to one box below ``depth``; a repeated block is drawn once
  with ``×N``; a scan is a cluster whose carried state loops back (dashed) to the step's start.
- A legend lists every axis with its colour and size, and every block drawn.
- ``annotate`` (flops, params, memory, time) writes each op's and block's cost under its label,
  from ncd/analysis/annotate.py (the same analysis as ``ncd cost``).

The output is a pure function of the IR: byte-identical DOT for the same spec and options.
Nothing here runs ``dot``; ``ncd.backends.graphviz.render`` does.
"""
from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ncd.errors import NcdError, printable
from ncd.ir import (CALL, INPUT, LOOPS, LOOP_INDEX, NUMBER_NODE, PARAM, REGION_ARG, REPEAT, SCAN, TUPLE_GET,
                   WEIGHT_SOURCES, BlockIR, Node, SpecIR, WireType)

PALETTE = ("#4477AA", "#EE6677", "#228833", "#CCBB44", "#66CCEE", "#AA3377", "#332288", "#117733",
           "#882255", "#44AA99", "#999933", "#DDAA33", "#CC6677", "#0077BB", "#EE7733", "#009988",
           "#661100", "#6699CC", "#AA4499", "#DDCC77", "#004488", "#BB5566", "#0099CC", "#997700")
LIFTED = "#9A9A9A"
NOTE = "#5A5A5A"  # cost annotations
THEMES = {
    "paper": {"font": "Times-Roman", "bg": "white", "ink": "#222222", "weights": "#F3EFE0", "cluster": "#FAFAFA",
              "loop": "#EEF4FA", "colour": True},
    "plain": {"font": "Helvetica", "bg": "white", "ink": "black", "weights": "white", "cluster": "white",
              "loop": "white", "colour": False},
}


def render_dot(ir: SpecIR, depth: int | None = None, expand: str | None = None, theme: str = "paper",
               annotate: str | None = None, sizes: Mapping[str, int] | None = None) -> str:
    """The diagram of ``ir`` as DOT text: the entry block (or the block ``expand`` names) drawn
    with its sub-blocks expanded down to ``depth`` levels (None: all the way); ``annotate``
    names a cost to write on every box, at ``sizes`` (the batch B among them)."""
    if theme not in THEMES:
        raise NcdError(f"unknown theme {theme!r}", hint=f"choose one of {', '.join(THEMES)}")
    if depth is not None and depth < 0:
        raise NcdError(f"--depth must be 0 or more, got {depth}")
    root = _find_block(ir, expand) if expand else ir.entry_block
    drawer = Drawer(ir, THEMES[theme], depth)
    if annotate:
        from ncd.analysis.annotate import annotations

        drawer.notes = annotations(ir, annotate, sizes)
        drawer.note_root = _analysis_path(ir, root)
    return drawer.draw(root)


def _analysis_path(ir: SpecIR, root: BlockIR) -> str:
    """Where the analysis (which walks from the entry) first meets ``root``: its path prefix."""
    if root.key == ir.entry:
        return root.name
    from ncd.ir import walk

    def find(block: BlockIR, path: str) -> str | None:
        for node in walk(block.nodes):
            if node.op == CALL:
                inner = f"{path}/{node.attrs['instance']}"
                if node.attrs["block"] == root.key:
                    return inner
                found = find(ir.blocks[node.attrs["block"]], inner)
                if found:
                    return found
        return None

    return find(ir.entry_block, ir.entry_block.name) or root.name


def _find_block(ir: SpecIR, name: str) -> BlockIR:
    for key, block in ir.blocks.items():
        if name in (key, block.name):
            return block
    for block in ir.blocks.values():  # an instance name: the block it runs
        for inst in block.instances:
            if inst.name == name:
                return ir.blocks[inst.block]
    names = sorted({b.name for b in ir.blocks.values()})
    instances = sorted({i.name for b in ir.blocks.values() for i in b.instances if not i.name.startswith("_")})
    raise NcdError(f"no block or instance named {name!r} in {ir.name}",
                   hint=f"blocks: {', '.join(names)}" + (f"; instances: {', '.join(instances)}" if instances else ""))


def axis_colours(ir: SpecIR) -> dict[str, str]:
    """One colour per axis (primes share their base axis' colour), by sorted name."""
    bases = sorted({_base(ir, a) for a in _all_axes(ir)})
    return {a: PALETTE[i % len(PALETTE)] for i, a in enumerate(bases)}


def _base(ir: SpecIR, axis: str) -> str:
    """A primed axis is its base axis (ncd.sizes.base_axis, as everywhere sizes are read)."""
    from ncd.sizes import base_axis

    return base_axis(axis)


def _all_axes(ir: SpecIR) -> list[str]:
    from ncd.ir import walk

    seen = dict.fromkeys(ir.axes)
    for block in ir.blocks.values():
        for node in walk(block.nodes):
            for t in node.types:
                seen.update(dict.fromkeys(t.axes))
    return list(seen)


# Graphviz's scanner refuses an HTML label longer than 16384 bytes ("longer than 16384?"): labels
# that grow with the spec (the legend, a wire's axes, the title) are kept well under it.
HTML_LABEL_LIMIT = 16384
TITLE_CHARS = 200


# "]" right after a closing tag (`@[<font ..>D'</font>]`) is dropped by Graphviz's HTML-label
# lexer (2.43): written as a character reference it is kept.
CLOSE = "&#93;"


def _esc(text: str) -> str:
    """Text for an HTML label: markup escaped, control characters shown as escapes (a raw one is
    invalid in Graphviz's XML-like labels, or moves the text)."""
    return html.escape(printable(str(text)), quote=True)


def _chunks(rows: list[str], limit: int) -> list[list[str]]:
    """Rows grouped so that no group's UTF-8 length passes ``limit``."""
    groups: list[list[str]] = [[]]
    used = 0
    for row in rows:
        size = len(row.encode("utf-8"))
        if groups[-1] and used + size > limit:
            groups.append([])
            used = 0
        groups[-1].append(row)
        used += size
    return groups


def _dot_id(*parts: str) -> str:
    return '"' + "/".join(re.sub(r"[^A-Za-z0-9_.'\[\]=,/-]", "_", p) for p in parts).replace('"', "") + '"'


@dataclass
class Scope:
    path: str  # the instance path, as the analysis names it (a cost annotation's key)
    block: BlockIR
    level: int
    dot: str = ""  # the prefix of its DOT names: the path, made unique per call (Drawer.call)
    values: dict[str, object] = field(default_factory=dict)  # node id → dot id, or a list for tuples
    learned: set[str] = field(default_factory=set)  # node ids that are (views of) parameters
    numbers: dict[str, str] = field(default_factory=dict)


class Drawer:
    def __init__(self, ir: SpecIR, theme: dict, depth: int | None) -> None:
        from ncd.analysis.sizes import SizeEnv

        self.ir = ir
        self.theme = theme
        self.depth = depth
        self.colours = axis_colours(ir)
        self.size = SizeEnv(ir)
        self.lines: list[str] = []
        self.indent = 1
        self.blocks_drawn: list[str] = []
        self._index: dict[str, dict[str, Node]] = {}
        self.notes = None  # ncd.analysis.annotate.Annotations, when costs are drawn
        self.note_root = ""
        self.scopes_drawn: set[str] = set()  # the DOT prefixes of the blocks drawn so far

    def note(self, table: str, path: str, key: str | None = None, size: int = 8) -> str:
        """The cost annotation of a box as an HTML line (empty when not annotating)."""
        if self.notes is None:
            return ""
        root = self.root_name
        apath = self.note_root + path[len(root):] if path.startswith(root) else path
        text = getattr(self.notes, table).get(apath if key is None else (apath, key))
        return f'<br/><font point-size="{size}" color="{NOTE}">{_esc(text)}</font>' if text else ""

    # ------------------------------------------------------------------ text helpers
    def emit(self, line: str) -> None:
        self.lines.append("  " * self.indent + line)

    def colour(self, axis: str) -> str:
        if not self.theme["colour"]:
            return self.theme["ink"]
        return self.colours.get(_base(self.ir, axis), self.theme["ink"])

    def size_text(self, axis: str) -> str | None:
        value = self.size.number(self.size(axis))
        return None if value is None else str(value)

    def axes_html(self, axes, lifted: bool = False, sizes: bool = True) -> str:
        parts = []
        if lifted:
            parts.append(f'<font color="{LIFTED}">…</font>')
        for a in axes:
            n = self.size_text(a) if sizes else None
            label = _esc(a) + (f"={n}" if n is not None else "")
            parts.append(f'<font color="{self.colour(a)}">{label}</font>')
        text = " ".join(parts) if parts else "scalar"
        if len(text.encode("utf-8")) > HTML_LABEL_LIMIT // 4:  # hundreds of axes: say how many
            return f"{len(axes)} axes" + (" (lifted)" if lifted else "")
        return text

    def wire(self, src: str, dst: str, t: WireType | None, extra: str = "") -> None:
        attrs = []
        if t is not None:
            colours = [self.colour(a) for a in t.axes] or [self.theme["ink"]]
            if t.lifted:
                colours = [LIFTED, *colours]
            attrs.append(f'color="{":".join(colours)}"')
            attrs.append(f"label=<{self.axes_html(t.axes, t.lifted)}>")
            if t.dtype != "float":
                attrs.append("style=dotted")
        if extra:
            attrs.append(extra)
        self.emit(f"{src} -> {dst} [{', '.join(attrs)}];")

    # ------------------------------------------------------------------ the whole figure
    def draw(self, root: BlockIR) -> str:
        t = self.theme
        title = self.ir.meta.title or self.ir.name
        if len(title) > TITLE_CHARS:
            title = title[: TITLE_CHARS - 1] + "…"
        self.lines = ["digraph ncd {"]
        for line in (
            f'graph [rankdir=LR, fontname="{t["font"]}", bgcolor="{t["bg"]}", labelloc=t, labeljust=l, '
            f'fontsize=16, nodesep=0.3, ranksep=0.45, newrank=true, label=<<b>{_esc(title)}</b>>];',
            f'node [fontname="{t["font"]}", fontsize=12, shape=box, style="rounded", color="{t["ink"]}", '
            f'fontcolor="{t["ink"]}", height=0.3, margin="0.08,0.04"];',
            f'edge [fontname="{t["font"]}", fontsize=9, arrowsize=0.6, penwidth=1.4];',
        ):
            self.emit(line)
        self.root_name = root.name
        scope = Scope(root.name, root, 0, root.name)
        self.scopes_drawn.add(scope.dot)
        ins = []
        for port in root.inputs:
            node_id = _dot_id(root.name, "in", port.name)
            self.emit(f'{node_id} [shape=plaintext, style="", label=<<i>{_esc(port.name)}</i>>];')
            ins.append(node_id)
        outs = self.block(scope, ins, lift=["…"], label=f"{root.name}", repeat=None)
        for i, (out, t) in enumerate(zip(outs, root.outputs)):
            node_id = _dot_id(root.name, "out", str(i))
            self.emit(f'{node_id} [shape=plaintext, style="", label=<<i>out</i>>];')
            self.wire(out, node_id, t)
        self.legend()
        self.indent = 0
        self.lines.append("}")
        return "\n".join(self.lines) + "\n"

    def legend(self) -> None:
        rows = []
        for axis in sorted({_base(self.ir, a) for a in _all_axes(self.ir)}):
            n = self.size_text(axis)
            definition = self.ir.axes.get(axis)
            size = n if n is not None else (definition.size if definition is not None and definition.size else "free")
            rows.append(f'<tr><td><font color="{self.colour(axis)}">━━</font></td>'
                        f'<td align="left"><font color="{self.colour(axis)}">{_esc(axis)}</font></td>'
                        f'<td align="left">{_esc(size)}</td></tr>')
        rows.append(f'<tr><td><font color="{LIFTED}">━━</font></td><td align="left">…</td>'
                    f'<td align="left">lifted (batch)</td></tr>')
        rows.append('<tr><td colspan="3" align="left"><b>bold</b>: learned · ⟨A⟩: lifted over A</td></tr>')
        drawn = list(dict.fromkeys(self.blocks_drawn))
        shown = drawn[:40]
        blocks = ", ".join(_esc(b) for b in shown) + (f" and {len(drawn) - len(shown)} more" if drawn[40:] else "")
        rows.append(f'<tr><td colspan="3" align="left">blocks: {blocks}</td></tr>')
        self.emit("subgraph cluster_legend {")
        self.indent += 1
        self.emit(f'label=<<b>legend</b>>; style="rounded"; color="{LIFTED}"; fontsize=11;')
        # A spec with hundreds of axes gets several legend tables, each under Graphviz's label limit.
        for i, group in enumerate(_chunks(rows, HTML_LABEL_LIMIT // 2)):
            name = "legend" if i == 0 else f"legend_{i}"
            self.emit(f'{name} [shape=plaintext, style="", fontsize=10, label=<<table border="0" cellspacing="1" '
                      f'cellpadding="1">{"".join(group)}</table>>];')
        self.indent -= 1
        self.emit("}")

    # ------------------------------------------------------------------ blocks
    def block(self, scope: Scope, ins: list[str], lift: list[str], label: str, repeat: int | None) -> list[str]:
        block = scope.block
        self.blocks_drawn.append(block.name)
        self.emit(f"subgraph {_dot_id('cluster_' + scope.dot)} {{")
        self.indent += 1
        times = f" ×{repeat}" if repeat else ""
        lifted = f" ⟨{_esc(', '.join(lift))}⟩" if lift else ""
        self.emit(f'label=<<b>{_esc(label)}</b>{times}{lifted}{self.note("blocks", scope.path, size=10)}>; '
                  f'style="rounded,filled"; '
                  f'fillcolor="{self.theme["cluster"]}"; color="{LIFTED}";')
        params = {p.name: p for p in block.params}
        for node in block.nodes:
            if node.op == INPUT:
                scope.values[node.id] = ins[node.attrs["index"]]
        self.nodes(scope, block.nodes, params)
        outs = [self.ref(scope, r) for r in block.results]
        self.indent -= 1
        self.emit("}")
        return outs

    def ref(self, scope: Scope, node_id: str) -> str:
        value = scope.values[node_id]
        return value[0] if isinstance(value, list) else value  # type: ignore[return-value]

    def nodes(self, scope: Scope, nodes: list[Node], params) -> None:
        for node in nodes:
            if node.op in (INPUT, REGION_ARG):
                continue
            if node.op == NUMBER_NODE:
                scope.numbers[node.id] = _number(node.attrs.get("value"))
                continue
            if node.op == LOOP_INDEX:
                scope.numbers[node.id] = node.attrs.get("name", "t")
                continue
            if node.op == TUPLE_GET:
                value = scope.values[node.inputs[0]]
                scope.values[node.id] = value[node.attrs["index"]] if isinstance(value, list) else value
                if node.inputs[0] in scope.learned:
                    scope.learned.add(node.id)
                continue
            if node.op in WEIGHT_SOURCES:
                self.param(scope, node, params.get(node.attrs["name"]))
                continue
            if node.op == CALL:
                self.call(scope, node)
                continue
            if node.op in LOOPS:
                self.loop(scope, node, params)
                continue
            self.op(scope, node)

    def param(self, scope: Scope, node: Node, definition) -> None:
        dot = _dot_id(scope.dot, node.id)
        t = node.type
        learned = node.op == PARAM
        style = '"rounded,filled,bold"' if learned else '"rounded,filled,dashed"'
        name = f"<b>{_esc(node.attrs['name'])}</b>" if learned else _esc(node.attrs["name"])
        note = self.note("params", scope.path, node.attrs["name"]) if learned else ""
        self.emit(f'{dot} [shape=box, style={style}, fillcolor="{self.theme["weights"]}", fontsize=10, '
                  f'label=<{name}<br/><font point-size="8">[{self.axes_html(t.axes, sizes=False)}{CLOSE}</font>{note}>];')
        scope.values[node.id] = dot
        if learned:
            scope.learned.add(node.id)

    def op(self, scope: Scope, node: Node) -> None:
        from ncd.ops import OPS, is_view

        dot = _dot_id(scope.dot, node.id)
        opdef = OPS.get(node.op)
        learned = any(i in scope.learned for i in node.inputs)
        title = self.op_title(scope, node, opdef)
        note = self.lifted_note(scope, node, opdef)
        label = (f"<b>{title}</b>" if learned else title) + (
            f'<br/><font point-size="9" color="{LIFTED}">{note}</font>' if note else "")
        if node.name:
            label += f'<br/><font point-size="9"><i>{_esc(node.name)}</i></font>'
        label += self.note("ops", scope.path, node.id)
        view = is_view(node.op)
        style = '"rounded,dashed"' if view else ('"rounded,bold"' if learned else '"rounded"')
        pen = ", penwidth=2.2" if learned else ""
        self.emit(f"{dot} [label=<{label}>, style={style}{pen}{', fontsize=10' if view else ''}];")
        for i in node.inputs:
            if i in scope.numbers:
                continue
            self.wire(self.ref(scope, i), dot, self.type_of(scope, i))
        scope.values[node.id] = dot if len(node.types) <= 1 else [dot] * len(node.types)
        if view and any(i in scope.learned for i in node.inputs):
            scope.learned.add(node.id)

    def type_of(self, scope: Scope, node_id: str) -> WireType | None:
        """The type of the value a node id names in this block (a tuple_get's is its element's)."""
        index = self._index.get(scope.block.key)
        if index is None:
            from ncd.ir import walk

            index = self._index[scope.block.key] = {n.id: n for n in walk(scope.block.nodes)}
        node = index.get(node_id)
        return node.types[0] if node is not None and node.types else None

    def op_title(self, scope: Scope, node: Node, opdef) -> str:
        """The box's title: the row's ``title`` parts where it has one, else its glyph (or name),
        the axes it works over, its options' note and its number operands."""
        from ncd.ops.base import AxisList

        numbers = [scope.numbers[i] for i in node.inputs if i in scope.numbers]
        a = node.attrs
        if opdef is not None and opdef.title is not None:
            return "".join(f"[{self.axes_html(p.axes, sizes=False)}{CLOSE}" if isinstance(p, AxisList) else _esc(p)
                           for p in opdef.title(a, numbers))
        title = _esc(opdef.draw or node.op) if opdef is not None else _esc(node.op)
        over = a.get("over")
        if isinstance(over, dict):
            over = f"{' '.join(over.get('src', []))} → {' '.join(over.get('dst', []))}"
        if over is not None:
            over = ", ".join(over) if isinstance(over, (list, tuple)) else over
            title += f'<br/><font point-size="9">over {_esc(over)}</font>'
        note = opdef.label(a) if opdef is not None and opdef.label is not None else ""
        if note:  # the options that change what the op computes (groups, padding mode, ceil_mode)
            title += f'<br/><font point-size="9">{_esc(note)}</font>'
        if numbers:
            title += f" {_esc(', '.join(numbers))}"
        return title

    def lifted_note(self, scope: Scope, node: Node, opdef) -> str:
        """The axes this op is lifted over (reductions, norms, contractions) or broadcasts over
        (elementwise ops whose operands lack some of the result's axes)."""
        if not node.types or opdef is None:
            return ""
        out = node.types[0].axes
        family = opdef.family
        if family in ("reduce", "normalise", "contract", "linalg", "spatial"):
            own = node.attrs.get("over") or node.attrs.get("axes") or []
            if isinstance(own, dict):
                own = own.get("src", [])
            own = [own] if isinstance(own, str) else list(own)
            lifted = [x for x in out if x not in own]
            if family == "contract":
                ins = [self.type_of(scope, i) for i in node.inputs]
                shared = [x for x in out if all(t is not None and x in t.axes for t in ins)]
                lifted = shared
            return f"⟨{_esc(', '.join(lifted))}⟩" if lifted else ""
        if family == "elementwise":
            ins = [self.type_of(scope, i) for i in node.inputs if i not in scope.numbers]
            missing = [x for x in out if any(t is not None and x not in t.axes for t in ins)]
            return f"broadcast ⟨{_esc(', '.join(missing))}⟩" if missing else ""
        return ""

    # ------------------------------------------------------------------ calls and loops
    def call(self, scope: Scope, node: Node) -> None:
        block = self.ir.blocks[node.attrs["block"]]
        instance = node.attrs["instance"]
        lift = list(node.attrs.get("lift") or [])
        repeat = node.attrs.get("repeat")
        name = block.name if instance.startswith("_") else f"{instance}: {block.name}"
        level = scope.level + 1
        ins = [self.ref(scope, i) for i in node.inputs if i not in scope.numbers]
        in_types = [self.type_of(scope, i) for i in node.inputs if i not in scope.numbers]
        if self.depth is not None and level >= max(self.depth, 1):  # depth N: N levels of blocks open
            self.blocks_drawn.append(block.name)
            dot = _dot_id(scope.dot, node.id)
            times = f" ×{repeat}" if repeat else ""
            note = f'<br/><font point-size="9" color="{LIFTED}">⟨{_esc(", ".join(lift))}⟩</font>' if lift else ""
            learned = self.has_params(block)
            shape = "box3d" if repeat else "box"
            cost = self.note("blocks", f"{scope.path}/{instance}")
            self.emit(f'{dot} [shape={shape}, style="{"bold" if learned else "solid"}", '
                      f'label=<<b>{_esc(name)}</b>{times}{note}{cost}>];')
            for src, t in zip(ins, in_types):
                self.wire(src, dot, t)
            outs = [dot] * len(node.types)
        else:
            inner = Scope(f"{scope.path}/{instance}", block, level, self.fresh_prefix(f"{scope.dot}/{instance}"))
            ports = []
            for k, (src, t) in enumerate(zip(ins, in_types)):
                port = _dot_id(inner.dot, "in", str(k))
                ports.append(port)
                self.emit(f'{port} [shape=point, width=0.06];')
                self.wire(src, port, t)
            outs = self.block(inner, ports, lift, name, repeat)
        scope.values[node.id] = outs if len(node.types) > 1 else outs[0]

    def fresh_prefix(self, prefix: str) -> str:
        """``prefix``, or ``prefix.2``, ``.3``… where an instance called again in the same block
        (inside and outside a scan, in two loops, twice in a row) is drawn again: each drawing
        is a cluster of its own, with its own nodes. The same names twice would put one node in
        two clusters, which Graphviz 2.43's dot crashes on (a segfault) or draws tangled."""
        name, k = prefix, 1
        while name in self.scopes_drawn:
            k += 1
            name = f"{prefix}.{k}"
        self.scopes_drawn.add(name)
        return name

    def has_params(self, block: BlockIR) -> bool:
        if any(p.kind == PARAM for p in block.params):
            return True
        return any(self.has_params(self.ir.blocks[i.block]) for i in block.instances)

    def loop(self, scope: Scope, node: Node, params) -> None:
        region = node.regions[0]
        a = node.attrs
        if node.op == SCAN:
            var = next((n.attrs.get("name") for n in region.nodes if n.op == LOOP_INDEX), "t")
            title = f"scan {var} over {a['axis']}" + (" (reverse)" if a.get("reverse") else "")
        elif node.op == REPEAT:
            title = f"repeat ×{a.get('count')}"
        else:
            title = f"halting ≤ {a.get('max')} steps, ACT {a.get('mix')}"
        self.emit(f"subgraph {_dot_id('cluster_' + scope.dot, node.id)} {{")
        self.indent += 1
        self.emit(f'label=<<b>{_esc(title)}</b>>; style="rounded,filled,dashed"; fillcolor="{self.theme["loop"]}"; '
                  f'color="{self.colour(a.get("axis") or "")}";')
        carries = list(a.get("carries") or [])
        args = [n for n in region.nodes if n.op == REGION_ARG]
        for k, arg in enumerate(args):
            dot = _dot_id(scope.dot, arg.id)
            name = arg.attrs.get("name") or arg.name or arg.id
            self.emit(f'{dot} [shape=circle, width=0.35, fixedsize=false, style="filled", fillcolor="white", '
                      f'label=<<i>{_esc(name)}</i>>];')
            scope.values[arg.id] = dot
            if k < len(node.inputs):
                src = node.inputs[k]
                if src in scope.numbers:
                    init = _dot_id(scope.dot, arg.id, "init")
                    self.emit(f'{init} [shape=plaintext, style="", fontsize=10, label="{_esc(scope.numbers[src])}"];')
                    self.emit(f"{init} -> {dot} [style=dashed, arrowsize=0.4];")
                else:
                    self.wire(self.ref(scope, src), dot, self.type_of(scope, src))
        self.nodes(scope, region.nodes, params)
        n_carry = len(carries) if node.op != REPEAT else len(args)
        for k, (res, arg) in enumerate(zip(region.results[:n_carry], args)):
            t = self.type_of(scope, res)
            label = arg.attrs.get("name") or "state"
            self.wire(self.ref(scope, res), _dot_id(scope.dot, arg.id), t,
                      extra=f'style=dashed, constraint=false, xlabel=<<i>{_esc(label)}</i>>')
        self.indent -= 1
        self.emit("}")
        out = _dot_id(scope.dot, node.id)
        kind = f"stack over {a['axis']}" if node.op == SCAN else ("result" if node.op == REPEAT else "Σ weighted")
        self.emit(f'{out} [shape=box, style="rounded", fontsize=10, label=<{_esc(kind)}>];')
        results = region.results[n_carry:] if node.op == SCAN else region.results[:n_carry]
        for res in results:
            self.wire(self.ref(scope, res), out, self.type_of(scope, res))
        scope.values[node.id] = out if len(node.types) <= 1 else [out] * len(node.types)


def _number(value) -> str:
    text = str(value)
    return text if len(text) <= 12 else text[:11] + "…"

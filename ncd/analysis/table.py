"""A cost report as a table (rows: blocks and the total; cells: numbers at the bound sizes, or
the formula where an axis is free), rendered as HTML (notebooks) or Markdown (model cards)."""
from __future__ import annotations

import html
from pathlib import PurePath

from ncd.analysis.format import human, pretty

COLUMNS = (("flops_fwd", "FLOPs fwd"), ("flops_bwd", "FLOPs bwd"), ("params", "params"),
           ("activation_bytes", "activations"), ("traffic_bytes", "traffic"))
BYTES = {"activation_bytes", "traffic_bytes", "param_bytes", "min_traffic_bytes"}


def rows(report, substitute: bool = False) -> list[tuple[str, list[str]]]:
    """(row name, cells) for every block instance drawn by the analysis, then the total.

    ``substitute``: a cell left a formula by a free axis has the bound sizes put in, with the
    symbolic formula beside it (``32768·B·T (8·B·T·D²)``), as a model card shows it."""
    out = []
    items = [(path, formulas) for path, formulas in report.blocks.items() if path != report.ir.entry_block.name]
    items.append(("total", report.total))
    for name, formulas in items:
        cells = []
        for key, _ in COLUMNS:
            value = report.number(formulas[key]) if key in formulas else None
            cells.append(human(value, "B" if key in BYTES else "") if value is not None
                         else _partly(report, formulas[key]) if key in formulas and substitute
                         else pretty(formulas[key]) if key in formulas else "")
        out.append((name, cells))
    return out


def caption(report) -> str:
    sizes = " ".join(f"{k}={v}" for k, v in report.to_json()["sizes"].items())
    return (f"{PurePath(report.ir.name).name} (entry {report.ir.entry}), {report.dtype}, lifted over {report.size.batch}; "
            f"{sizes or 'no sizes bound'}")


def html_table(report) -> str:
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in COLUMNS)
    body = "".join(
        f"<tr><td style=\"text-align:left\">{'<b>' if name == 'total' else ''}{html.escape(name)}"
        f"{'</b>' if name == 'total' else ''}</td>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
        for name, cells in rows(report))
    return (f"<table><caption>{html.escape(caption(report))}</caption><thead><tr><th></th>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>")


def _partly(report, formula) -> str:
    """The formula at the bound sizes, the symbolic one beside where they differ."""
    import sympy

    from ncd import sizes as sz

    symbolic = sympy.sympify(formula)
    bound = {s: v for s, v in report.size.values.items() if s in symbolic.free_symbols}
    if not bound:
        return pretty(symbolic)
    return f"{pretty(sympy.expand(sz.substitute(symbolic, bound, 'a cost')))} ({pretty(symbolic)})"


def markdown_table(report, substitute: bool = False) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [f"| | {' | '.join(title for _, title in COLUMNS)} |", "|---" + "|---:" * len(COLUMNS) + "|"]
    for name, cells in rows(report, substitute):
        lines.append(f"| {cell(name)} | {' | '.join(cell(c) for c in cells)} |")
    return "\n".join(lines) + "\n"

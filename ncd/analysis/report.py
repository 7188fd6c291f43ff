"""The cost report: the analyzer's per-op costs summed per block instance and for the whole spec,
parameters, activation bytes, as formulas and as numbers where the sizes are bound; its JSON is
what `ncd cost --json` prints.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sympy

from ncd.analysis.op_costs import KEYS, Analyzer, OpCost, _sum
from ncd.analysis.sizes import SizeEnv
from ncd.ir import BUFFER, PARAM, SpecIR


def param_count(ir: SpecIR, key: str, size: SizeEnv, kind: str = PARAM) -> sympy.Expr:
    """Elements of the block's params (``kind="buffer"``: its buffers, e.g. running statistics)."""
    block = ir.blocks[key]
    total = _sum(sympy.Mul(*[size(a) for a in p.type.axes]) for p in block.params if p.kind == kind)
    for inst in block.instances:
        total += (inst.repeat or 1) * param_count(ir, inst.block, size, kind)
    return total


class CostReport:
    """Formulas (sympy) for every op, block instance and the whole spec; numbers where bound."""

    def __init__(self, analyzer: Analyzer) -> None:
        a = analyzer
        self.analyzer = a
        self.ir = a.ir
        self.size = a.size
        self.dtype = a.dtype
        merged: dict[tuple[str, str], OpCost] = {}
        for o in a.ops:  # a scan's first step and its other steps are one op of the spec
            seen = merged.get((o.path, o.id))
            if seen is None:
                merged[(o.path, o.id)] = OpCost(**vars(o))
            else:
                for k in KEYS:
                    setattr(seen, k, getattr(seen, k) + getattr(o, k))
        self.ops = list(merged.values())
        self.scans = a.scans
        self.blocks: dict[str, dict[str, sympy.Expr]] = {}
        for path, key in a.blocks.items():
            self.blocks[path] = self._totals(path, key)
        self.total = self.blocks[self.ir.entry_block.name]
        entry = self.ir.entry_block
        lift = (a.size.batch,)
        io = _sum(a.numel(p.type, lift) for p in entry.inputs) + _sum(a.numel(t, lift) for t in entry.outputs)
        self.total["min_traffic_bytes"] = io * a.bytes + self.total["param_bytes"]

    def _totals(self, path: str, key: str) -> dict[str, sympy.Expr]:
        a = self.analyzer
        inside = [o for o in a.ops if o.path == path or o.path.startswith(path + "/")]
        out = {k: sympy.expand(_sum(getattr(o, k) for o in inside)) for k in KEYS}
        out["other_flops_fwd"] = sympy.expand(out["flops_fwd"] - out["matmul_flops_fwd"])
        out["other_flops_bwd"] = sympy.expand(out["flops_bwd"] - out["matmul_flops_bwd"])
        params = param_count(self.ir, key, a.size)
        out["params"] = sympy.expand(params)
        out["param_bytes"] = sympy.expand(params * a.bytes)
        buffers = param_count(self.ir, key, a.size, BUFFER)
        out["buffers"] = sympy.expand(buffers)
        out["buffer_bytes"] = sympy.expand(buffers * a.bytes)
        out["activation_bytes"] = sympy.expand(_sum(a.tokens[t] for t, p in a.saved.items()
                                                    if p == path or p.startswith(path + "/")))
        return out

    def number(self, expr) -> int | float | None:
        return self.size.number(expr)

    def _repr_html_(self) -> str:
        """Jupyter shows a cost report as a table of its blocks (ncd/analysis/table.py)."""
        from ncd.analysis.table import html_table

        return html_table(self)

    def numbers(self, formulas: Mapping[str, Any]) -> dict[str, Any]:
        return {k: self.number(v) for k, v in formulas.items()}

    def to_json(self, roofline: Mapping[str, Any] | None = None) -> dict[str, Any]:
        def both(formulas):
            return {**self.numbers(formulas), "formulas": {k: str(v) for k, v in formulas.items()}}

        return {
            "spec": self.ir.name,
            "entry": self.ir.entry,
            "dtype": self.dtype,
            "input_grad": self.analyzer.input_grad,
            "lifted_over": [self.size.batch],
            "sizes": {s.name: v for s, v in sorted(self.size.values.items(), key=lambda kv: kv[0].name)},
            "total": both(self.total),
            "blocks": {path: {"block": self.analyzer.blocks[path], **both(f)} for path, f in self.blocks.items()},
            "ops": [{"path": o.path, "id": o.id, "op": o.op, "name": o.name,
                     **{k: self.number(getattr(o, k)) for k in KEYS},
                     "formulas": {k: str(getattr(o, k)) for k in KEYS}} for o in self.ops],
            "scans": [{"path": s.path, "id": s.id, "axis": s.axis, "chosen": s.chosen, "backend": s.backend,
                       "reason": s.reason,
                       "state": self.number(s.state), "step_flops": self.number(s.step_flops),
                       "strategies": {name: {k: self.number(v) for k, v in st.items()}
                                      for name, st in s.strategies.items()}} for s in self.scans],
            **({"roofline": dict(roofline)} if roofline else {}),
        }

"""Scans and halting loops: carried state, nested regions, what a step emits."""
from __future__ import annotations

import sympy
from lark import Tree

from ncd import scan_backends
from ncd.frontend.common import MAX_REPEAT, _did_you_mean, err, span_of
from ncd.ir import ACT_MIXES, BROADCAST, HALTING, SCAN, Region, WireType


class LoopBuilder:
    """Mixin of BlockBuilder: the recurrence constructs."""

    def carries(self, carry_tree: Tree | None, where: Tree) -> tuple[list[tuple[str, WireType]], list[str]]:
        if carry_tree is None:
            return [], []
        carries, inits = [], []
        for item in carry_tree.children:
            name_tok, type_tree, init_tree = item.children
            t = self.wire_type(type_tree, lifted=True)
            name = str(name_tok)
            if name in [c[0] for c in carries]:
                raise err(f"carry {name} is declared twice", name_tok, hint="give each carried state its own name")
            if init_tree is None:
                init = self.number(sympy.Integer(0), name_tok).id
            else:
                init = self.expr(init_tree)
            got = self.type_of(init)
            if self.number_value(init) is None and sorted(got.axes) != sorted(t.axes):
                if set(got.axes) < set(t.axes) or not got.axes:
                    init = self.add(BROADCAST, [init], {"axes": list(t.axes)}, [t], init_tree).id
                else:
                    raise err(f"carry {name} is declared {t} but starts as a wire with axes {got}", init_tree,
                              hint=f"declare the carry with the wire's axes ({name}: {self.type_text(got)}), or start it from a "
                                   f"wire of axes {self.type_text(t)} (or 0)")
            elif self.number_value(init) is None and got.axes != t.axes:
                init = self.add_op("annotate", [init], {"axes": list(t.axes)}, init_tree).id
            carries.append((name, t))
            inits.append(init)
        return carries, inits

    def expr_scan_via_first(self, tree: Tree) -> str:
        """`scan t over T via gla carry (...)`: `via` written before `carry` means the same scan."""
        var_tok, axis_tok, reverse, via, carry_tree, *body = tree.children
        return self.expr_scan(Tree("scan", [var_tok, axis_tok, reverse, carry_tree, via, *body], meta=tree.meta))

    def expr_scan(self, tree: Tree) -> str:
        var_tok, axis_tok, reverse, carry_tree, via, *body = tree.children
        axis = self.axis_name(axis_tok)
        backend = scan_backends.lookup(str(via.children[0]), span_of(via.children[0])) if via else None
        if carry_tree is None:
            raise err("scan without carry: a scan needs a state carried from step to step", tree,
                      hint="scan t over T carry (h: [D] = 0) { ... }")
        carries, inits = self.carries(carry_tree, tree)
        region, frame = self.region(SCAN, body, carries, tree,
                                    extra_args=[(str(var_tok), "index", {"axis": axis, "name": str(var_tok)})])
        if frame.emitted is None:
            raise err("this scan emits nothing", tree, hint="add emit h as the step's output")
        region.results += frame.emitted
        emitted_types = [self.type_of_any(e, region) for e in frame.emitted]
        for e, t in zip(frame.emitted, emitted_types):
            if axis in t.axes:
                raise err(f"a step's output already has the scanned axis {axis}", tree,
                          hint=f"emit one position's value (x[t], not x): the scan stacks the steps along {axis}")
        out_types = [WireType(axes=(axis, *t.axes), lifted=True, dtype=t.dtype) for t in emitted_types]
        attrs = {"axis": axis, "reverse": reverse is not None, "backend": backend,
                 "carries": [c[0] for c in carries], "n_emit": len(frame.emitted),
                 "captures": frame.captures}
        node = self.add(SCAN, inits, attrs, out_types, tree, regions=[region])
        if len(out_types) > 1:
            return node.id
        return node.id

    def type_of_any(self, node_id: str, region: Region) -> WireType:
        return self.node_index[node_id].type

    def act_mix(self, mix_tree: Tree | None, tree: Tree) -> str:
        """Which ACT output the loop gives: named in the spec, never defaulted (the two forms differ)."""
        if mix_tree is None:
            raise err("a halting loop must say which ACT output it gives: mix graves or mix interpolate", tree,
                      hint="halting n max 8 eps 0.01 mix graves carry (s: [T, D] = x) { ... }  "
                           "(graves: Σ pₙ·sₙ with the remainder; interpolate: tensor2tensor's s·w + acc·(1 − w))")
        name = str(mix_tree.children[0])
        if name not in ACT_MIXES:
            close = _did_you_mean(name, ACT_MIXES)
            raise err(f"unknown ACT output mix {name}", mix_tree.children[0],
                      hint=close or "write mix graves or mix interpolate")
        return name

    def expr_halting(self, tree: Tree) -> str:
        var_tok, max_tree, *rest = tree.children
        options: dict[str, Tree] = {}
        while rest and isinstance(rest[0], Tree) and rest[0].data in ("eps", "mix"):
            option = rest.pop(0)
            if option.data in options:
                raise err(f"{option.data} is given twice", option, hint=f"give {option.data} once")
            options[option.data] = option
        carry_tree, *body = rest
        eps_tree, mix_tree = options.get("eps"), options.get("mix")
        max_steps = self.const_int(max_tree, "the maximum number of steps")
        if max_steps < 1:
            raise err("a halting loop needs at least one step", max_tree, hint="write max 1 or more: halting n max 8 ...")
        outer = self.frames[-1].trips
        if max_steps * outer > MAX_REPEAT:
            within = f" inside loops that already run {outer} times" if outer > 1 else ""
            raise err(f"a halting loop may take at most {MAX_REPEAT} steps in all, got {max_steps}{within}", max_tree,
                      hint="the same cap as a repeat count")
        eps = 0.01
        if eps_tree is not None:
            vid = self.expr(eps_tree.children[0])
            value = self.number_value(vid)
            if value is None or not value.is_number or not 0 < value < 1:
                raise err("eps must be a number in (0, 1)", eps_tree, hint="write eps 0.01 (or drop eps: 0.01 is the default)")
            eps = float(value)
        mix = self.act_mix(mix_tree, tree)
        if carry_tree is None:
            raise err("halting loop without carry", tree, hint="halting n max 8 carry (s: [T, D] = x) { ... }")
        carries, inits = self.carries(carry_tree, tree)
        region, frame = self.region(HALTING, body, carries, tree,
                                    extra_args=[(str(var_tok), "index", {"axis": None, "name": str(var_tok)})],
                                    trips=max_steps)
        if frame.halt is None:
            raise err("this halting loop never says when to halt", tree, hint="end the body with halt p")
        p_type = self.node_index[frame.halt].type
        for name, t in carries:
            if not set(p_type.axes) <= set(t.axes):
                raise err(f"the halting probability has axes {p_type}, not all on carry {name} {t}", tree,
                          hint="halt a probability over axes every carry has (reduce the others: sum or mean over them)")
        region.results.append(frame.halt)
        outs = [t for _, t in carries] + [WireType(axes=p_type.axes, lifted=True)]
        attrs = {"max": max_steps, "eps": eps, "mix": mix, "carries": [c[0] for c in carries],
                 "halt_axes": list(p_type.axes), "captures": frame.captures}
        return self.add(HALTING, inits, attrs, outs, tree, regions=[region]).id

"""Lowered programs → readable, importable Python source of the same module.

The emitted file needs only torch: it carries the source of the runtime helpers it calls, and
each class constructs with no arguments (sizes are baked in) and accepts the in-process
module's ``state_dict``. Statements mirror the interpreter's one for one, so outputs are
bit-identical.
"""
from __future__ import annotations

import inspect
import math
import re
from typing import Any

from ncd.backends.pytorch import runtime
from ncd.backends.pytorch.program import Assign, Loop, Program, Stmt, lower_spec

from ncd.ir import SpecIR
from ncd.pipeline import Passes
from ncd.ops.base import BinOp, Call, Expr, Index, Lit, Method, Ref, SelfAttr, UnaryOp

INDENT = "    "


def class_names(programs: dict[str, Program], entry: str, entry_name: str | None) -> dict[str, str]:
    names: dict[str, str] = {}
    taken: set[str] = set()
    for key in programs:
        base = re.sub(r"\W", "_", key.split("[", 1)[0]) or "Block"
        if key == entry and entry_name:
            base = entry_name
        name, n = base, 2
        while name in taken:
            name, n = f"{base}_{n}", n + 1
        taken.add(name)
        names[key] = name
    return names


def literal(value: Any) -> str:
    if isinstance(value, float):
        if math.isinf(value):
            return "float('inf')" if value > 0 else "float('-inf')"
        if math.isnan(value):
            return "float('nan')"
        return repr(value)
    if isinstance(value, tuple):
        inner = ", ".join(literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    return repr(value)


def code(expr: Expr) -> str:
    if isinstance(expr, Ref):
        return expr.id
    if isinstance(expr, Lit):
        return literal(expr.value)
    if isinstance(expr, SelfAttr):
        return f"self.{expr.path}"
    if isinstance(expr, Call):
        fn = expr.fn if isinstance(expr.fn, str) else code(expr.fn)
        return f"{fn}({_args(expr.args, expr.kwargs)})"
    if isinstance(expr, Method):
        return f"{code(expr.obj)}.{expr.name}({_args(expr.args, expr.kwargs)})"
    if isinstance(expr, Index):
        items = [_index_item(i) for i in expr.items]
        return f"{code(expr.obj)}[{', '.join(items)}]"
    if isinstance(expr, BinOp):
        return f"({code(expr.left)} {expr.op} {code(expr.right)})"
    if isinstance(expr, UnaryOp):
        return f"(-{code(expr.operand)})"
    raise TypeError(f"cannot emit {expr!r}")


def _args(args: tuple[Expr, ...], kwargs: tuple[tuple[str, Expr], ...]) -> str:
    return ", ".join([code(a) for a in args] + [f"{k}={code(v)}" for k, v in kwargs])


def _index_item(item: Any) -> str:
    if item in ("...", "None", ":"):
        return item
    if isinstance(item, int):
        return str(item)
    return code(item)


def body_lines(body: list[Stmt], depth: int) -> list[str]:
    pad = INDENT * depth
    out: list[str] = []
    for stmt in body:
        if isinstance(stmt, Assign):
            out.append(f"{pad}{stmt.target} = {code(stmt.expr)}")
        else:
            out.extend(_loop_lines(stmt, depth))
    return out


def _loop_lines(loop: Loop, depth: int) -> list[str]:
    pad, inner = INDENT * depth, INDENT * (depth + 1)
    out = [f"{pad}{arg} = {code(init)}" for arg, init in zip(loop.args, loop.inits)]
    carry_results = loop.results[: loop.n_carry]
    if loop.kind == "scan":
        outs = [f"{loop.target}_steps{k}" for k in range(len(loop.results) - loop.n_carry)]
        out += [f"{pad}{name} = []" for name in outs]
        n = code(loop.length)
        order = f"range({n} - 1, -1, -1)" if loop.reverse else f"range({n})"
        out.append(f"{pad}for {loop.index} in {order}:")
        out += body_lines(loop.body, depth + 1)
        out += [f"{inner}{name}.append({code(res)})" for name, res in zip(outs, loop.results[loop.n_carry:])]
        out += _carry_update(loop.args, carry_results, inner)
        stacked = [f"rt.stack_steps({name}, {d}, {loop.reverse})" for name, d in zip(outs, loop.emit_dims)]
        value = stacked[0] if len(stacked) == 1 else f"({', '.join(stacked)},)"
        out.append(f"{pad}{loop.target} = {value}")
    elif loop.kind == "repeat":
        out.append(f"{pad}for _ in range({code(loop.length)}):")
        out += body_lines(loop.body, depth + 1)
        out += _carry_update(loop.args, loop.results, inner)
        out.append(f"{pad}{loop.target} = ({', '.join(loop.args)},)")
    else:
        acc = [f"{loop.target}_acc{i}" for i in range(len(loop.args))]
        state = [f"{loop.target}_{s}" for s in ("halting", "remainders", "updates")]
        out += [f"{pad}{a} = 0.0" for a in acc]
        out.append(f"{pad}{' = '.join(state)} = None")
        out.append(f"{pad}for {loop.index} in range({code(loop.length)}):")
        out += body_lines(loop.body, depth + 1)
        halt = loop.results[loop.n_carry]
        out.append(f"{inner}act_weight, {', '.join(state)}, running = rt.act_weights("
                   f"{code(halt)}, {', '.join(state)}, {literal(1.0 - loop.eps)})")
        for a, res, weight in zip(acc, carry_results, loop.weight_align):
            out.append(f"{inner}{a} = rt.act_mix({a}, {code(res)}, {code(weight)})")
        out += _carry_update(loop.args, carry_results, inner)
        out.append(f"{inner}if not running:")
        out.append(f"{inner}{INDENT}break")
        out.append(f"{pad}{loop.target} = ({', '.join(acc)}, {state[2]} + {state[1]})")
    return out


def _carry_update(args: list[str], results: list[Expr], pad: str) -> list[str]:
    """Assign all new carries at once, as the interpreter does (a result may read another carry)."""
    if not args:
        return []
    if len(args) == 1:
        return [f"{pad}{args[0]} = {code(results[0])}"]
    return [f"{pad}{', '.join(args)} = {', '.join(code(r) for r in results)}"]


def class_source(program: Program, name: str, names: dict[str, str], top: bool) -> str:
    lines = [f"class {name}(nn.Module):", f'{INDENT}"""Block {program.key}."""', "",
             f"{INDENT}def __init__(self):", f"{INDENT * 2}super().__init__()"]
    for inst, block_key, repeat in program.instances:
        cls = names[block_key]
        if repeat:
            lines.append(f"{INDENT * 2}self.{inst} = nn.ModuleList([{cls}() for _ in range({repeat})])")
        else:
            lines.append(f"{INDENT * 2}self.{inst} = {cls}()")
    if program.taps:
        taps = ", ".join(f"{t!r}: nn.Identity()" for t in program.taps)
        lines.append(f"{INDENT * 2}self.taps = nn.ModuleDict({{{taps}}})")
    consts = []
    for init in program.inits:
        lines += body_lines(init.body, 2)
        value = code(init.result)
        if init.kind == "param":
            lines.append(f"{INDENT * 2}self.{init.name} = nn.Parameter("
                         f"{value}.to(torch.get_default_dtype()).contiguous())")
        elif init.kind == "buffer":
            lines.append(f"{INDENT * 2}self.register_buffer({init.name!r}, "
                         f"{value}.to(torch.get_default_dtype()).contiguous())")
        else:
            consts.append(init.name)
            lines.append(f"{INDENT * 2}self._consts[{init.name!r}] = {value}.to(torch.float64)")
            lines.append(f"{INDENT * 2}self.register_buffer({init.name!r}, "
                         f"{value}.to(torch.get_default_dtype()), persistent=False)")
    if consts:
        lines.insert(5, f"{INDENT * 2}self._consts = {{}}")
        lines += ["", f"{INDENT}def _apply(self, fn, recurse=True):",
                  f'{INDENT * 2}"""Recompute constants from float64 after a dtype/device change."""',
                  f"{INDENT * 2}out = super()._apply(fn, recurse)",
                  f"{INDENT * 2}for name, master in self._consts.items():",
                  f"{INDENT * 3}current = getattr(self, name)",
                  f"{INDENT * 3}setattr(self, name, master.to(device=current.device, dtype=current.dtype))",
                  f"{INDENT * 2}return out"]
    args = ", ".join(["self", *(var for var, _, _, _ in program.inputs)])
    lines += ["", f"{INDENT}def forward({args}):"]
    if top:
        for var, port, axes, sizes in program.inputs:
            lines.append(f"{INDENT * 2}rt.check_input({var}, {port!r}, {literal(tuple(axes))}, {literal(sizes)})")
    lines += body_lines(program.body, 2)
    results = ", ".join(code(r) for r in program.results)
    lines.append(f"{INDENT * 2}return {results}")
    return "\n".join(lines)


def runtime_source() -> str:
    functions = [obj for _, obj in inspect.getmembers(runtime, inspect.isfunction) if obj.__module__ == runtime.__name__]
    functions.sort(key=lambda f: f.__code__.co_firstlineno)
    sources = [inspect.getsource(f) for f in functions]
    names = ", ".join(f"{f.__name__}={f.__name__}" for f in functions)
    return "\n\n".join(sources) + f"\n\nrt = types.SimpleNamespace({names})\n"


def emit_python(ir: SpecIR, class_name: str | None = None, passes: Passes | None = None) -> str:
    """The whole module's source; the entry block's class is ``class_name`` (default: its name).
    Lowered with the pipeline's fusion plan (``passes``; None: the pipeline runs the passes);
    scans run as the sequential loop."""
    if passes is None:
        from ncd.pipeline import run_passes

        passes = run_passes(ir)
    programs = lower_spec(ir, fusion=passes.fusion)
    names = class_names(programs, ir.entry, class_name)
    header = [
        f'"""{ir.meta.title or ir.name} — generated by ncd from {ir.name}.',
        "",
        f"Sizes: {', '.join(f'{k}={v}' for k, v in sorted(ir.bindings.items())) or 'as declared in the spec'}.",
        f"Entry: {names[ir.entry]}(). Regenerate with `ncd compile`; do not edit by hand.",
        '"""',
        "import types",
        "",
        "import torch",
        "import torch.nn.functional as F",
        "from torch import nn",
        "",
        "",
    ]
    classes = [class_source(p, names[k], names, top=(k == ir.entry)) for k, p in programs.items()]
    footer = [f"\n\n__all__ = [{names[ir.entry]!r}]\n"]
    return "\n".join(header) + runtime_source() + "\n\n" + "\n\n\n".join(classes) + "\n".join(footer)

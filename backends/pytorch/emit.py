"""Lowered programs → readable, importable Python source of the same module.

The emitted file needs only torch: it carries the source of the runtime helpers it calls, and
each class constructs with no arguments (sizes are baked in) and accepts the in-process
module's ``state_dict``. Statements mirror the interpreter's one for one, so outputs are
bit-identical.
"""
from __future__ import annotations

import functools
import inspect
import keyword
import math
import re
from typing import Any

from ncd.backends.pytorch import runtime
from ncd.backends.pytorch.program import ANCHOR, Assign, Loop, Program, Stmt, lower_spec

from ncd.errors import NcdError
from ncd.ir import BUFFER, CONST, HALTING, PARAM, REPEAT, SCAN, SpecIR
from ncd.names import (
    BINARY_OPS,
    CALL_ROOTS,
    COMPARE_OPS,
    DOTTED,
    SHADOWING,
    UNARY_OPS,
    is_identifier,
    is_spec_name,
    value_id_problem,
)
from ncd.pipeline import Passes
from ncd.ops.base import BinOp, Call, Expr, Fold, Index, Lit, Method, Ref, SelfAttr, UnaryOp, fold
from ncd.ops.random import draws

INDENT = "    "
# ACT form (ncd.ir.ACT_MIXES) → the runtime functions of its step weights and output (as module.py).
ACT_FUNCTIONS = {"graves": ("act_weights_graves", "act_sum"), "interpolate": ("act_weights", "act_mix")}


def _unsafe(what: str, value: Any, why: str) -> NcdError:
    return NcdError(f"cannot emit Python: {what} {value!r} {why}",
                    hint="this IR was not built by ncd from a spec; `ncd ir --from-json FILE` says what is wrong")


def doc_text(text: str) -> str:
    """``text`` escaped for a triple-quoted literal: its value is ``text`` again, whatever it holds."""
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch.isprintable():
            out.append(ch)
        else:  # newlines, form feeds, U+2028, surrogates, NUL...: an escape, never the raw character
            o = ord(ch)
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
    return "".join(out)


def local(name: Any, what: str = "node id") -> str:
    """A local variable named after a node id, checked (a tampered IR's id is not pasted as code)."""
    problem = value_id_problem(name)
    if problem is not None:
        raise _unsafe(what, name, problem)
    return name


def attr_name(name: Any, what: str) -> str:
    """A module attribute (param, buffer, constant, instance, tap): one of the language's names."""
    if not is_spec_name(name):
        raise _unsafe(what, name, "is not a name of the language ([A-Za-z_][A-Za-z0-9_]*, then primes)")
    return name


def get_attr(obj: str, name: str) -> str:
    """``obj.name``, or ``getattr(obj, 'name')`` where the name is a keyword or has a prime."""
    return f"{obj}.{name}" if is_identifier(name) else f"getattr({obj}, {name!r})"


def set_attr(obj: str, name: str, value: str) -> str:
    return f"{obj}.{name} = {value}" if is_identifier(name) else f"setattr({obj}, {name!r}, {value})"


def class_names(programs: dict[str, Program], entry: str, entry_name: str | None) -> dict[str, str]:
    """A class name per block key: ASCII identifiers that shadow no global and no local of the module.

    The entry's is ``entry_name`` when given (checked), else its block name; a block name that is a
    keyword, a builtin or one of the module's globals (``F``, ``torch``, ``nn``, the runtime helpers)
    gets a trailing ``_``. Only Python names change: state_dict keys stay the spec's names.
    """
    reserved = set(SHADOWING) | set(runtime_names()) | local_names(programs)
    taken = set(reserved)
    names: dict[str, str] = {}
    if entry_name is not None:
        if not is_identifier(entry_name):
            raise NcdError(f"--class-name {entry_name!r} is not a Python identifier (or is a keyword)",
                           hint="an ASCII name such as Net")
        if entry_name in taken:
            raise NcdError(f"--class-name {entry_name!r} would shadow a name the emitted module uses",
                           hint=f"pick another name, e.g. {entry_name}Net")
        names[entry] = entry_name
        taken.add(entry_name)
    for key in programs:
        if key in names:
            continue
        base = re.sub(r"[^A-Za-z0-9_]", "_", key.split("[", 1)[0]) or "Block"
        if base[0].isdigit():
            base = f"_{base}"
        while keyword.iskeyword(base) or base in reserved:
            base += "_"
        name, n = base, 2
        while name in taken:
            name, n = f"{base}_{n}", n + 1
        taken.add(name)
        names[key] = name
    return names


def local_names(programs: dict[str, Program]) -> set[str]:
    """Every local variable the emitted methods assign (node ids and the loops' helper names)."""
    out: set[str] = set()

    def visit(body: list[Stmt]) -> None:
        for stmt in body:
            out.add(stmt.target)
            if isinstance(stmt, Loop):
                out.update(stmt.args)
                if stmt.index:
                    out.add(stmt.index)
                out.update(f"{stmt.target}_{s}" for s in ("halting", "remainders", "updates"))
                out.update(f"{stmt.target}_steps{k}" for k in range(len(stmt.results)))
                out.update(f"{stmt.target}_acc{k}" for k in range(len(stmt.args)))
                out.add(f"{stmt.target}_final")
                visit(stmt.body)

    for program in programs.values():
        out.update(var for var, _, _, _ in program.inputs)
        visit(program.body)
        for init in program.inits:
            visit(init.body)
    return out


def literal(value: Any) -> str:
    """A Python literal of plain data only (numbers, strings, None, tuples/lists of them)."""
    if value is None or isinstance(value, (bool, int, str)):
        return repr(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "float('inf')" if value > 0 else "float('-inf')"
        if math.isnan(value):
            return "float('nan')"
        return repr(value)
    if isinstance(value, tuple):
        inner = ", ".join(literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return f"[{', '.join(literal(v) for v in value)}]"
    raise _unsafe("literal", value, "is not a number, a string, None or a tuple of them")


class _Source(Fold[str]):
    """The emitter's fold: each node becomes Python source over its children's source, every
    name, operator and literal checked (a spec is data: nothing from it becomes code)."""

    def ref(self, e: Ref) -> str:
        return e.id if e.id == "act_weight" else local(e.id)  # act_weight: the halting loop's own

    def lit(self, e: Lit) -> str:
        return literal(e.value)

    def self_attr(self, e: SelfAttr) -> str:
        out = "self"
        for part in e.path.split("."):
            out = get_attr(out, attr_name(part, "attribute"))
        return out

    def call(self, e: Call, fn: str, args: list[str], kwargs: list[tuple[str, str]]) -> str:
        if isinstance(e.fn, str) and (DOTTED.fullmatch(e.fn) is None or e.fn.split(".")[0] not in CALL_ROOTS):
            raise _unsafe("function", e.fn, f"is not a dotted name under {', '.join(sorted(CALL_ROOTS))}")
        return f"{fn}({_args(args, kwargs)})"

    def method(self, e: Method, obj: str, args: list[str], kwargs: list[tuple[str, str]]) -> str:
        if not is_identifier(e.name) or e.name.startswith("__"):
            raise _unsafe("method", e.name, "is not a plain identifier")
        return f"{obj}.{e.name}({_args(args, kwargs)})"

    def index(self, e: Index, obj: str, items: list[Any]) -> str:
        return f"{obj}[{', '.join(_index_item(raw, item) for raw, item in zip(e.items, items))}]"

    def binop(self, e: BinOp, left: str, right: str) -> str:
        if e.op not in BINARY_OPS | COMPARE_OPS:
            raise _unsafe("operator", e.op, f"is not one of {' '.join(sorted(BINARY_OPS | COMPARE_OPS))}")
        return f"({left} {e.op} {right})"

    def unary(self, e: UnaryOp, operand: str) -> str:
        if e.op not in UNARY_OPS:
            raise _unsafe("unary operator", e.op, "is not -")
        return f"(-{operand})"


def code(expr: Expr) -> str:
    """An expression as Python source, by the one walker (ncd.ops.base.fold)."""
    try:
        return fold(expr, _Source())
    except TypeError:
        raise _unsafe("expression", expr, "is not one of the lowering's expression kinds") from None


def _args(args: list[str], kwargs: list[tuple[str, str]]) -> str:
    for k, _ in kwargs:
        if not is_identifier(k):
            raise _unsafe("keyword argument", k, "is not a Python identifier")
    return ", ".join([*args, *(f"{k}={v}" for k, v in kwargs)])


def _index_item(raw: Any, item: Any) -> str:
    """One Index item: ``raw`` as the lowering wrote it, ``item`` its source once folded."""
    if isinstance(raw, str):
        if raw in ("...", "None", ":"):
            return raw
        raise _unsafe("index", raw, "is not ..., None, : or an integer")
    if isinstance(raw, int):
        return str(int(raw))
    return item


def body_lines(body: list[Stmt], depth: int) -> list[str]:
    pad = INDENT * depth
    out: list[str] = []
    for stmt in body:
        if isinstance(stmt, Assign):
            out.append(f"{pad}{local(stmt.target)} = {code(stmt.expr)}")
        elif isinstance(stmt, Loop):
            out.extend(_loop_lines(stmt, depth))
        else:
            raise _unsafe("statement", stmt, "is not an assignment or a loop")
    return out


def _loop_lines(loop: Loop, depth: int) -> list[str]:
    pad, inner = INDENT * depth, INDENT * (depth + 1)
    target, args = local(loop.target), [local(a) for a in loop.args]
    index = local(loop.index) if loop.index is not None else None
    out = [f"{pad}{arg} = {code(init)}" for arg, init in zip(args, loop.inits)]
    states = list(loop.state_names) if loop.kind == SCAN else []
    out += [f"{pad}{arg} = rt.state_in(self, {literal(str(name))}, {arg}, {len(axes)})"
            for arg, name, axes in zip(args, states, loop.state_axes)]
    carry_results = loop.results[: loop.n_carry]
    if loop.kind == SCAN and loop.backend == "fused_rnn" and loop.cell_values:
        if not states:
            return [*out, f"{pad}{target} = {_fused_rnn_call(loop)}"]
        final = f"{target}_final"
        return [*out, f"{pad}{target}, {final} = {_fused_rnn_call(loop, with_state=True)}",
                *(f"{pad}rt.state_out(self, {literal(str(name))}, {final}[{k}])" for k, name in enumerate(states))]
    if loop.kind == SCAN:
        outs = [f"{target}_steps{k}" for k in range(len(loop.results) - loop.n_carry)]
        out += [f"{pad}{name} = []" for name in outs]
        n = code(loop.length)
        order = f"range({n} - 1, -1, -1)" if loop.reverse else f"range({n})"
        out.append(f"{pad}for {index} in {order}:")
        out += body_lines(loop.body, depth + 1)
        out += [f"{inner}{name}.append({code(res)})" for name, res in zip(outs, loop.results[loop.n_carry:])]
        out += _carry_update(args, carry_results, inner)
        stacked = [f"rt.stack_steps({name}, {int(d)}, {bool(loop.reverse)})" for name, d in zip(outs, loop.emit_dims)]
        value = stacked[0] if len(stacked) == 1 else f"({', '.join(stacked)},)"
        out.append(f"{pad}{target} = {value}")
        out += [f"{pad}rt.state_out(self, {literal(str(name))}, {arg})" for arg, name in zip(args, states)]
    elif loop.kind == REPEAT:
        out.append(f"{pad}for _ in range({code(loop.length)}):")
        out += body_lines(loop.body, depth + 1)
        out += _carry_update(args, loop.results, inner)
        out.append(f"{pad}{target} = ({', '.join(args)},)")
    elif loop.kind == HALTING:
        acc = [f"{target}_acc{i}" for i in range(len(args))]
        state = [f"{target}_{s}" for s in ("halting", "remainders", "updates")]
        out += [f"{pad}{a} = 0.0" for a in acc]
        out.append(f"{pad}{' = '.join(state)} = None")
        if loop.mix not in ACT_FUNCTIONS:
            raise _unsafe("ACT mix", loop.mix, "is not graves or interpolate")
        step_weights, accumulate = ACT_FUNCTIONS[loop.mix]
        out.append(f"{pad}for {index} in range({code(loop.length)}):")
        out += body_lines(loop.body, depth + 1)
        halt = loop.results[loop.n_carry]
        out.append(f"{inner}act_weight, {', '.join(state)}, running = rt.{step_weights}("
                   f"{code(halt)}, {', '.join(state)}, {literal(1.0 - float(loop.eps))}, "
                   f"{index} == {code(loop.length)} - 1)")
        for a, res, weight in zip(acc, carry_results, loop.weight_align):
            out.append(f"{inner}{a} = rt.{accumulate}({a}, {code(res)}, {code(weight)})")
        out += _carry_update(args, carry_results, inner)
        out.append(f"{inner}if not running:")
        out.append(f"{inner}{INDENT}break")
        out.append(f"{pad}{target} = ({', '.join(acc)}, {state[2]} + {state[1]})")
    else:
        raise _unsafe("loop kind", loop.kind, "is not scan, repeat or halting")
    return out


def _fused_rnn_call(loop: Loop, with_state: bool = False) -> str:
    """The call the in-process module makes for a scan proved to be a standard cell
    (ncd/backends/pytorch/fused_rnn.py), with the same plain data, so both agree bit for bit."""
    from ncd.backends.pytorch.fused_rnn import cell_slots, input_dims

    cell = loop.plan.cell
    if cell.cell not in ("lstm", "gru", "rnn_tanh", "rnn_relu"):
        raise _unsafe("cell", cell.cell, "is not a standard cell")
    slots = cell_slots(cell, loop.cell_axes)
    value = {node: code(expr) for node, expr in loop.cell_values.items()}
    text = "[" + ", ".join(
        "[" + ", ".join("[" + ", ".join(f"({value[n] if n else 'None'}, {literal(piece)})" for n, piece in gate) + "]"
                        for gate in slot) + "]" for slot in slots) + "]"
    inits = ", ".join(local(a) for a in loop.args)
    return (f"rt.fused_rnn({literal(cell.cell)}, {value[cell.input]}, {literal(input_dims(cell, loop.plan.axis))}, "
            f"[{inits}], {int(cell.hidden)}, {literal(cell.cell_carry)}, {bool(loop.reverse)}, self.training, {text}"
            f"{', with_state=True' if with_state else ''})")


def _carry_update(args: list[str], results: list[Expr], pad: str) -> list[str]:
    """Assign all new carries at once, as the interpreter does (a result may read another carry)."""
    if not args:
        return []
    if len(args) == 1:
        return [f"{pad}{args[0]} = {code(results[0])}"]
    return [f"{pad}{', '.join(args)} = {', '.join(code(r) for r in results)}"]


SEEDING = [f"{INDENT}_ncd_generator = None  # what draws use: torch's global generator until manual_seed(seed)", "",
           f"{INDENT}def manual_seed(self, seed):",
           f'{INDENT * 2}"""Draw from a generator of this module and all it contains, seeded with seed '
           '(None: torch\'s global one)."""',
           f"{INDENT * 2}return rt.seed_modules(self, seed)", ""]


def state_lines(states: list[Any]) -> list[str]:
    """An entry class's carried states (docs/language.md, "State in and out") as plain data, and
    the in-process module's ``state_spec()`` and ``initial_state()``."""
    from ncd.state import table

    spec = {e.name: (tuple(e.spec.axes), tuple(e.spec.shape)) for e in states}
    from ncd.state import holders

    paths = holders(states)  # (module path, state-name prefix) of each holder
    for row in table(states):
        if not isinstance(row[3], (float, str, type(None))):
            raise _unsafe("state initial value", row[3], "is not a number or a weight's name")
    return [f"{INDENT}_ncd_states = {{{', '.join(f'{literal(k)}: {literal(v)}' for k, v in spec.items())}}}"
            "  # name -> (axes, per-example shape)",
            f"{INDENT}_ncd_state_paths = {literal(paths)}",
            f"{INDENT}_ncd_state_table = {literal(table(states))}  # (name, holder, shape, initial value)", "",
            f"{INDENT}def state_spec(self):",
            f'{INDENT * 2}"""Every carried state, in the order the scans run: name -> (axes, per-example shape)."""',
            f"{INDENT * 2}return dict(self._ncd_states)", "",
            f"{INDENT}def initial_state(self, *lead, dtype=None, device=None):",
            f'{INDENT * 2}"""Every state at the spec\'s own initial value, [*lead, *shape]."""',
            f"{INDENT * 2}return rt.initial_states(self, self._ncd_state_table, lead, dtype, device)", ""]


def packed_lines(program: Program, packed: tuple[str | None, str, list[tuple[str, ...]]], inputs: str) -> list[str]:
    """An entry forward's ``cu_seqlens`` branch (docs/language.md, "Packed variable-length
    batches"): each packed sequence through the module alone (rt.run_packed_each). ``packed``:
    the packed axis (None: the inputs carry no scanned axis, or several), why not, the outputs' axes."""
    axis, why, outputs = packed
    pad = INDENT * 3
    if axis is None:
        return [f"{INDENT * 2}if cu_seqlens is not None:", f"{pad}raise ValueError({literal(why)})"]
    axes = tuple(tuple(a) for _, _, a, _ in program.inputs)
    return [f"{INDENT * 2}if cu_seqlens is not None:",
            f"{pad}return rt.run_packed_each(self, ({inputs}{',' if inputs else ''}), {literal(axes)}, "
            f"{literal(tuple(tuple(o) for o in outputs))}, {literal(axis)}, cu_seqlens, initial_state, return_state)"]


def class_source(program: Program, name: str, names: dict[str, str], top: bool, seeding: bool = False,
                 states: list[Any] | None = None,
                 packed: tuple[str | None, str, list[tuple[str, ...]]] = (None, "", [])) -> str:
    """``seeding``: the spec draws random numbers, so the class gets its generator and manual_seed;
    ``states``: an entry class's carried states (ncd/state.py), which its forward takes and returns;
    ``packed``: an entry class's packed axis for ``cu_seqlens`` (see packed_lines)."""
    lines = [f"class {name}(nn.Module):", f'{INDENT}"""Block {doc_text(program.key)}."""', "",
             *(SEEDING if seeding else []), *(state_lines(states) if top else []),
             f"{INDENT}def __init__(self):", f"{INDENT * 2}super().__init__()"]
    start = len(lines)
    for inst, block_key, repeat in program.instances:
        inst = attr_name(inst, "instance name")
        cls = names.get(block_key)
        if cls is None:
            raise _unsafe("instance block", block_key, "is not a block of the spec")
        if repeat:
            if not isinstance(repeat, int) or repeat < 1:
                raise _unsafe("repeat count", repeat, "is not a positive integer")
            value = f"nn.ModuleList([{cls}() for _ in range({int(repeat)})])"
        else:
            value = f"{cls}()"
        lines.append(INDENT * 2 + set_attr("self", inst, value))
    if program.taps:
        taps = ", ".join(f"{attr_name(t, 'tap name')!r}: nn.Identity()" for t in program.taps)
        lines.append(f"{INDENT * 2}self.taps = nn.ModuleDict({{{taps}}})")
    if program.anchor_buffer:
        lines.append(f"{INDENT * 2}self.register_buffer({ANCHOR!r}, torch.zeros(0), persistent=False)")
    consts = []
    for init in program.inits:
        pname = attr_name(init.name, f"{init.kind} name")
        lines += body_lines(init.body, 2)
        value = code(init.result)
        if init.kind == PARAM:
            lines.append(INDENT * 2 + set_attr("self", pname, f"nn.Parameter("
                         f"{value}.to(torch.get_default_dtype()).contiguous())"))
        elif init.kind == BUFFER:
            lines.append(f"{INDENT * 2}self.register_buffer({pname!r}, "
                         f"{value}.to(torch.get_default_dtype()).contiguous())")
        elif init.kind == CONST:
            consts.append(pname)
            lines.append(f"{INDENT * 2}self._ncd_consts[{pname!r}] = {value}.to(torch.float64)")
            lines.append(f"{INDENT * 2}self.register_buffer({pname!r}, "
                         f"{value}.to(torch.get_default_dtype()), persistent=False)")
        else:
            raise _unsafe("parameter kind", init.kind, "is not param, buffer or const")
    if consts:
        lines.insert(start, f"{INDENT * 2}self._ncd_consts = {{}}")
        lines += ["", f"{INDENT}def _apply(self, fn, recurse=True):",
                  f'{INDENT * 2}"""Recompute constants from float64 after a dtype/device change."""',
                  f"{INDENT * 2}out = super()._apply(fn, recurse)",
                  f"{INDENT * 2}for name, master in self._ncd_consts.items():",
                  f"{INDENT * 3}current = getattr(self, name)",
                  f"{INDENT * 3}setattr(self, name, master.to(device=current.device, dtype=current.dtype))",
                  f"{INDENT * 2}return out"]
    args = ", ".join(["self", *(local(var, "input id") for var, *_ in program.inputs)])
    if top:
        inputs = ", ".join(local(var, "input id") for var, *_ in program.inputs)
        lines += ["", f"{INDENT}def forward({args}, *, initial_state=None, return_state=False, cu_seqlens=None):",
                  f'{INDENT * 2}"""initial_state: state name -> tensor (state_spec()); return_state: also return '
                  'the final states; cu_seqlens: [N + 1] offsets of N sequences packed along the scanned axis, '
                  'each run alone."""',
                  *packed_lines(program, packed, inputs),
                  f"{INDENT * 2}if initial_state is not None or return_state:",
                  f"{INDENT * 3}return rt.owned(self, rt.run_with_state(self, self._ncd_state_paths, self._ncd_states, "
                  f"initial_state, return_state, self._ncd_forward, ({inputs}{',' if inputs else ''})))",
                  f"{INDENT * 2}return rt.owned(self, self._ncd_forward({inputs}))"]
    lines += ["", f"{INDENT}def {'_ncd_forward' if top else 'forward'}({args}):"]
    if top:
        kinds = program.input_kinds or ["float"] * len(program.inputs)
        for (var, port, axes, sizes), kind in zip(program.inputs, kinds):
            lines.append(f"{INDENT * 2}rt.check_input({var}, {literal(port)}, {literal(tuple(axes))}, "
                         f"{literal(tuple(sizes))}, {literal(kind)})")
    lines += body_lines(program.body, 2)
    for rec_name, value, dim, width in program.records:  # a prefill's caches and windows (ncd/passes/step.py)
        lines.append(f"{INDENT * 2}rt.state_record(self, {literal(str(rec_name))}, {code(value)}, {int(dim)}, {int(width)})")
    results = ", ".join(code(r) for r in program.results)
    if top:
        lines.append(f"{INDENT * 2}return {results}")
    else:  # views copied where FSDP2 wraps the module (rt.owned)
        lines.append(f"{INDENT * 2}return rt.owned(self, {results if len(program.results) == 1 else f'({results})'})")
    return "\n".join(lines)


@functools.cache
def _runtime_functions() -> tuple[Any, ...]:
    """The runtime's functions and its exception class (InputError), in source order (read once
    per process: inspect's source reads took seconds of every emit)."""
    members = [obj for _, obj in inspect.getmembers(runtime, lambda o: inspect.isfunction(o) or inspect.isclass(o))
               if obj.__module__ == runtime.__name__]
    members.sort(key=lambda f: inspect.getsourcelines(f)[1])
    return tuple(members)


def runtime_names() -> list[str]:
    """The module-level names an emitted file defines (copied from the runtime)."""
    return [f.__name__ for f in _runtime_functions()]


@functools.cache
def runtime_source() -> str:
    functions = _runtime_functions()
    sources = [inspect.getsource(f) for f in functions]
    names = ", ".join(f"{f.__name__}={f.__name__}" for f in functions)
    return "\n\n".join(sources) + f"\n\nrt = types.SimpleNamespace({names})\n"


def packing(ir: SpecIR, program: Program) -> tuple[str | None, str, list[tuple[str, ...]]]:
    """An entry block's packed axis, why it has none, and its outputs' axes (packed_lines)."""
    from ncd.backends.pytorch.varlen import carried_scanned_axes, no_packed_axis

    carried = carried_scanned_axes(ir, program)
    outputs = [tuple(w.axes) for w in ir.blocks[program.key].outputs]
    for a in (*carried, *(x for o in outputs for x in o)):
        if not is_spec_name(a.rstrip("'")):
            raise _unsafe("axis name", a, "is not a name of the language")
    if len(carried) == 1:
        return carried[0], "", outputs
    return None, no_packed_axis(ir, program, carried), outputs


def prefill_classes(ir: SpecIR, passes: Passes, records: dict[str, list[Any]], suffix: str
                    ) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    """The full module's classes with a step plan's caches and windows recorded (a prefill, see
    backends/pytorch/emit_step.py): (their source, the entry class's name, the (module path,
    state-name prefix) of every module holding a state). Every class name ends in ``suffix``."""
    from ncd.state import holders, labels_of, walk

    fused = {key: plan for key, plan in passes.scan_plans().items() if plan.backend == "fused_rnn"}
    programs = lower_spec(ir, fused, fusion=passes.fusion, records=records)
    names = {k: f"{v}{suffix}" for k, v in class_names(programs, ir.entry, None).items()}
    seeding = any(draws(block.nodes, None) for block in ir.blocks.values())
    classes = [class_source(p, names[k], names, top=(k == ir.entry), seeding=seeding,
                            states=walk(programs, k) if k == ir.entry else None) for k, p in programs.items()]
    recorders: list[tuple[str, str]] = []

    def visit(key: str, path: str, prefix: str) -> None:
        program = programs[key]
        if program.records:
            recorders.append((path, prefix))
        labels = labels_of(program)
        for inst, block, repeat in program.instances:
            subs = [(f"{inst}.{i}", f"{labels[inst]}.{i}") for i in range(repeat)] if repeat else [(inst, labels[inst])]
            for sub, label in subs:
                visit(block, f"{path}.{sub}" if path else sub, f"{prefix}.{label}" if prefix else label)

    visit(ir.entry, "", "")
    paths = tuple(dict.fromkeys([*holders(walk(programs, ir.entry)), *recorders]))
    return "\n\n\n".join(classes), names[ir.entry], paths


def emit_python(ir: SpecIR, class_name: str | None = None, passes: Passes | None = None) -> str:
    """The whole module's source; the entry block's class is ``class_name`` (default: its name).
    Lowered with the pipeline's fusion plan (``passes``; None: the pipeline runs the passes);
    scans run as the sequential loop, except those proved to be standard cells, which call
    torch's fused RNN operator as the in-process module does.

    Every text of the IR (title, file name, block keys, sizes) is an escaped literal and every
    name is checked before it is written (an NcdError otherwise): importing the result runs
    nothing but the spec's computation.
    """
    if passes is None:
        from ncd.pipeline import run_passes

        passes = run_passes(ir)
    fused = {key: plan for key, plan in passes.scan_plans().items() if plan.backend == "fused_rnn"}
    programs = lower_spec(ir, fused, fusion=passes.fusion)
    names = class_names(programs, ir.entry, class_name)
    sizes = ", ".join(f"{k}={v}" for k, v in sorted(ir.bindings.items())) or "as declared in the spec"
    # `entry A, B`: one class each (when the module is loaded at one of them)
    entries = [ir.entry] + ([k for k in ir.entries if k != ir.entry] if ir.entry in ir.entries else [])
    entry_list = ", ".join(f"{names[k]}()" for k in entries)
    if len(entries) > 1:
        entry_list += " (one state_dict loads into each)"
    header = [
        f'"""{doc_text(ir.meta.title or ir.name)} — generated by ncd from {doc_text(ir.name)}.',
        "",
        f"Sizes: {doc_text(sizes)}.",
        f"Entry: {entry_list}. Regenerate with `ncd compile`; do not edit by hand.",
        '"""',
        "import types",
        "",
        "import torch",
        "import torch.nn.functional as F",
        "from torch import nn",
        "",
        "",
    ]
    seeding = any(draws(block.nodes, None) for block in ir.blocks.values())
    from ncd.state import walk

    classes = [class_source(p, names[k], names, top=(k in entries), seeding=seeding,
                            states=walk(programs, k) if k in entries else None,
                            packed=packing(ir, p) if k in entries else (None, "", []))
               for k, p in programs.items()]
    footer = [f"\n\n__all__ = [{', '.join(repr(names[k]) for k in entries)}]\n"]
    return "\n".join(header) + runtime_source() + "\n\n" + "\n\n\n".join(classes) + "\n".join(footer)

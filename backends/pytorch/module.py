"""The in-process PyTorch module: an interpreter of the lowered program, closures compiled once.

No Python source is generated or executed here: each lowered expression becomes a closure over
torch functions, so a spec is never passed to `eval`/`exec` (DESIGN.md principle).
"""
from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from ncd.backends.pytorch import call_checks, runtime
from ncd.backends.pytorch.program import ANCHOR, Assign, Init, Loop, Program, Stmt
from torch import nn

from ncd import scan_backends
from ncd.errors import NcdError
from ncd.ir import CONST, HALTING, INPUT, PARAM, REPEAT, SCAN, SpecIR
from ncd.ops.base import BinOp, Call, Expr, Fold, Index, Lit, Method, Ref, SelfAttr, UnaryOp, fold, leaves

NAMESPACE = {"torch": torch, "F": F, "rt": runtime}
BINARY = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "**": operator.pow,
          "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq,
          "!=": operator.ne}
Env = dict[str, Any]
Thunk = Callable[[Env, nn.Module], Any]


def resolve(dotted: str) -> Any:
    head, *rest = dotted.split(".")
    obj = NAMESPACE[head]
    for part in rest:
        obj = getattr(obj, part)
    return obj


class _Closures(Fold[Thunk]):
    """The interpreter's fold: each node becomes a closure over its children's closures."""

    def ref(self, e: Ref) -> Thunk:
        key = e.id
        return lambda env, m: env[key]

    def lit(self, e: Lit) -> Thunk:
        value = e.value
        return lambda env, m: value

    def self_attr(self, e: SelfAttr) -> Thunk:
        parts = e.path.split(".")

        def get(env: Env, m: nn.Module) -> Any:
            obj: Any = m
            for part in parts:
                obj = getattr(obj, part)
            return obj

        return get

    def call(self, e: Call, fn: str | Thunk, args: list[Thunk], kwargs: list[tuple[str, Thunk]]) -> Thunk:
        static = resolve(fn) if isinstance(fn, str) else None
        dynamic = None if isinstance(fn, str) else fn
        if fn == "torch.einsum" and not kwargs and len(args) == 3 and _is_vector_matrix(e.args[0]):
            x, w = args[1], args[2]  # '...a,ab->...b' is x @ w: one matmul, no einsum parsing per call
            return lambda env, m: torch.matmul(x(env, m), w(env, m))

        def run_call(env: Env, m: nn.Module) -> Any:
            target = static if dynamic is None else dynamic(env, m)
            return target(*[a(env, m) for a in args], **{k: v(env, m) for k, v in kwargs})

        return run_call

    def method(self, e: Method, obj: Thunk, args: list[Thunk], kwargs: list[tuple[str, Thunk]]) -> Thunk:
        name = e.name
        return lambda env, m: getattr(obj(env, m), name)(*[a(env, m) for a in args],
                                                          **{k: v(env, m) for k, v in kwargs})

    def index(self, e: Index, obj: Thunk, items: list[Any]) -> Thunk:
        thunks = [_index_item(i) for i in items]
        if len(thunks) == 1:
            only = thunks[0]
            return lambda env, m: obj(env, m)[only(env, m)]
        return lambda env, m: obj(env, m)[tuple(i(env, m) for i in thunks)]

    def binop(self, e: BinOp, left: Thunk, right: Thunk) -> Thunk:
        fn2 = BINARY[e.op]
        return lambda env, m: fn2(left(env, m), right(env, m))

    def unary(self, e: UnaryOp, operand: Thunk) -> Thunk:
        return lambda env, m: -operand(env, m)


def _is_vector_matrix(equation: Expr) -> bool:
    """An einsum ``'...a,ab->...b'``: the last axis of x against the first of a matrix."""
    if not isinstance(equation, Lit) or not isinstance(equation.value, str):
        return False
    text = equation.value.replace(" ", "")
    if not (text.startswith("...") and "->..." in text):
        return False
    ins, out = text.split("->")
    parts = ins.split(",")
    if len(parts) != 2:
        return False
    x, w, y = parts[0][3:], parts[1], out[3:]
    return len(x) == 1 and len(w) == 2 and len(y) == 1 and w[0] == x and w[1] == y and x != y


def compile_expr(expr: Expr) -> Thunk:
    """An expression as a closure of (env, module), by the one walker (ncd.ops.base.fold)."""
    return fold(expr, _Closures())


def _index_item(item: Any) -> Thunk:
    """An Index item: '...', 'None', ':', an int, or an item's closure (already folded)."""
    if item == "...":
        return lambda env, m: Ellipsis
    if item == "None":
        return lambda env, m: None
    if item == ":":
        full = slice(None)
        return lambda env, m: full
    if isinstance(item, int):
        return lambda env, m: item
    return item


def compile_body(body: list[Stmt]) -> Callable[[Env, nn.Module], None]:
    return run_steps([_compile_stmt(s) for s in body])


def compile_block_body(body: list[Stmt], results: list[Expr]) -> Callable[[Env, nn.Module], None]:
    """A block's top-level statements, each value dropped from the env after its last reader
    (``results``, every expression read after the body, keep theirs): a value nothing reads any more is not held until the
    block returns (a hoisted projection's matmul and reshape beside the projection itself, ~2
    copies of the sequence per gate for a Newton scan). ``run.steps`` is still one per statement."""
    from ncd.backends.pytorch.program import _exprs

    steps = [_compile_stmt(s) for s in body]
    targets = {s.target for s in body if isinstance(s, Assign)}
    kept = {leaf.id for r in results for leaf in leaves(r) if isinstance(leaf, Ref)}
    last: dict[str, int] = {}

    def reads(stmt: Stmt):
        yield from _exprs([stmt])
        if isinstance(stmt, Loop):  # what a runner evaluates besides the step (fused_rnn, gla/delta)
            yield from stmt.cell_values.values()
            yield from stmt.kernel.values()
            for inner in stmt.body:
                yield from reads(inner)

    for i, stmt in enumerate(body):
        for expr in reads(stmt):
            for leaf in leaves(expr):
                if isinstance(leaf, Ref) and leaf.id in targets and leaf.id not in kept:
                    last[leaf.id] = i
    dead: list[list[str]] = [[] for _ in body]
    for name, i in last.items():
        dead[i].append(name)

    def run(env: Env, m: nn.Module) -> None:
        for step, names in zip(steps, dead):
            step(env, m)
            for name in names:
                env.pop(name, None)

    run.steps = steps  # type: ignore[attr-defined]
    return run


def run_steps(steps: list[Callable[[Env, nn.Module], None]]) -> Callable[[Env, nn.Module], None]:
    """Compiled statements run in order (``run.steps`` holds them, one per statement)."""

    def run(env: Env, m: nn.Module) -> None:
        for step in steps:
            step(env, m)

    run.steps = steps  # type: ignore[attr-defined]
    return run


def select_steps(loop: Loop, body: Callable[[Env, nn.Module], None],
                 keep: Callable[[Stmt], bool]) -> Callable[[Env, nn.Module], None]:
    """The statements of ``loop.body`` that ``keep`` admits, taken from the already compiled
    ``body``: a runner that splits a step reuses its compiled statements rather than compiling
    them again (each nested loop would otherwise be compiled once per runner of each loop around
    it, exponentially many times in the nesting)."""
    return run_steps([step for stmt, step in zip(loop.body, body.steps, strict=True) if keep(stmt)])


def _compile_stmt(stmt: Stmt) -> Callable[[Env, nn.Module], None]:
    if isinstance(stmt, Assign):
        target, thunk, span = stmt.target, compile_expr(stmt.expr), stmt.span

        def assign(env: Env, m: nn.Module) -> None:
            try:
                env[target] = thunk(env, m)
            except runtime.InputError as exc:  # located at the innermost statement that raised it
                exc.span = exc.span or span
                raise

        return assign
    return {SCAN: _scan, REPEAT: _repeat, HALTING: _halting}[stmt.kind](stmt)


def _scan(loop: Loop) -> Callable[[Env, nn.Module], None]:
    """A scan statement, run by the runner this backend registered for its plan's backend (or, under
    `auto`, the one predicted cheapest per call: auto_scan.py)."""
    body, inits, length = compile_body(loop.body), [compile_expr(i) for i in loop.inits], compile_expr(loop.length)
    results = [compile_expr(r) for r in loop.results]
    from ncd.backends.pytorch.auto_scan import by_cost  # `auto`: the cheapest backend per call
    from ncd.backends.pytorch.varlen import segmented  # a packed call: the scan per sequence

    return segmented(loop, by_cost(loop, body, inits, results, length), inits)


def _hoisted(loop: Loop, body: Callable[[Env, nn.Module], None]
             ) -> tuple[Callable[[Env, nn.Module], None], Callable[[Env, nn.Module], None]]:
    """(what runs once before the loop, what runs every step): the step's statements that depend
    on neither the state nor the step (the recurrence pass's ``invariant``) move out of the loop.
    Statements are in dependency order and an invariant one reads only invariant ones, so the
    order within each part stays valid. ``body`` is the compiled step (compile_body of loop.body)."""

    def invariant(s: Stmt) -> bool:
        return isinstance(s, Assign) and s.target in loop.invariant

    return select_steps(loop, body, invariant), select_steps(loop, body, lambda s: not invariant(s))


def _each_step(loop: Loop) -> list[Stmt]:
    """The step's statements that run at every step (not hoisted)."""
    return [s for s in loop.body if not (isinstance(s, Assign) and s.target in loop.invariant)]


def parallel_runner(loop: Loop, body, inits, results, length) -> Callable[[Env, nn.Module], None]:
    """newton, scan, fft, gla, delta: the step for every t at once, handed to a solver or kernel."""
    from ncd.backends.pytorch.parallel import ParallelScan

    parallel = ParallelScan(loop, body, inits, results, length)

    def run_parallel(env: Env, m: nn.Module) -> None:
        env[loop.target] = parallel(env, m)

    run_parallel.scan = parallel  # type: ignore[attr-defined]
    return run_parallel


def sequential_runner(loop: Loop, body, inits, results, length) -> Callable[[Env, nn.Module], None]:
    """The step as a loop over the scanned axis; its step-invariant statements run once, before it.
    With compile_steps on (backends/pytorch/compiled_step.py) the step runs as a compiled graph."""
    from ncd.backends.pytorch.compiled_step import CompiledStep
    from ncd.backends.pytorch.varlen import segment_of

    carry_results, emit_results = results[: loop.n_carry], results[loop.n_carry:]
    before, body = _hoisted(loop, body)
    compiled = CompiledStep(loop, _each_step(loop), body, carry_results, emit_results)

    def run_exported(env: Env, m: nn.Module) -> None:
        """Under torch.export: torch's scan operator, so the scanned axis stays a dynamic dim."""
        from torch._higher_order_ops.scan import scan as scan_op

        steps = torch.arange(length(env, m))

        def step(carry: list[torch.Tensor], t: torch.Tensor):
            local = dict(env)
            local.update(zip(loop.args, carry))
            local[loop.index] = t
            body(local, m)
            new = [res(local, m) for res in carry_results]
            return new, [res(local, m).clone() for res in emit_results]

        inits_now = [torch.as_tensor(v) for v in carry_inits(loop, inits, env, m)]
        # a carry gains the lifted dims at its first step (`h = 0` has none): the operator needs
        # them from the start, so the initial value is broadcast to the first step's shape
        first, _ = step(inits_now, steps[0])
        inits_now = [torch.broadcast_to(i, f.shape).to(f.dtype).contiguous() for i, f in zip(inits_now, first)]
        finals, ys = scan_op(step, inits_now, steps.flip(0) if loop.reverse else steps)
        carry_finals(loop, list(finals), m)
        stacked = [torch.movedim(y.flip(0) if loop.reverse else y, 0, d) for y, d in zip(ys, loop.emit_dims)]
        env[loop.target] = stacked[0] if len(stacked) == 1 else tuple(stacked)

    def run(env: Env, m: nn.Module) -> None:
        before(env, m)
        if torch.compiler.is_exporting():
            return run_exported(env, m)
        for arg, value in zip(loop.args, carry_inits(loop, inits, env, m)):
            env[arg] = value
        outs: list[list[Any]] = [[] for _ in emit_results]
        segment = segment_of(env, loop)  # a packed call: one sequence's positions
        start, stop = segment or (0, length(env, m))
        if segment is None and stop <= start and emit_results:
            raise runtime.InputError(f"the scan over {loop.axis} has no step to emit: axis {loop.axis} has size 0",
                                     "give the scanned axis one position or more (a batch of 0 runs)")
        backend = compiled.wanted(m)
        for t in (range(stop - 1, start - 1, -1) if loop.reverse else range(start, stop)):
            got = compiled(backend, env, m, t, [env[a] for a in loop.args]) if backend else None
            if got is None:
                env[loop.index] = t
                body(env, m)
                got = [res(env, m) for res in carry_results], [res(env, m) for res in emit_results]
            new, emitted = got
            for out, value in zip(outs, emitted):
                out.append(value)
            for arg, value in zip(loop.args, new):
                env[arg] = value
        carry_finals(loop, [env[arg] for arg in loop.args], m)
        stacked = [runtime.stack_steps(o, d, loop.reverse) for o, d in zip(outs, loop.emit_dims)]
        env[loop.target] = stacked[0] if len(stacked) == 1 else tuple(stacked)

    run.compiled_step = compiled  # type: ignore[attr-defined]
    return run


def carry_inits(loop: Loop, inits: list[Thunk], env: Env, m: nn.Module) -> list[Any]:
    """A scan's initial carries: the spec's, or the call's ``initial_state`` entries (ncd/state.py)."""
    values = [init(env, m) for init in inits]
    if not loop.state_names:
        return values
    return [runtime.state_in(m, name, value, len(axes))
            for name, value, axes in zip(loop.state_names, values, loop.state_axes)]


def carry_finals(loop: Loop, finals: list[Any], m: nn.Module) -> None:
    """A scan's final carries, recorded as the call's final states when it asked for them."""
    for name, value in zip(loop.state_names, finals):
        runtime.state_out(m, name, value)


def fused_rnn_runner(loop: Loop, body, inits, results, length) -> Callable[[Env, nn.Module], None]:
    """A proven Elman/GRU/LSTM step: torch's fused RNN operator (ncd/backends/pytorch/fused_rnn.py)."""
    from ncd.backends.pytorch.fused_rnn import FusedRNN

    fused = FusedRNN(loop, inits, compile_expr)

    def run_fused(env: Env, m: nn.Module) -> None:
        env[loop.target] = fused(env, m)

    run_fused.scan = fused  # type: ignore[attr-defined]
    return run_fused


def register_runners() -> None:
    """The torch backend's runner for every backend of the core's registry (ncd/scan_backends.py)."""
    special = {"sequential": sequential_runner, "fused_rnn": fused_rnn_runner}
    for name in scan_backends.BACKENDS:
        scan_backends.register_runner(name, special.get(name, parallel_runner))


register_runners()


def _repeat(loop: Loop) -> Callable[[Env, nn.Module], None]:
    body, inits, length = compile_body(loop.body), [compile_expr(i) for i in loop.inits], compile_expr(loop.length)
    results = [compile_expr(r) for r in loop.results]

    def run(env: Env, m: nn.Module) -> None:
        for arg, init in zip(loop.args, inits):
            env[arg] = init(env, m)
        for _ in range(length(env, m)):
            body(env, m)
            new = [res(env, m) for res in results]
            for arg, value in zip(loop.args, new):
                env[arg] = value
        env[loop.target] = tuple(env[a] for a in loop.args)

    return run


# Each ACT form (ncd.ir.ACT_MIXES): its step weights and how a step's state joins the output.
ACT_RUNTIME = {"graves": (runtime.act_weights_graves, runtime.act_sum),
               "interpolate": (runtime.act_weights, runtime.act_mix)}


def _halting(loop: Loop) -> Callable[[Env, nn.Module], None]:
    body, inits, length = compile_body(loop.body), [compile_expr(i) for i in loop.inits], compile_expr(loop.length)
    weights = [compile_expr(w) for w in loop.weight_align]
    results = [compile_expr(r) for r in loop.results]
    carry_results, halt_result = results[: loop.n_carry], results[loop.n_carry]
    threshold = 1.0 - loop.eps
    step_weights, accumulate = ACT_RUNTIME[loop.mix]

    def run(env: Env, m: nn.Module) -> None:
        for arg, init in zip(loop.args, inits):
            env[arg] = init(env, m)
        acc: list[Any] = [0.0 for _ in loop.args]
        halting = remainders = updates = None
        steps = length(env, m)
        for n in range(steps):
            env[loop.index] = n
            body(env, m)
            weight, halting, remainders, updates, running = step_weights(
                halt_result(env, m), halting, remainders, updates, threshold, n == steps - 1)
            env["act_weight"] = weight
            new = [res(env, m) for res in carry_results]
            for i, value in enumerate(new):
                acc[i] = accumulate(acc[i], value, weights[i](env, m))
            for arg, value in zip(loop.args, new):
                env[arg] = value
            if not running:
                break
        env[loop.target] = (*acc, updates + remainders)

    return run


class CompiledModule(nn.Module):
    """One block of a spec as a torch module: parameters named as in the spec, sub-blocks as children."""

    _ncd_generator: torch.Generator | None = None  # what draws use: torch's global one until seeded

    def __init__(self, spec: SpecIR, programs: dict[str, Program], key: str, top: bool = True) -> None:
        super().__init__()
        program = programs[key]
        self._ncd_block = key
        self._ncd_top = top
        self._ncd_spec = spec  # the checked IR it was compiled from: diagrams, save, export
        self._ncd_program = program
        block = spec.blocks[key]
        self._ncd_block_span = block.loc.span if block.loc else None
        self._ncd_port_spans = {n.id: n.loc.span for n in block.nodes if n.op == INPUT and n.loc}
        self._ncd_source: tuple[str | None, str | None] = (None, spec.name)
        for name, block_key, repeat in program.instances:
            if repeat:
                self.add_module(name, nn.ModuleList(CompiledModule(spec, programs, block_key, top=False)
                                                    for _ in range(repeat)))
            else:
                self.add_module(name, CompiledModule(spec, programs, block_key, top=False))
        if program.taps:
            self.taps = nn.ModuleDict({name: nn.Identity() for name in program.taps})
        self._ncd_consts: dict[str, torch.Tensor] = {}
        self._ncd_contract: Any = None  # the call's size and memory checks (set_call_contract)
        if program.anchor_buffer:
            self.register_buffer(ANCHOR, torch.zeros(0), persistent=False)
        for init in program.inits:
            self._initialise(init)
        after_body = [*program.results, *(e for _, e, _, _ in program.records)]  # a prefill's caches too
        self._ncd_run = compile_block_body(program.body, after_body)
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            for step in self._ncd_run.steps:  # an LSTM's weights in torch's layout (FusedRNN.hold_weights)
                getattr(getattr(step, "scan", None), "hold_weights", lambda m: None)(self)
        self._ncd_results = [compile_expr(r) for r in program.results]
        self._ncd_records = [(name, compile_expr(e), dim, width) for name, e, dim, width in program.records]
        from ncd.backends.pytorch.fused_rnn import OneScanCall  # a body that is one fused scan: a short path

        self._ncd_direct = OneScanCall.find(self) if top else None

    def _initialise(self, init: Init) -> None:
        env: Env = {}
        compile_body(init.body)(env, self)
        value = compile_expr(init.result)(env, self)
        if init.kind == CONST:
            master = value.to(torch.float64) if value.is_floating_point() else value
            self._ncd_consts[init.name] = master
            self.register_buffer(init.name, master.to(torch.get_default_dtype()), persistent=False)
            return
        value = value.to(torch.get_default_dtype()).contiguous()
        if init.kind == PARAM:
            self.register_parameter(init.name, nn.Parameter(value))
        else:
            self.register_buffer(init.name, value)

    def _apply(self, fn, recurse=True):  # type: ignore[override]
        """Constants are recomputed from their float64 value after a dtype/device change, so
        `.double()` gives exact constants rather than float32 ones widened."""
        out = super()._apply(fn, recurse)
        for name, master in self._ncd_consts.items():
            current = getattr(self, name)
            setattr(self, name, master.to(device=current.device, dtype=current.dtype))
        return out

    def forward(self, *inputs: torch.Tensor, initial_state: Mapping[str, torch.Tensor] | None = None,
                return_state: bool = False, cu_seqlens: torch.Tensor | None = None) -> Any:
        """The block on ``inputs``. ``initial_state`` (state name -> tensor, ``state_spec()``)
        starts those scans from the given carries instead of the spec's initial values;
        ``return_state=True`` returns ``(outputs, final_state)`` (docs/language.md, "State in and out").
        ``cu_seqlens`` ([N + 1] offsets) runs N sequences packed along the scanned axis, each alone,
        states with a leading N (backends/pytorch/varlen.py)."""
        if cu_seqlens is not None:
            from ncd.backends.pytorch.varlen import run_packed

            try:
                return runtime.owned(self, run_packed(self, inputs, cu_seqlens, initial_state, return_state))
            except NcdError as exc:
                raise exc.located(*self._ncd_source) from None
        if initial_state is None and not return_state:
            return runtime.owned(self, self._run(inputs))
        return runtime.owned(self, self._run_with_state(inputs, initial_state, return_state))

    def state_spec(self) -> dict[str, Any]:
        """Every carried state, in the order the scans run: name -> (axes, per-example shape)."""
        from ncd import state

        return state.state_spec(self)

    def initial_state(self, *lead: int, dtype: torch.dtype | None = None,
                      device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """Every state at the spec's own initial value, of shape ``[*lead, *shape]`` (default:
        the parameters' dtype and device)."""
        from ncd import state

        try:
            return state.initial_state(self, tuple(lead), dtype, device)
        except NcdError as exc:
            raise exc.located(*self._ncd_source) from None

    def _run_with_state(self, inputs: tuple[torch.Tensor, ...], initial_state: Mapping[str, torch.Tensor] | None,
                        return_state: bool) -> Any:
        from ncd import state

        like = next((x for x in inputs if isinstance(x, torch.Tensor) and x.is_floating_point()), None)
        if like is None:
            like = next((p for p in self.parameters() if p.is_floating_point()), None)
        try:
            state.check_initial(self, initial_state, like)
        except NcdError as exc:
            raise exc.located(*self._ncd_source) from None
        cached = self.__dict__.get("_ncd_state_names")
        if cached is None:
            found = state.entries(self)
            cached = self.__dict__["_ncd_state_names"] = (state.holders(found), tuple(e.name for e in found))
        paths, names = cached
        session = runtime.state_begin(self, paths, names, initial_state)
        try:
            outputs = self._run(inputs)
        except RuntimeError as exc:
            if not initial_state or isinstance(exc, torch.OutOfMemoryError):
                raise
            given = ", ".join(f"{k} {tuple(v.shape)}" for k, v in initial_state.items())
            leads = {tuple(x.shape[: x.dim() - len(axes)]) for x, (_, _, axes, _) in zip(inputs, self._ncd_program.inputs)
                     if isinstance(x, torch.Tensor)}
            raise NcdError(f"the initial states {given} do not fit this call (lead dims): "
                           f"{str(exc).splitlines()[0][:200]}", self._ncd_block_span,
                           hint=f"each state is [*lead, *state_spec() shape], lead the dims its carry has in this call "
                                f"(the inputs' lifted dims {', '.join(map(str, sorted(leads)))} here, and any a "
                                f"lifted call adds); a previous call's final_state fits").located(*self._ncd_source) from None
        finally:
            runtime.state_end(self, paths)
        if not return_state:
            return outputs
        final = session["final"]
        return outputs, {name: final[name] for name in names if name in final}

    def _run(self, inputs: tuple[torch.Tensor, ...]) -> Any:
        program = self._ncd_program
        if len(inputs) != len(program.inputs):
            names = ", ".join(p for _, p, *_ in program.inputs)
            raise NcdError(f"block {program.key} takes {len(program.inputs)} inputs ({names}), got {len(inputs)}",
                           self._ncd_block_span).located(*self._ncd_source)
        env: Env = {}
        kinds = program.input_kinds or ["float"] * len(program.inputs)
        for (var, port, axes, sizes), kind, x in zip(program.inputs, kinds, inputs):
            if self._ncd_top:
                try:
                    runtime.check_input(x, port, axes, sizes, kind)
                    self._check_float_dtype(x, port, kind)
                except (TypeError, runtime.InputError) as exc:
                    hint = getattr(exc, "hint", None) or (
                        "lifted (batch) axes lead; the block's own axes come last" if isinstance(exc, ValueError) else None)
                    raise NcdError(str(exc), self._ncd_port_spans.get(var), hint=hint
                                   ).located(*self._ncd_source) from None
            env[var] = x
        if self._ncd_top and self._ncd_contract is not None and not torch.compiler.is_compiling() \
                and not torch.compiler.is_exporting():
            try:
                self._ncd_contract.check(inputs)
            except NcdError as exc:
                raise exc.located(*self._ncd_source) from None
        try:
            direct = self._ncd_direct
            out = direct(self, env[program.inputs[0][0]]) if direct is not None else None
            if out is not None:
                return out
            self._ncd_run(env, self)
        except torch.OutOfMemoryError as exc:
            if not self._ncd_top:
                raise
            raise NcdError(f"ran out of memory while running block {program.key}: {str(exc).splitlines()[0][:200]}",
                           self._ncd_block_span, hint=call_checks.MEMORY_HINT).located(*self._ncd_source) from None
        except runtime.InputError as exc:  # the runtime's input checks (rt.check_window, ids): the input's sizes
            if not self._ncd_top:
                raise
            raise NcdError(str(exc), getattr(exc, "span", None) or self._ncd_block_span,
                           hint=getattr(exc, "hint", None)
                           or "a free axis must be large enough for every window that slides over it"
                           ).located(*self._ncd_source) from None
        for name, value, dim, width in self._ncd_records:  # a prefill module's caches and windows
            runtime.state_record(self, name, value(env, self), dim, width)
        results = [r(env, self) for r in self._ncd_results]
        return results[0] if len(results) == 1 else tuple(results)

    def set_call_contract(self, contract: Any) -> None:
        """What each call's inputs are checked against (backends/pytorch/call_checks.py)."""
        self._ncd_contract = contract

    def _check_float_dtype(self, x: torch.Tensor, port: str, kind: str) -> None:
        """A float input must have the float dtype of the weights it meets (torch would stop in
        the first matmul with 'expected scalar type')."""
        if kind != "float":
            return
        weight = self._first_float_param()
        weights = weight.dtype if weight is not None else None
        if weights is not None and x.dtype != weights:
            raise TypeError(f"input {port} is {x.dtype} but the module's parameters are {weights}: "
                            f"convert one of them (x.to({weights}) or module.to({x.dtype}))")

    def _first_float_param(self) -> torch.Tensor | None:
        """The first floating-point parameter, found once (a walk over the sub-modules costs more
        than a small call's compute) and read through its owner at every call, so a parameter
        replaced or converted since is the one seen."""
        where = self.__dict__.get("_ncd_float_param")  # (owner, name), or () when there is none
        if where:
            weight = where[0]._parameters.get(where[1])
            if weight is not None and weight.is_floating_point():
                return weight
        elif where is not None:
            return None
        found = next(((path, t) for path, t in self.named_parameters() if t.is_floating_point()), None)
        self.__dict__["_ncd_float_param"] = _owner(self, found[0]) if found else ()
        return found[1] if found else None

    def entry(self, name: str) -> "CompiledModule":
        """Another entry block of this spec (`entry A, B`) as a module holding *these* parameters
        and buffers (the same tensors: training one trains the other); its state_dict equals this
        one's. Compiled with the same sizes and scan choices as this module."""
        spec = self._ncd_spec
        by_name = {spec.blocks[k].name: k for k in spec.entries}
        if not self._ncd_top or self._ncd_block not in spec.entries:
            raise NcdError(f"block {self._ncd_block} is not an entry block of an `entry` declaration",
                           hint="declare the entry blocks that share weights: entry Train, Greedy")
        if name not in by_name:
            raise NcdError(f"{name} is not an entry block of this spec (entries: {', '.join(by_name)})",
                           hint="list it in the spec's entry declaration")
        from ncd.backends.pytorch import compile_module

        other = compile_module(spec.model_copy(update={"entry": by_name[name]}),
                               scan_backend=getattr(self, "_ncd_scan_backend", "auto"))
        other.locate_errors(*self._ncd_source)  # type: ignore[arg-type]
        share_weights(self, other)
        return other

    def step_module(self, axis: str | None = None) -> "CompiledModule":
        """This module advanced one position at a time (docs/language.md, "Step module"):
        ``outputs, state = step(*inputs_t, state=state)``, the states named as the full module's
        final state, the weights these very tensors. ``axis``: the axis it steps along (default:
        the one the scans scan)."""
        from ncd.backends.pytorch.step import build_step_module

        return build_step_module(self, axis)

    def contiguous_parameters(self) -> "CompiledModule":
        """Every parameter of this module and all it contains made contiguous, values, names and
        shapes kept. An LSTM built where no process group is up holds its weights as permuted
        views of torch's layout (fused_rnn.FusedRNN.hold_weights); FSDP2's ``fully_shard``
        refuses parameters that are not contiguous, so a module built before
        ``init_process_group`` calls this before being sharded. Its forward then copies those
        weights into torch's layout at each call (slower at small sizes, same results)."""
        with torch.no_grad():
            for param in self.parameters():
                if not param.is_contiguous():
                    param.data = param.data.contiguous()
        return self

    def manual_seed(self, seed: int | None) -> "CompiledModule":
        """Draw (dropout, uniform, normal, categorical) from a generator of this module and all it
        contains, seeded with ``seed``; None: from torch's global generator again. The emitted
        Python's ``manual_seed`` gives the same draws for the same seed."""
        return runtime.seed_modules(self, seed)

    def locate_errors(self, source: str, filename: str) -> None:
        """Errors raised when the module is called quote the spec's text (kept for that only)."""
        self._ncd_source = (source, filename)

    def parallel_scans(self) -> list[Any]:
        """The parallel scan runners of this block (their `.stats` say what the solver did)."""
        return [step.scan for step in self._ncd_run.steps if hasattr(step, "scan")]

    def extra_repr(self) -> str:
        return f"block={self._ncd_block}"

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, Any]:
        """Jupyter shows a compiled module as the diagram of its block (ncd/notebook.py)."""
        from ncd import notebook

        bundle = notebook.mimebundle(self._ncd_spec, self._ncd_block, summary=repr(self))
        return notebook.select(bundle, include, exclude)

    def _repr_svg_(self) -> str | None:
        from ncd import notebook

        return notebook.svg(self._ncd_spec, self._ncd_block)


def _owner(module: nn.Module, path: str) -> tuple[nn.Module, str]:
    """The sub-module holding the state_dict entry ``path`` and the entry's own name there."""
    *parents, leaf = path.split(".")
    for part in parents:
        module = module.get_submodule(part)
    return module, leaf


def share_weights(source: CompiledModule, target: CompiledModule) -> None:
    """Point ``target``'s parameters and persistent buffers at ``source``'s tensors (the same
    tensors: training one trains the other) and give it the same generator, so draws go on from
    where they are, and the same training mode (``module.eval()`` before ``step_module()`` or
    ``entry()`` gives an eval-mode module: no dropout, running statistics read, not updated).
    Non-persistent buffers (constants, anchors) are recomputed, not state."""
    mine = dict(source.named_parameters(remove_duplicate=False))
    held = dict(source.named_buffers(remove_duplicate=False))
    for path, _ in list(target.named_parameters(remove_duplicate=False)):
        owner, leaf = _owner(target, path)
        owner._parameters[leaf] = mine[path]
    for path, _ in list(target.named_buffers(remove_duplicate=False)):
        owner, leaf = _owner(target, path)
        if leaf in owner._non_persistent_buffers_set or path not in held:
            continue
        owner._buffers[leaf] = held[path]
    for inner in target.modules():
        inner._ncd_generator = source._ncd_generator
    target.train(source.training)

"""Scans run parallel over time: the step, evaluated for every t at once, handed to a solver.

The step's body is the same compiled program the sequential loop runs. Evaluated with the loop
index set to ``AllSteps``, each ``x[t]`` moves the scanned axis in front of the remaining core
axes (``rt.step_slice``), so every value carries the steps as its innermost lifted dim and the
body computes all T steps in one pass. Values captured from outside the scan get a unit step
dim; parameters broadcast as usual. The carried state is packed into one vector per (batch,
step) row, as the Newton solver and the linear scan expect.

Everything the body reads is passed to the solver as an explicit tensor argument, so the
adjoint backward returns gradients for inputs, parameters and captured values alike. A captured
sequence the step reads only as ``x[t]`` is declared to the solver as per-step (its ``StepAxis``),
so Newton can evaluate the step a window of steps at a time (``backends/pararnn/chunks.py``): its
transient memory is then bounded by the window, not by T.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ncd.backends.pytorch.implementations import implementation, kernel_backend
from ncd.backends.pytorch.program import Loop, _exprs
from ncd.backends.pytorch.varlen import packed_of, segment_of
from ncd.errors import NcdError
from ncd.ops.base import Call, Gather, Lit, Ref, fold


class AllSteps:
    """Stands for the scan index when the body runs for every step at once (``window``: only
    the positions [start, stop), one sequence of a packed call, backends/pytorch/varlen.py)."""

    def __init__(self, reverse: bool, window: tuple[int, int] | None = None) -> None:
        self.reverse = reverse
        self.window = window

    def take(self, x: torch.Tensor, dim: int, core: int) -> torch.Tensor:
        """A lifted capture arrives with a unit step dim before its core: the scanned axis takes
        that place. An unlifted one has no lifted dims: the scanned axis becomes the only one."""
        if x.dim() > core:
            x = x.squeeze(-core - 1)
        if self.window is not None:
            x = x.narrow(dim, self.window[0], self.window[1] - self.window[0])
        moved = torch.movedim(x, dim, -core)
        return moved.flip(-core) if self.reverse else moved


class ParallelScan:
    """Runs one scan statement with a parallel backend (newton or linear diagonal scan)."""

    def __init__(self, loop: Loop, body, inits, results, length) -> None:
        self.loop = loop
        self.body, self.inits, self.results, self.length = body, inits, results, length
        self.n_carry = loop.n_carry
        self.sizes = loop.carry_sizes
        self.k = self.n_carry if loop.plan.structure == "block" else 1
        # an emitted value that is a carry's new value is read off the solved states, without
        # evaluating the step once more (paragru, gru: `emit h` after `h = ...`)
        carries = loop.results[: self.n_carry]
        emits = loop.results[self.n_carry:]
        self.emit_carry = ([carries.index(e) for e in emits] if all(e in carries for e in emits)
                           else None)
        if any(p.startswith("taps.") for p in loop.self_reads):
            raise NcdError(f"scan {loop.node_id} has a tap inside its step; only the sequential backend runs it "
                           f"step by step", hint="use scan_backend='sequential'")
        from ncd.backends.pararnn import NewtonSolver, SolverStats

        if loop.backend in ("gla", "delta"):
            if not loop.kernel:
                raise NcdError(f"scan {loop.node_id} is not in the form the {loop.backend} kernel takes",
                               hint="see `ncd compile --explain`; use scan_backend='sequential'")
            from ncd.backends.pytorch.module import compile_expr, select_steps

            self.free_body = select_steps(loop, body, lambda s: getattr(s, "target", None) in loop.state_free)
            self.kernel_values = {name: compile_expr(e) for name, e in loop.kernel.items()}

        self.stats = SolverStats()
        self.implementation: str | None = None  # what the last call ran, in words (`ncd run` prints it)
        if loop.backend == "newton":
            structure = loop.plan.structure
            kind = {"diagonal": "diag", "block": "block"}.get(structure, "dense")
            # Newton's own fallback calls the cell one step at a time, and this cell evaluates
            # every step at once: on failure the scan runs as the sequential loop instead
            self.solver = NewtonSolver(kind, self.k, stats=self.stats, on_failure="raise")
            # per capture, the dim x[t] selects (None: read whole); None: the step runs for all T at once
            self.step_dims = _step_dims(loop)
        self._fallback: Any = None

    # ---------------------------------------------------------------- packing
    def pack(self, carries: list[torch.Tensor], lead: tuple[int, ...]) -> torch.Tensor:
        """Carries [*lead, *core_i] → rows [prod(lead), N]; k equal carries interleave per unit."""
        flat = [c.expand(*lead, *size).reshape(*lead, -1) for c, size in zip(carries, self.sizes)]
        if self.k > 1:
            return torch.stack(flat, dim=-1).reshape(math.prod(lead), -1)
        return torch.cat(flat, dim=-1).reshape(math.prod(lead), -1)

    def unpack(self, rows: torch.Tensor, lead: tuple[int, ...]) -> list[torch.Tensor]:
        if self.k > 1:
            per = rows.reshape(*lead, -1, self.k)
            return [per[..., i].reshape(*lead, *size) for i, size in enumerate(self.sizes)]
        out, start = [], 0
        for size in self.sizes:
            n = math.prod(size)
            out.append(rows[..., start:start + n].reshape(*lead, *size))
            start += n
        return out

    def sequentially(self, env: dict[str, Any], m: nn.Module, reason: str) -> Any:
        """The scan as the sequential loop, when Newton did not converge (a carry starting at inf
        makes its residual non-finite): the same body, one step at a time, warned and counted."""
        import warnings

        from ncd.backends.pararnn import NewtonFallbackWarning

        self.stats.fallbacks += 1
        warnings.warn(f"scan {self.loop.node_id}: {reason}; running it as the sequential loop",
                      NewtonFallbackWarning, stacklevel=2)
        return self.as_loop(env, m)

    def as_loop(self, env: dict[str, Any], m: nn.Module) -> Any:
        """The same body run one step at a time (the loop the emitted Python runs)."""
        from ncd.backends.pytorch.module import sequential_runner

        if self._fallback is None:
            self._fallback = sequential_runner(self.loop, self.body, self.inits, self.results, self.length)
        local = dict(env)
        self._fallback(local, m)
        return local[self.loop.target]

    # ---------------------------------------------------------------- evaluation
    def steps(self, env: dict[str, Any], m: nn.Module) -> tuple[AllSteps, int]:
        """The index standing for every step this call runs, and how many: all of the scanned
        axis, or one sequence's positions in a packed call."""
        window = segment_of(env, self.loop)
        T = self.length(env, m) if window is None else window[1] - window[0]
        return AllSteps(self.loop.reverse, window), T

    def step_all(self, env: dict[str, Any], m: nn.Module, h_prev: list[torch.Tensor],
                 reads: dict[str, torch.Tensor], index: AllSteps | None = None
                 ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Run the body for every step: h_prev [*batch, T, *core] → (new carries, emitted)."""
        local = dict(env)
        for (ref, lifted, core), value in zip(self.loop.captures, reads["captures"]):
            local[ref] = value.unsqueeze(-core - 1) if lifted and isinstance(value, torch.Tensor) else value
        local[self.loop.index] = index if index is not None else AllSteps(self.loop.reverse)
        for arg, value in zip(self.loop.args, h_prev):
            local[arg] = value
        proxy = _ReadProxy(m, reads["attrs"], reads.get("modules", {}))
        self.body(local, proxy)
        values = [r(local, proxy) for r in self.results]
        return values[: self.n_carry], values[self.n_carry:]

    def __call__(self, env: dict[str, Any], m: nn.Module) -> Any:
        loop = self.loop
        if any(isinstance(env[ref], torch.Tensor) and env[ref].numel() == 0 for ref, _, _ in loop.captures):
            return self.as_loop(env, m)  # an empty batch or sequence: nothing to solve, the loop's shapes
        if loop.backend in ("gla", "delta"):
            return self.chunked_kernel(env, m)
        from ncd.backends.pytorch.module import carry_finals, carry_inits

        h0 = carry_inits(loop, self.inits, env, m)
        index, T = self.steps(env, m)
        captures = [env[ref] for ref, _, _ in loop.captures]
        attrs, modules = {}, {}
        for path in loop.self_reads:
            value = getattr(m, path)
            if isinstance(value, nn.Module):
                weights = dict(value.named_parameters())
                if weights:  # the step calls it functionally on these, handed to the solver
                    modules[path] = weights
                continue  # a weight-free sub-block runs as it is, for every step at once
            attrs[path] = value
        batch = self.batch_shape(env, m, h0, captures, attrs, T)
        lead = (*batch, T)
        n_rows = math.prod(batch)
        tensors = [c for c in captures if isinstance(c, torch.Tensor)]
        attr_tensors = list(attrs.values())
        module_keys = [(path, name) for path, weights in modules.items() for name in weights]
        module_tensors = [modules[path][name] for path, name in module_keys]
        n_caps, n_attrs = len(tensors), len(attr_tensors)

        def rebuild(params: tuple[torch.Tensor, ...]) -> dict[str, Any]:
            it = iter(params[:n_caps])
            caps = [next(it) if isinstance(c, torch.Tensor) else c for c in captures]
            subs: dict[str, dict[str, torch.Tensor]] = {path: {} for path in modules}
            for (path, name), tensor in zip(module_keys, params[n_caps + n_attrs:]):
                subs[path][name] = tensor
            return {"captures": caps, "attrs": dict(zip(attrs, params[n_caps:n_caps + n_attrs])), "modules": subs}

        def cell(h_rows: torch.Tensor, _x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
            """The step at rows of every batch index and a window of steps (all T, or the
            solver's window: the per-step captures in params arrive cut to it)."""
            window = (*batch, h_rows.shape[0] // max(1, n_rows))
            h_prev = self.unpack(h_rows.reshape(*window, -1), window)
            new, _ = self.step_all(env, m, h_prev, rebuild(params), index)
            return self.pack(new, window).reshape(h_rows.shape[0], -1)

        h0_rows = self.pack([h.expand(*batch, *size) for h, size in zip(h0, self.sizes)], tuple(batch))
        h0_rows = h0_rows.reshape(n_rows, -1)
        dummy = h0_rows.new_zeros(n_rows, T, 0)
        params = tuple(tensors + attr_tensors + module_tensors)
        self.implementation = implementation(loop.backend, h0_rows.device, h0_rows.dtype)
        if loop.backend == "newton":
            from ncd.backends.pararnn import NewtonFailedError

            from ncd.backends.pararnn.chunks import StepAxis

            axes = None
            if self.step_dims is not None and index.window is None:  # a packed call's window: not cut
                axes = [StepAxis(d, loop.reverse) if d is not None else None
                        for d, c in zip(self.step_dims, captures) if isinstance(c, torch.Tensor)]
                if any(ax is not None and t.shape[ax.dim] != T for ax, t in zip(axes, tensors)):
                    axes = None  # a sequence broadcast along the scanned axis: not cut into windows
                else:
                    axes += [None] * (len(attr_tensors) + len(module_tensors))
            self.solver.chunk = "auto" if axes is not None else "all"
            cell.step_axes = axes  # type: ignore[attr-defined]
            try:
                h_all = self.solver(cell, h0_rows, dummy, *params)
            except NewtonFailedError as exc:
                return self.sequentially(env, m, str(exc))
        elif loop.backend == "fft":
            h_all = self.time_invariant(cell, h0_rows, dummy, params, n_rows, T)
        else:
            h_all = self.linear_diagonal(cell, h0_rows, dummy, params, n_rows, T)
        states = h_all.reshape(*batch, T, -1)
        if loop.state_names:  # the carries after the last step (of a reverse scan: after position 0)
            last = states[..., -1, :] if T else h0_rows.reshape(*batch, -1).to(states.dtype)
            carry_finals(loop, self.unpack(last, tuple(batch)), m)
        if self.emit_carry is not None:
            new = self.unpack(states, lead)
            emitted = [new[i] for i in self.emit_carry]
        else:
            shifted = torch.cat([h0_rows.reshape(*batch, 1, -1), states[..., :-1, :]], dim=-2)
            _, emitted = self.step_all(env, m, self.unpack(shifted, lead), rebuild(params), index)
        outs = []
        for value, dim in zip(emitted, loop.emit_dims):
            value = value.flip(dim) if loop.reverse else value
            outs.append(value)
        return outs[0] if len(outs) == 1 else tuple(outs)

    def chunked_kernel(self, env: dict[str, Any], m: nn.Module) -> torch.Tensor:
        """GLA / delta rule: evaluate q, k, v and the gate (or β) for every step — the state-free
        part of the step — and hand them to the chunked kernel, which never materialises S_t.

        Each value arrives as [*lift, T|1, *core] with its core axes in the IR's order; the head
        axes (the state's axes besides K and V, ``plan.kernel_layout``) are permuted to the front
        of the core, broadcast where a value leaves one out, and flattened into the kernel's H."""
        loop = self.loop
        layout = loop.plan.kernel_layout
        index, T = self.steps(env, m)
        local = dict(env)
        captures = [env[ref] for ref, _, _ in loop.captures]
        for (ref, lifted, core), value in zip(loop.captures, captures):
            local[ref] = value.unsqueeze(-core - 1) if lifted and isinstance(value, torch.Tensor) else value
        local[loop.index] = index
        self.free_body(local, m)
        values = {name: fn(local, m) for name, fn in self.kernel_values.items()}
        ranks = loop.kernel_ranks
        like = next(v for v in values.values() if isinstance(v, torch.Tensor))
        for name, value in values.items():  # a value that does not depend on the step gets a unit step dim
            value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
            if value.dim() < ranks[name] + 1:
                value = value.reshape((1,) * (ranks[name] + 1 - value.dim()) + tuple(value.shape))
            values[name] = value
        from ncd.backends.pytorch.module import carry_finals, carry_inits

        h0 = carry_inits(loop, self.inits, env, m)[0]
        n_state = len(layout.state)
        h0 = torch.as_tensor(h0, dtype=like.dtype, device=like.device)
        if h0.dim() < n_state:
            h0 = h0.reshape((1,) * (n_state - h0.dim()) + tuple(h0.shape))
        operands = dict(layout.operands)
        sizes: dict[str, int] = {}
        for name, value in values.items():
            sizes.update(zip(operands[name], value.shape[value.dim() - ranks[name]:]))
        K, V = sizes[layout.key], sizes[layout.value]
        heads = [sizes[h] for h in layout.heads]
        n_heads = math.prod(heads)
        lifts = [tuple(v.shape[: v.dim() - ranks[n] - 1]) for n, v in values.items()]
        packing = packed_of(env, loop)  # a packed call: one kernel call, h0 and S_T a row per sequence
        if packing is None:
            lifts.append(tuple(h0.shape[: h0.dim() - n_state]))
        batch = tuple(torch.broadcast_shapes(*lifts))
        rows = math.prod(batch)
        states = batch if packing is None else (len(packing.segments), *(batch[1:] if packing.batched else batch))

        def core(value: torch.Tensor, axes: list[str], order: list[str]) -> torch.Tensor:
            """[*lead, *core in ``axes`` order] → [*lead, *order], unit dims for axes it leaves out."""
            lead = value.dim() - len(axes)
            present = [a for a in order if a in axes]
            value = value.permute(*range(lead), *(lead + axes.index(a) for a in present))
            return value.reshape(*value.shape[:lead], *(sizes[a] if a in axes else 1 for a in order))

        def lay(name: str, width: str | None) -> torch.Tensor:
            """[*lift, T|1, *core] → [rows, T, H, width?], contiguous for the kernel."""
            order = [*layout.heads, width] if width else layout.heads
            value = core(values[name], operands[name], order)
            value = value.expand(*batch, T, *(sizes[a] for a in order))
            tail = (sizes[width],) if width else ()
            return value.reshape(rows, T, n_heads, *tail).contiguous()

        q, k, v = lay("q", layout.key), lay("k", layout.key), lay("v", layout.value)
        state0 = core(h0, layout.state, [*layout.heads, layout.key, layout.value])
        per = (rows, n_heads) if packing is None else (states[0], rows * n_heads)  # packed: rows join the heads
        state0 = state0.expand(*states, *heads, K, V).reshape(*per, K, V).to(q)
        kernel = kernel_backend(loop.backend, q.device, q.dtype, max(K, V))
        self.implementation = implementation(loop.backend, q.device, q.dtype, max(K, V))
        if loop.backend == "gla":
            from ncd.backends.triton.gated_linear import gla as fn

            if "gate" in values:
                values["g"], operands["g"] = torch.log(values.pop("gate")), operands["gate"]
            last = lay("g", layout.key)
        else:
            from ncd.backends.triton.delta import delta_rule as fn

            last = lay("beta", None)
        if packing is None:
            out, final = fn(q, k, v, last, scale=1.0, initial_state=state0, backend=kernel)
        else:
            from ncd.backends.pytorch.varlen import packed_kernel

            out, final = packed_kernel(fn, [q, k, v, last], state0, packing, loop.reverse, scale=1.0, backend=kernel)
        if loop.state_names:  # S_T [rows, H, K, V] back to the carry's [*lift, *state axes]
            order = [*layout.heads, layout.key, layout.value]
            final = final.to(q.dtype).reshape(*states, *heads, K, V)
            lead = len(states)
            final = final.permute(*range(lead), *(lead + order.index(a) for a in layout.state))
            carry_finals(loop, [final], m)
        out = out.reshape(*batch, T, *heads, V)
        lead = len(batch) + 1
        order = [*layout.heads, layout.value]
        out = out.permute(*range(lead), *(lead + order.index(a) for a in layout.out))
        return out.flip(len(batch)) if loop.reverse else out

    def linear_diagonal(self, cell, h0_rows, dummy, params, n_rows, T) -> torch.Tensor:
        """h_t = a_t ⊙ h_{t-1} + b_t with a and b read off the affine step: b = f(0), a = f(1) − f(0)."""
        from ncd.backends.triton.diagonal import diag_scan

        zeros = h0_rows.new_zeros(n_rows * T, h0_rows.shape[-1])
        b = cell(zeros, dummy, *params)
        a = cell(zeros + 1, dummy, *params) - b
        states, _ = diag_scan(a.reshape(n_rows, T, -1).contiguous(), b.reshape(n_rows, T, -1).contiguous(),
                              h0_rows, backend=kernel_backend("scan", b.device, b.dtype))
        return states

    def time_invariant(self, cell, h0_rows, dummy, params, n_rows, T) -> torch.Tensor:
        """h_t = A h_{t-1} + b_t with A the same at every step: h = K ∗ b + K_{t+1} h0 with the
        kernel K_i = Aⁱ, a causal convolution over T computed by FFT.

        A is read off the step itself: f(e_j) − f(0) is column j at any step (the b_t cancel),
        so one evaluation with row (b, t) set to e_t yields T columns at once.
        """
        N = h0_rows.shape[-1]
        zeros = h0_rows.new_zeros(n_rows, T, N)
        b = cell(zeros.reshape(n_rows * T, N), dummy, *params).reshape(n_rows, T, N)
        columns = []
        for start in range(0, N, T):
            probe = zeros.clone()
            count = min(T, N - start)
            probe[:, torch.arange(count), start + torch.arange(count)] = 1
            out = cell(probe.reshape(n_rows * T, N), dummy, *params).reshape(n_rows, T, N) - b
            columns.append(out[:, :count])
        A = torch.cat(columns, dim=1).transpose(1, 2)  # [rows, N, N]: column j = A e_j
        powers = torch.eye(N, dtype=A.dtype, device=A.device).expand(n_rows, 1, N, N)
        while powers.shape[1] < T + 1:  # A^0 .. A^(2k-1) from A^0 .. A^(k-1) by one batched product
            last = torch.linalg.matrix_power(A, powers.shape[1]).unsqueeze(1)
            powers = torch.cat([powers, last @ powers], dim=1)
        kernel = powers[:, : T + 1]
        size = 2 * T
        acc = torch.float64 if b.dtype == torch.float64 else torch.float32
        kf = torch.fft.rfft(kernel[:, :T].to(acc), n=size, dim=1)
        bf = torch.fft.rfft(b.to(acc), n=size, dim=1)
        conv = torch.fft.irfft((kf @ bf.unsqueeze(-1)).squeeze(-1), n=size, dim=1)[:, :T]
        from_h0 = (kernel[:, 1:] @ h0_rows.unsqueeze(1).unsqueeze(-1)).squeeze(-1)
        return (conv + from_h0.to(acc)).to(b.dtype)

    def batch_shape(self, env, m, h0, captures, attrs, T) -> tuple[int, ...]:
        """The broadcast of every lifted shape the step sees: probe one step's shapes cheaply."""
        shapes = []
        for (ref, lifted, core), value in zip(self.loop.captures, captures):
            if lifted and isinstance(value, torch.Tensor):
                shapes.append(tuple(value.shape[: value.dim() - core]))
        for h, size in zip(h0, self.sizes):
            shapes.append(tuple(h.shape[: h.dim() - len(size)]))
        return tuple(torch.broadcast_shapes(*shapes)) if shapes else ()


class _StepReads(Gather):
    """Every read of a value in an expression as (id, dim): dim is what ``x[t]`` selects for a
    read that is the scan's ``x[t]``, None for any other read."""

    def __init__(self, step: str) -> None:
        self.step = step  # the loop index's name

    def ref(self, e: Ref) -> list:
        return [(e.id, None)]

    def call(self, e: Call, fn, args, kwargs) -> list:
        if (e.fn == "rt.step_slice" and isinstance(e.args[0], Ref) and isinstance(e.args[1], Lit)
                and e.args[2] == Ref(self.step)):
            return [(e.args[0].id, e.args[1].value), *(x for a in args[1:] for x in a)]
        return super().call(e, fn, args, kwargs)


def _step_dims(loop: Loop) -> list[int | None] | None:
    """For each captured tensor of a parallel scan, the dim ``x[t]`` selects when every read of it
    in the step is that one ``x[t]`` (None: never read as ``x[t]``); None if a capture is read
    both as ``x[t]`` and otherwise, or as ``x[t]`` along two dims (then it cannot be cut into
    windows of steps)."""
    reads: dict[str, set[int | None]] = {}
    for expr in [*_exprs(loop.body), *loop.results]:
        for ref, dim in fold(expr, _StepReads(loop.index or "")):
            reads.setdefault(ref, set()).add(dim)
    dims: list[int | None] = []
    for ref, _, _ in loop.captures:
        seen = reads.get(ref, {None})
        if len(seen) > 1:
            return None
        dims.append(next(iter(seen)))
    return dims


class _ReadProxy:
    """Looks like the module to the body, but serves parameter reads from the solver's arguments
    (so their gradients come back through the adjoint), and sub-blocks with weights as
    ``_Functional`` calls on theirs."""

    def __init__(self, module: nn.Module, overrides: dict[str, torch.Tensor],
                 modules: dict[str, dict[str, torch.Tensor]] | None = None) -> None:
        self._module = module
        self._overrides = overrides
        self._modules = modules or {}

    def __getattr__(self, name: str) -> Any:
        overrides = self.__dict__["_overrides"]
        if name in overrides:
            return overrides[name]
        module = getattr(self.__dict__["_module"], name)
        weights = self.__dict__["_modules"].get(name)
        return module if weights is None else _Functional(module, weights)


class _Functional:
    """A sub-block called on given weights: ``torch.func.functional_call``, so the solver's
    tensors (not the module's parameters) are what the step differentiates. A repeated
    instance (an ``nn.ModuleList`` that ``rt.chain`` iterates) yields one per layer."""

    def __init__(self, module: nn.Module, weights: dict[str, torch.Tensor]) -> None:
        self.module, self.weights = module, weights

    def __call__(self, *args: Any) -> Any:
        return torch.func.functional_call(self.module, self.weights, args)

    def __iter__(self):
        for name, child in self.module.named_children():
            prefix = f"{name}."
            yield _Functional(child, {k[len(prefix):]: v for k, v in self.weights.items() if k.startswith(prefix)})

    def __len__(self) -> int:
        return len(self.module)

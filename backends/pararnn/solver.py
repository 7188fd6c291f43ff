"""ParaRNN-style Newton solve of a nonlinear recurrence h_t = f(h_{t-1}, x_t), parallel over T.

The whole sequence is one system of equations F_t(h) = h_t - f(h_{t-1}, x_t) = 0 (h_{-1} = h0).
Its Jacobian is block bidiagonal (identity on the diagonal, -J_t below, J_t = ∂f/∂h at
(h_{t-1}, x_t)), so each Newton step h <- h - δ solves the *linear* recurrence

    δ_t = J_t δ_{t-1} + r_t,      δ_{-1} = 0,      r_t = h_t - f(h_{t-1}, x_t),

which is a parallel scan (`scan.linear_scan`). Because the system is causal, step i makes at
least h_0..h_{i-1} exact; on contractive cells convergence is quadratic and takes a handful of
steps. The cell only has to work on a batch of rows: every evaluation flattens [B, T] into
B·T rows, which is what "the cell is vectorised over time" means here.

Backward is the adjoint, not autograd through the iterations (no graph outlives one Newton
step's Jacobian; the forward keeps only the states and the converged J): with g_t = ∂L/∂h_t,

    λ_t = g_t + J_{t+1}ᵀ λ_{t+1},  λ_{T-1} = g_{T-1}         (one reverse scan)

and one VJP of f over all rows (h_{t-1}, x_t) with cotangents λ_t gives ∂L/∂x_t, ∂L/∂params
(summed over t) and ∂L/∂h0 (the h_{-1} row).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Callable, Literal, Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ncd.backends.pararnn.chunks import (Chunk, ParamGrads, StepAxis, check_axes, window_params,
                                         window_steps, windows)
from ncd.backends.pararnn.jacobian import JacobianKind, value_and_jacobian_deferred
from ncd.backends.pararnn.naive import acc_dtype, sequential_loop
from ncd.backends.pararnn.scan import InnerScan, linear_scan

Cell = Callable[..., Tensor]
JacFn = Callable[..., "tuple[Tensor, Tensor]"]
OnFailure = Literal["sequential", "raise"]


class NewtonFallbackWarning(RuntimeWarning):
    """Newton failed (diverged, non-finite or not converged); the sequential loop was used."""


class NewtonFailedError(RuntimeError):
    """Newton failed and the solver was built with on_failure="raise"."""


def default_tol(dtype: torch.dtype) -> float:
    """Max-abs residual tolerance, relative to max(1, max|h|): a little above the floor that
    rounding a cell evaluation in `dtype` leaves (bf16 keeps 8 significant bits)."""
    return {
        torch.float64: 1e-12,
        torch.float32: 1e-6,
        torch.float16: 4e-3,
        torch.bfloat16: 2e-2,
    }.get(dtype, 1e-6)


@dataclass
class SolverStats:
    """What the solver did, readable by the user: one object per solver, explicit reset()."""

    calls: int = 0
    fallbacks: int = 0
    iterations_total: int = 0
    last_iterations: int = 0
    last_residual: float = math.nan
    last_converged: bool = False
    last_fallback_reason: str | None = None

    def reset(self) -> None:
        for k, v in asdict(SolverStats()).items():
            setattr(self, k, v)

    def as_dict(self) -> dict:
        return asdict(self)


def _scan_layout(J: Tensor, r: Tensor, kind: JacobianKind) -> tuple[Tensor, Tensor, str]:
    """View J [B, T, ...] and r [B, T, N] in the shapes `linear_scan` wants."""
    if kind == "diag":
        return J, r, "diag"
    nb, k = J.shape[2], J.shape[3]
    return J, r.reshape(*r.shape[:2], nb, k), "block"


class NewtonSolver:
    """Parallel-in-time Newton solver for h_t = cell(h_{t-1}, x_t, *params).

    jacobian: "diag" | "block" | "dense" — the structure of ∂cell/∂h. Only choose "diag" or
      "block" when it is proven (see `jacobian.py`); "block" uses contiguous blocks of `block`
      state elements.
    tol: max-abs residual tolerance relative to max(1, max|h|); default per dtype (`default_tol`).
    max_iter: Newton steps before giving up (then: fallback).
    divergence: give up when the residual exceeds this multiple of the initial one.
    on_failure: "sequential" (warn, count, run the sequential loop) or "raise".
    inner_scan: "auto" (Triton on CUDA, PyTorch parallel scan elsewhere), "torch", "triton",
      "naive".
    stats: a `SolverStats` to update (a fresh one by default), read it as `solver.stats`.
    jac_fn: optional closed-form replacement for the JVPs, (h [M, N], x [M, ...], *params) ->
      (f [M, N], J) with J laid out as `jacobian.value_and_jacobian` returns it for this
      `jacobian`/`block` (dense: [M, 1, N, N]). A compiler can emit one from the IR. Without it,
      "diag"/"block" take J by reverse mode on one graph of the cell (k backward passes, paid
      only when a Newton step is taken; ~2.5 cell evaluations for "diag"), and the converged
      J is kept for the adjoint when a backward will follow and the solve is one window.
    fuse: evaluate each Newton step's shift, cell, Jacobian, residual and norms as one
      `torch.compile`d graph. Eagerly that is ~20 separate passes over the B·T·N state sequence
      per step, which is where the time goes on a GPU; fused, a few. The first call compiles
      (seconds); solvers of the same configuration share the compiled code, but each new
      shape recompiles (static shapes: the cell's broadcasts defeat symbolic sizes), and past
      torch._dynamo's cache limit (8 by default) further shapes run unfused, with its warning:
      bucket or pad sequence lengths. Results equal the eager path to rounding.
    chunk: steps per evaluation of the cell (eager path): "auto" (on a CPU, windows of
      `chunks.CHUNK_ELEMENTS` state elements; elsewhere all T), "all", or a number. Evaluated
      for all B·T rows at once, the cell's intermediates and its Jacobian's graph hold ~15
      copies of the state sequence; a window at a time bounds them by the window, and the
      solver keeps the iterate, r and J (the inner and the adjoint scans carry their state
      from window to window). Results equal the whole-sequence solve to rounding.
    """

    def __init__(
        self,
        jacobian: JacobianKind = "diag",
        block: int = 1,
        *,
        tol: float | None = None,
        max_iter: int = 32,
        divergence: float = 1e4,
        on_failure: OnFailure = "sequential",
        inner_scan: InnerScan = "auto",
        stats: SolverStats | None = None,
        jac_fn: JacFn | None = None,
        fuse: bool = False,
        chunk: Chunk = "auto",
    ) -> None:
        window_steps(chunk, 1, 1, 1, torch.device("cpu"))  # rejects a bad value now
        if jacobian not in ("diag", "block", "dense"):
            raise ValueError(f"jacobian must be 'diag', 'block' or 'dense', got {jacobian!r}")
        if jacobian == "block" and block < 1:
            raise ValueError(f"block size must be >= 1, got {block}")
        if on_failure not in ("sequential", "raise"):
            raise ValueError(f"on_failure must be 'sequential' or 'raise', got {on_failure!r}")
        if max_iter < 0:
            raise ValueError(f"max_iter must be >= 0, got {max_iter}")
        self.jacobian, self.block = jacobian, block
        self.tol, self.max_iter, self.divergence = tol, max_iter, divergence
        self.on_failure, self.inner_scan = on_failure, inner_scan
        self.stats = stats if stats is not None else SolverStats()
        self.jac_fn = jac_fn
        self.fuse = fuse
        self.chunk = chunk
        self._fused: dict[str, Callable[..., Any]] = {}

    # ------------------------------------------------------------------ public
    def __call__(self, cell: Cell, h0: Tensor, xs: Tensor, *params: Tensor) -> Tensor:
        """All states h [B, T, N] from h0 [B, N] and xs [B, T, ...]; differentiable w.r.t.
        h0, xs and params by the adjoint method (first order only). A cell that reads per-step
        values from its parameters says where each holds one entry per step in its attribute
        `step_axes` (a `chunks.StepAxis` or None per parameter), so a window's evaluation
        reads its own."""
        step_axes = getattr(cell, "step_axes", None)
        self._check(h0, xs, params, step_axes)
        grad = torch.is_grad_enabled() and any(getattr(t, "requires_grad", False) for t in (h0, xs, *params))
        # with a backward to come, the converged J of a one-window solve is kept for the adjoint
        return _NewtonScanFn.apply(self, cell, grad, step_axes, h0, xs, *params)

    def solve(self, cell: Cell, h0: Tensor, xs: Tensor, *params: Tensor) -> Tensor:
        """Forward only, no autograd graph."""
        step_axes = getattr(cell, "step_axes", None)
        self._check(h0, xs, params, step_axes)
        with torch.no_grad():
            return self._forward(cell, h0, xs, params, step_axes=step_axes)[0]

    # ---------------------------------------------------------------- internals
    def _check(self, h0: Tensor, xs: Tensor, params: Sequence[Tensor] = (),
               step_axes: Sequence[StepAxis | None] | None = None) -> None:
        if h0.dim() != 2 or xs.dim() < 3 or h0.shape[0] != xs.shape[0]:
            raise ValueError(
                f"newton_scan wants h0 [B, N] and xs [B, T, E]; got h0 {tuple(h0.shape)}, "
                f"xs {tuple(xs.shape)}"
            )
        if xs.shape[1] == 0:
            raise ValueError("newton_scan over T = 0 steps")
        if self.jacobian == "block" and h0.shape[1] % self.block:
            raise ValueError(
                f"block Jacobian with block={self.block} needs N divisible by it; N={h0.shape[1]}"
            )
        check_axes(params, step_axes, xs.shape[1])

    def _windows(self, B: int, T: int, N: int, device: torch.device) -> list[slice]:
        """The windows of steps one evaluation covers (fused: one, the compiled graph takes all T)."""
        return windows(T, T if self.fuse else window_steps(self.chunk, B, T, N, device))

    @staticmethod
    def _shifted(h: Tensor, h0: Tensor, w: slice) -> Tensor:
        """h_{t-1} for the steps t of window w: [B, steps, N] (h0: [B, 1, N] before step 0)."""
        first = h0 if w.start == 0 else h[:, w.start - 1:w.start]
        return torch.cat([first, h[:, w.start:w.stop - 1]], dim=1)

    def _eval(self, cell: Cell, h_prev: Tensor, xs: Tensor, params: Sequence[Tensor],
              dtype: torch.dtype) -> tuple[Tensor, Callable[[], Tensor]]:
        """f and a thunk for J at rows (h_{t-1}, x_t) for all t: h_prev [B, T, N] -> f [B, T, N],
        J [B, T, ...]. Eagerly J is reverse mode on the cell's graph, paid only when asked for;
        fused (traced by torch.compile) it is `torch.func.jvp`."""
        B, T, N = h_prev.shape
        k = N if self.jacobian == "dense" else self.block
        rows_h, rows_x = h_prev.reshape(B * T, N).to(dtype), xs.reshape(B * T, *xs.shape[2:])
        if self.jac_fn is not None:
            fh, J = self.jac_fn(rows_h, rows_x, *params)
            jac: Callable[[], Tensor] = lambda: J
        else:
            fh, jac = value_and_jacobian_deferred(cell, rows_h, rows_x, params, self.jacobian, k,
                                                  method="jvp" if self.fuse else "vjp")
        if fh.shape != (B * T, N):
            raise ValueError(
                f"cell returned shape {tuple(fh.shape)} for {B * T} rows of state size {N}; "
                f"it must map h [M, {N}] and x [M, ...] to [M, {N}]"
            )
        return fh.view(B, T, N), lambda: (lambda J: J.reshape(B, T, *J.shape[1:]))(jac())

    def _system(self, cell: Cell, h: Tensor, delta: Tensor | None, h0a: Tensor, xs: Tensor,
                params: Sequence[Tensor], dtype: torch.dtype
                ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The part of a Newton step that is one pass over the sequence (the fused path traces
        it whole): the previous step's update h - δ (none before the first), then J and the
        residual r = h - f(h_prev) at the new iterate, and [max|r|, max|f|] for the stopping
        test. Returns (h, J, r, norms)."""
        if delta is not None:
            h = h - delta
        h_prev = torch.cat([h0a, h[:, :-1]], dim=1)
        fh, jac = self._eval(cell, h_prev, xs, params, dtype)
        r = h - fh.to(h.dtype)
        return h, jac().to(h.dtype), r, torch.stack([r.abs().amax(), fh.abs().amax().to(r.dtype)])

    def _residual(self, cell: Cell, h: Tensor, h0a: Tensor, xs: Tensor, wins: Sequence[slice],
                  part: Callable[[slice], tuple[Tensor, ...]], dtype: torch.dtype, tol: float,
                  need_all: bool) -> tuple[Tensor, Tensor | None, float, float, list[slice]]:
        """Eagerly, window by window: r = h - f(h_prev) at the iterate h, J, and max|r|, max|f|
        (one host sync per window). A window's J is taken while its graph is alive, unless every
        window so far already meets the tolerance (then the iterate may have converged and J
        is not needed); those windows come back as `missing`, for `_fill_jacobian` when a step
        is taken after all. With one window this is the deferred J of a whole-sequence solve.
        need_all: every window's J (the adjoint keeps it). Stops at a non-finite norm."""
        whole = len(wins) == 1
        r = torch.empty(0) if whole else torch.empty_like(h)
        J: Tensor | None = None
        res = fmax = 0.0
        missing: list[slice] = []
        for w in wins:
            fh, jac = self._eval(cell, self._shifted(h, h0a, w), xs[:, w], part(w), dtype)
            r_w = h[:, w] - fh.to(h.dtype)  # not in place: fh may be saved in the graph J comes from
            res_w, fmax_w = torch.stack([r_w.abs().amax(), fh.abs().amax().to(r_w.dtype)]).tolist()
            del fh
            if whole:
                r = r_w
            else:
                r[:, w] = r_w
            del r_w
            if not (math.isfinite(res_w) and math.isfinite(fmax_w)):
                return r, None, math.nan, fmax_w, []
            res, fmax = max(res, res_w), max(fmax, fmax_w)
            if need_all or res > tol * max(1.0, fmax):
                J = _put(J, jac().to(h.dtype), w, h.shape[1])
            else:
                missing.append(w)
            del jac
        return r, J, res, fmax, missing

    def _fill_jacobian(self, cell: Cell, h: Tensor, h0a: Tensor, xs: Tensor, missing: Sequence[slice],
                       part: Callable[[slice], tuple[Tensor, ...]], dtype: torch.dtype,
                       J: Tensor | None) -> Tensor:
        """J in the windows `_residual` left out, at the same iterate."""
        for w in missing:
            J = _put(J, self._jacobian_at(cell, self._shifted(h, h0a, w), xs[:, w], part(w), dtype).to(h.dtype),
                     w, h.shape[1])
        assert J is not None
        return J

    def _update(self, h: Tensor, J: Tensor, r: Tensor, wins: Sequence[slice]) -> None:
        """h <- h - δ in place, δ_t = J_t δ_{t-1} + r_t by the linear scan window by window (the
        scan's state carried across), so δ never exists for more than one window."""
        B, _, N = h.shape
        carry = None
        for w in wins:
            a, b, kind = _scan_layout(J[:, w], r[:, w], self.jacobian)
            d = linear_scan(a, b, kind, initial=carry, backend=self.inner_scan)
            carry = d[:, -1]
            h[:, w] -= d.reshape(B, w.stop - w.start, N)

    def _jacobian_at(self, cell: Cell, h_prev: Tensor, xs: Tensor, params: Sequence[Tensor],
                     dtype: torch.dtype) -> Tensor:
        """J_t at rows (h_{t-1}, x_t)."""
        return self._eval(cell, h_prev, xs, params, dtype)[1]()

    def _reverse_coefficients(self, cell: Cell, h_prev: Tensor, xs: Tensor, params: Sequence[Tensor],
                              dtype: torch.dtype, J_next: Tensor | None) -> tuple[Tensor, Tensor]:
        """The adjoint scan's coefficients over a window, from J recomputed at the converged
        states (the forward did not keep it), and J at the window's first step (the previous
        window's `J_next`)."""
        J = self._jacobian_at(cell, h_prev, xs, params, dtype)
        return self._adjoint_coefficients(J, J_next, dtype), J[:, :1].clone()

    def _adjoint_coefficients(self, J: Tensor, J_next: Tensor | None, dtype: torch.dtype) -> Tensor:
        """a_t = J_{t+1}^T over a window from J_t = ∂f/∂h at (h_{t-1}, x_t) on the converged
        states; J_next: J at the first step after the window (None after the last step:
        nothing flows back from beyond the sequence)."""
        J = J.to(acc_dtype(dtype))
        nxt = torch.zeros_like(J[:, :1]) if J_next is None else J_next.to(J.dtype)
        a = torch.cat([J[:, 1:], nxt], dim=1)
        return a if self.jacobian == "diag" else a.transpose(-1, -2)

    @staticmethod
    def _cell_vjp(cell: Cell, args: tuple[Tensor, ...], slots: tuple[int, ...],
                  cotangent: Tensor) -> tuple[Tensor, ...]:
        """One VJP of the cell over all rows: the gradients of the arguments at `slots`
        (h_prev, x, params) for the cotangent λ; the others are held constant (traceable by
        torch.compile: `torch.func.vjp`)."""
        def partial(*diff: Tensor) -> Tensor:
            full = list(args)
            for i, d in zip(slots, diff):
                full[i] = d
            return cell(*full)

        out, pull = torch.func.vjp(partial, *(args[i] for i in slots))
        return pull(cotangent.to(out.dtype))

    @staticmethod
    def _cell_vjp_eager(cell: Cell, args: tuple[Tensor, ...], slots: tuple[int, ...],
                        cotangent: Tensor) -> tuple[Tensor, ...]:
        """`_cell_vjp` by eager autograd (C++ engine, no functorch layers): the fast one."""
        with torch.enable_grad():
            full = [a.detach().requires_grad_(True) if i in slots else a for i, a in enumerate(args)]
            out = cell(*full)
            wrt = [full[i] for i in slots]
            if not out.requires_grad:
                return tuple(torch.zeros_like(w) for w in wrt)
            grads = torch.autograd.grad(out, wrt, cotangent.to(out.dtype), allow_unused=True)
        return tuple(torch.zeros_like(w) if g is None else g for g, w in zip(grads, wrt))

    def _compiled(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """`fn` (a method of this solver) through torch.compile, built once per solver; the
        cell, an argument, is inlined into the graph."""
        name = fn.__name__
        if name not in self._fused:
            self._fused[name] = torch.compile(fn, dynamic=False)
        return self._fused[name]

    def _initial_guess(self, cell: Cell, h0: Tensor, xs: Tensor, wins: Sequence[slice],
                       part: Callable[[slice], tuple[Tensor, ...]]) -> Tensor:
        """h_t = f(h0, x_t), exact at t = 0, window by window into the iterate's buffer (the
        accumulation dtype; updated in place from here on)."""
        B, T, N = xs.shape[0], xs.shape[1], h0.shape[1]
        h = torch.empty(B, T, N, dtype=acc_dtype(h0.dtype), device=h0.device)
        for w in wins:
            n = w.stop - w.start
            rows = cell(h0.unsqueeze(1).expand(B, n, N).reshape(B * n, N),
                        xs[:, w].reshape(B * n, *xs.shape[2:]), *part(w))
            if rows.shape != (B * n, N):
                raise ValueError(
                    f"cell returned shape {tuple(rows.shape)} for {B * n} rows of state size {N}; "
                    f"it must map h [M, {N}] and x [M, ...] to [M, {N}]"
                )
            h[:, w] = rows.reshape(B, n, N)
        return h

    def _forward(self, cell: Cell, h0: Tensor, xs: Tensor, params: Sequence[Tensor],
                 keep_jacobian: bool = False, step_axes: Sequence[StepAxis | None] | None = None
                 ) -> tuple[Tensor, Tensor | None]:
        """The states h [B, T, N] (h0's dtype) and, when `keep_jacobian`, the solve is one
        window and Newton converged with no rounding of the iterate, J at the converged states
        (what the adjoint needs: kept, it is not recomputed). The iteration builds no autograd graph that outlives one
        window's Jacobian; what lives across a step is the iterate, r and J (three copies of the
        state sequence; `chunks.py`)."""
        dtype, acc = h0.dtype, acc_dtype(h0.dtype)
        B, T, N = xs.shape[0], xs.shape[1], h0.shape[1]
        tol = self.tol if self.tol is not None else default_tol(dtype)
        st = self.stats
        st.calls += 1
        wins = self._windows(B, T, N, h0.device)

        def part(w: slice) -> tuple[Tensor, ...]:
            return window_params(params, step_axes, w, T)

        h = self._initial_guess(cell, h0, xs, wins, part)
        h0a = h0.to(acc).unsqueeze(1)
        res0, reason, it = None, None, 0
        J_kept: Tensor | None = None
        delta = None
        # fused: the adjoint's own graph. Windowed: not kept, so the backward's peak is the
        # states, the inputs and their gradients (one copy of the sequence less); the adjoint
        # recomputes J one window at a time, and the last residual pass skips the J of
        # converged windows, so the time is about the same.
        keep = keep_jacobian and dtype == acc and not self.fuse and len(wins) == 1
        while True:
            missing: list[slice] = []
            if self.fuse:
                h, J, r, norms = self._compiled(self._system)(cell, h, delta, h0a, xs, params, dtype)
                res, fmax = norms.tolist()        # the one host sync of a Newton step
            else:
                r, J, res, fmax, missing = self._residual(cell, h, h0a, xs, wins, part, dtype, tol, keep)
            scale = max(1.0, fmax) if math.isfinite(res) else 1.0
            st.last_residual = res
            if not math.isfinite(res) or not math.isfinite(scale):
                reason = f"non-finite residual after {it} Newton steps"
                break
            if res <= tol * scale:
                if keep:
                    J_kept = J
                break
            if res0 is None:
                res0 = res
            elif res > self.divergence * res0:
                reason = f"diverged: residual {res:.3g} > {self.divergence:g} x initial {res0:.3g}"
                break
            if it >= self.max_iter:
                reason = f"not converged in {self.max_iter} Newton steps (residual {res:.3g}, tol {tol * scale:.3g})"
                break
            if missing:
                J = self._fill_jacobian(cell, h, h0a, xs, missing, part, dtype, J)
            assert J is not None
            if self.fuse:
                a, b, kind = _scan_layout(J, r, self.jacobian)
                delta = linear_scan(a, b, kind, backend=self.inner_scan).reshape(B, T, N)
                del a, b
            else:
                self._update(h, J, r, wins)
            del J, r
            it += 1
        st.last_iterations = it
        st.iterations_total += it
        st.last_converged = reason is None
        st.last_fallback_reason = reason
        if reason is None:
            return h.to(dtype), J_kept
        if self.on_failure == "raise":
            raise NewtonFailedError(f"newton_scan: {reason} (B={B}, T={T}, N={N})")
        st.fallbacks += 1
        warnings.warn(
            f"newton_scan: {reason} (B={B}, T={T}, N={N}, jacobian={self.jacobian!r}); "
            "falling back to the sequential loop",
            NewtonFallbackWarning,
            stacklevel=2,
        )
        return _sequential(cell, h0, xs, params, step_axes).to(dtype), None

    def _backward(self, cell: Cell, h0: Tensor, xs: Tensor, h: Tensor, params: Sequence[Tensor],
                  g: Tensor, needs: Sequence[bool], J: Tensor | None = None,
                  step_axes: Sequence[StepAxis | None] | None = None) -> list[Tensor | None]:
        """Adjoint, window by window from the last: λ over the window by one reverse scan (its
        state carried from the window after), then one VJP of the cell over the window's rows
        with cotangent λ. needs = (h0, xs, *params); J: the forward's Jacobian at the converged
        states, if it kept it (else each window's is recomputed)."""
        acc = acc_dtype(h0.dtype)
        B, T, N = h.shape
        wins = self._windows(B, T, N, h.device)
        h0c = h0.unsqueeze(1)
        wanted = tuple(i for i, n in enumerate(needs) if n)
        pullback = self._compiled(self._cell_vjp) if self.fuse else self._cell_vjp_eager
        coefficients = self._compiled(self._reverse_coefficients) if self.fuse else self._reverse_coefficients
        param_grads = ParamGrads(params, step_axes, T)
        g_h0: Tensor | None = None
        g_xs: Tensor | None = None
        lam_next: Tensor | None = None  # λ at the first step after the window
        J_next: Tensor | None = None  # J there
        for w in reversed(wins):
            n = w.stop - w.start
            h_prev = self._shifted(h, h0c, w).detach()
            part = window_params(params, step_axes, w, T)
            with torch.no_grad():
                if J is not None:
                    a = self._adjoint_coefficients(J[:, w], J_next, h0.dtype)
                    J_next = J[:, w.start:w.start + 1]
                else:
                    a, J_next = coefficients(cell, h_prev, xs[:, w], part, h0.dtype, J_next)
                _, gb, kind = _scan_layout(a, g[:, w].to(acc), self.jacobian)
                lam = linear_scan(a, gb, kind, reverse=True, initial=lam_next, backend=self.inner_scan)
                lam_next = lam[:, 0]
                del a, gb
            slots = tuple(i for i in wanted if i != 0 or w.start == 0)  # h0 feeds the first step only
            if not slots:
                continue
            args = (h_prev.reshape(B * n, N), xs[:, w].detach().reshape(B * n, *xs.shape[2:]),
                    *(p.detach() for p in part))
            grads = pullback(cell, args, slots, lam.reshape(B * n, N))
            del lam
            for i, gr in zip(slots, grads):
                if i == 0:
                    g_h0 = gr.view(B, n, N)[:, 0]
                elif i == 1:
                    if g_xs is None:
                        g_xs = gr.view(xs.shape) if n == T else torch.empty_like(xs)
                    if n < T:
                        g_xs[:, w] = gr.view(B, n, *xs.shape[2:])
                else:
                    param_grads.add(i - 2, w, gr)
        result: list[Tensor | None] = [None] * (2 + len(params))
        result[0] = g_h0 if needs[0] else None
        result[1] = g_xs if needs[1] else None
        for i in range(len(params)):
            if needs[2 + i]:
                result[2 + i] = param_grads.get(i)
        return result


def _put(buf: Tensor | None, value: Tensor, w: slice, T: int) -> Tensor:
    """`value` [B, steps, ...] as window w of a [B, T, ...] buffer (allocated on first use; a
    window covering all T is the buffer itself)."""
    if w.start == 0 and w.stop == T:
        return value
    if buf is None:
        buf = value.new_empty((value.shape[0], T, *value.shape[2:]))
    buf[:, w] = value
    return buf


def _sequential(cell: Cell, h0: Tensor, xs: Tensor, params: Sequence[Tensor],
                step_axes: Sequence[StepAxis | None] | None) -> Tensor:
    """The fallback: the sequential loop; a cell with per-step parameters gets each step's."""
    if step_axes is None or all(ax is None for ax in step_axes):
        return sequential_loop(cell, h0, xs, *params)
    T = xs.shape[1]
    h, out = h0, []
    for t in range(T):
        h = cell(h, xs[:, t], *window_params(params, step_axes, slice(t, t + 1), T))
        out.append(h)
    return torch.stack(out, dim=1)


class _NewtonScanFn(torch.autograd.Function):
    """Forward: Newton (or the fallback). Backward: the adjoint at the converged states."""

    @staticmethod
    def forward(ctx, solver: NewtonSolver, cell: Cell, keep_jacobian: bool,
                step_axes: Sequence[StepAxis | None] | None, h0: Tensor, xs: Tensor, *params: Tensor):
        h, J = solver._forward(cell, h0, xs, params, keep_jacobian, step_axes)
        ctx.solver, ctx.cell, ctx.step_axes = solver, cell, step_axes
        ctx.save_for_backward(h0, xs, h, J, *params)
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        h0, xs, h, J, *params = ctx.saved_tensors
        needs = ctx.needs_input_grad[4:]
        grads = ctx.solver._backward(ctx.cell, h0, xs, h, params, g, needs, J, ctx.step_axes)
        return (None, None, None, None, *grads)


def newton_scan(
    cell: Cell,
    h0: Tensor,
    xs: Tensor,
    *params: Tensor,
    jacobian: JacobianKind = "diag",
    block: int = 1,
    tol: float | None = None,
    max_iter: int = 32,
    divergence: float = 1e4,
    on_failure: OnFailure = "sequential",
    inner_scan: InnerScan = "auto",
    stats: SolverStats | None = None,
    jac_fn: JacFn | None = None,
    fuse: bool = False,
    chunk: Chunk = "auto",
) -> Tensor:
    """Solve h_t = cell(h_{t-1}, x_t, *params) for all t in parallel over T by Newton's method.

    cell: (h [M, N], x [M, ...], *params) -> [M, N], a pure function of its arguments applied to
      M rows at once, each row independent (B·T rows, or B·steps for a window of steps: see
      `chunk`; params are tensors; close over anything else).
    h0: [B, N] (any value: segments of a long sequence chain by passing the last state on).
    xs: [B, T, ...]. Returns h: [B, T, N] in h0's dtype (iterates kept in float32 or float64).
    See `NewtonSolver` for the options; pass `stats` (a `SolverStats`) to read what the solve
    did — there is no module-level default to update.
    Differentiable w.r.t. h0, xs and params (adjoint backward).
    """
    solver = NewtonSolver(
        jacobian, block, tol=tol, max_iter=max_iter, divergence=divergence,
        on_failure=on_failure, inner_scan=inner_scan,
        stats=stats, jac_fn=jac_fn, fuse=fuse, chunk=chunk,
    )
    return solver(cell, h0, xs, *params)

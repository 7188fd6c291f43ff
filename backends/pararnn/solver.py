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
      J is kept for the adjoint when a backward will follow.
    fuse: evaluate each Newton step's shift, cell, Jacobian, residual and norms as one
      `torch.compile`d graph. Eagerly that is ~20 separate passes over the B·T·N state sequence
      per step, which is where the time goes on a GPU; fused, a few. The first call compiles
      (seconds); solvers of the same configuration share the compiled code, but each new
      shape recompiles (static shapes: the cell's broadcasts defeat symbolic sizes), and past
      torch._dynamo's cache limit (8 by default) further shapes run unfused, with its warning:
      bucket or pad sequence lengths. Results equal the eager path to rounding.
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
    ) -> None:
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
        self._fused: dict[str, Callable[..., Any]] = {}

    # ------------------------------------------------------------------ public
    def __call__(self, cell: Cell, h0: Tensor, xs: Tensor, *params: Tensor) -> Tensor:
        """All states h [B, T, N] from h0 [B, N] and xs [B, T, ...]; differentiable w.r.t.
        h0, xs and params by the adjoint method (first order only)."""
        self._check(h0, xs)
        grad = torch.is_grad_enabled() and any(getattr(t, "requires_grad", False) for t in (h0, xs, *params))
        # with a backward to come, the converged J is kept for the adjoint (one sequence of J)
        return _NewtonScanFn.apply(self, cell, grad, h0, xs, *params)

    def solve(self, cell: Cell, h0: Tensor, xs: Tensor, *params: Tensor) -> Tensor:
        """Forward only, no autograd graph."""
        self._check(h0, xs)
        with torch.no_grad():
            return self._forward(cell, h0, xs, params)[0]

    # ---------------------------------------------------------------- internals
    def _check(self, h0: Tensor, xs: Tensor) -> None:
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

    def _system_deferred(self, cell: Cell, h: Tensor, h0a: Tensor, xs: Tensor, params: Sequence[Tensor],
                         dtype: torch.dtype) -> tuple[Tensor, Callable[[], Tensor], Tensor]:
        """`_system` eagerly, at the iterate h: (r, a thunk for J, norms). J is only computed
        when the step is taken (or kept for the adjoint), not on the converged iterate."""
        h_prev = torch.cat([h0a, h[:, :-1]], dim=1)
        fh, jac = self._eval(cell, h_prev, xs, params, dtype)
        del h_prev
        fmax = fh.abs().amax().to(h.dtype)
        r = h - fh.to(h.dtype)  # not in place: fh may be saved in the graph J comes from
        return r, lambda: jac().to(h.dtype), torch.stack([r.abs().amax(), fmax])

    def _reverse_coefficients(self, cell: Cell, h_prev: Tensor, xs: Tensor,
                              params: Sequence[Tensor], dtype: torch.dtype) -> Tensor:
        """The adjoint scan's coefficients at the converged states (see `_adjoint_coefficients`)."""
        _, jac = self._eval(cell, h_prev, xs, params, dtype)
        return self._adjoint_coefficients(jac(), dtype)

    def _adjoint_coefficients(self, J: Tensor, dtype: torch.dtype) -> Tensor:
        """a_t = J_{t+1}^T for t < T-1, zero after the last step (nothing flows back from beyond
        the sequence), from J_t = ∂f/∂h at (h_{t-1}, x_t) on the converged states."""
        J = J.to(acc_dtype(dtype))
        nxt = J[:, 1:] if self.jacobian == "diag" else J[:, 1:].transpose(-1, -2)
        return torch.cat([nxt, torch.zeros_like(J[:, :1])], dim=1)

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

    def _forward(self, cell: Cell, h0: Tensor, xs: Tensor, params: Sequence[Tensor],
                 keep_jacobian: bool = False) -> tuple[Tensor, Tensor | None]:
        """The states h [B, T, N] (h0's dtype) and, when `keep_jacobian` and Newton converged
        with no rounding of the iterate, J at the converged states (what the adjoint needs:
        kept, it is not recomputed). The iteration builds no autograd graph that outlives one
        Jacobian: each step's tensors are freed before the next."""
        dtype, acc = h0.dtype, acc_dtype(h0.dtype)
        B, T, N = xs.shape[0], xs.shape[1], h0.shape[1]
        tol = self.tol if self.tol is not None else default_tol(dtype)
        st = self.stats
        st.calls += 1
        # initial guess h_t = f(h0, x_t): exact at t = 0
        xs_rows = xs.reshape(B * T, *xs.shape[2:])
        h = cell(h0.unsqueeze(1).expand(B, T, N).reshape(B * T, N), xs_rows, *params)
        if h.shape != (B * T, N):
            raise ValueError(
                f"cell returned shape {tuple(h.shape)} for {B * T} rows of state size {N}; "
                f"it must map h [M, {N}] and x [M, ...] to [M, {N}]"
            )
        h = h.view(B, T, N).to(acc)
        h0a = h0.to(acc).unsqueeze(1)
        res0, reason, it = None, None, 0
        J_kept: Tensor | None = None
        delta = None
        while True:
            if self.fuse:
                h, J, r, norms = self._compiled(self._system)(cell, h, delta, h0a, xs, params, dtype)
                jac: Callable[[], Tensor] = lambda J=J: J
            else:
                if delta is not None:
                    h = h - delta
                delta = None
                r, jac, norms = self._system_deferred(cell, h, h0a, xs, params, dtype)
            res, fmax = norms.tolist()            # the one host sync of a Newton step
            scale = max(1.0, fmax) if math.isfinite(res) else 1.0
            st.last_residual = res
            if not math.isfinite(res) or not math.isfinite(scale):
                reason = f"non-finite residual after {it} Newton steps"
                break
            if res <= tol * scale:
                if keep_jacobian and dtype == acc and not self.fuse:  # fused: the adjoint's own graph
                    J_kept = jac()
                break
            if res0 is None:
                res0 = res
            elif res > self.divergence * res0:
                reason = f"diverged: residual {res:.3g} > {self.divergence:g} x initial {res0:.3g}"
                break
            if it >= self.max_iter:
                reason = f"not converged in {self.max_iter} Newton steps (residual {res:.3g}, tol {tol * scale:.3g})"
                break
            a, b, kind = _scan_layout(jac(), r, self.jacobian)
            del jac, r
            delta = linear_scan(a, b, kind, backend=self.inner_scan).reshape(B, T, N)
            del a, b
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
        return sequential_loop(cell, h0, xs, *params).to(dtype), None

    def _backward(self, cell: Cell, h0: Tensor, xs: Tensor, h: Tensor, params: Sequence[Tensor],
                  g: Tensor, needs: Sequence[bool], J: Tensor | None = None) -> list[Tensor | None]:
        """Adjoint: one reverse scan for λ, one batched VJP of the cell. needs = (h0, xs, *params);
        J: the forward's Jacobian at the converged states, if it kept it (else recomputed)."""
        dtype, acc = h0.dtype, acc_dtype(h0.dtype)
        B, T, N = h.shape
        h_prev = torch.cat([h0.unsqueeze(1), h[:, :-1]], dim=1)
        with torch.no_grad():
            if J is not None:
                a = self._adjoint_coefficients(J, dtype)
                del J
            elif self.fuse:
                a = self._compiled(self._reverse_coefficients)(cell, h_prev, xs, params, dtype)
            else:
                a = self._reverse_coefficients(cell, h_prev, xs, params, dtype)
            _, gb, kind = _scan_layout(a, g.to(acc), self.jacobian)
            lam = linear_scan(a, gb, kind, reverse=True, backend=self.inner_scan).reshape(B, T, N)
            del a, gb
        args = (h_prev.detach().reshape(B * T, N), xs.detach().reshape(B * T, *xs.shape[2:]),
                *(p.detach() for p in params))
        slots = tuple(i for i, n in enumerate(needs) if n)
        pullback = self._compiled(self._cell_vjp) if self.fuse else self._cell_vjp_eager
        grads = pullback(cell, args, slots, lam.reshape(B * T, N)) if slots else ()
        result: list[Tensor | None] = [None] * (2 + len(params))
        for i, gr in zip(slots, grads):
            if i == 0:
                gr = gr.view(B, T, N)[:, 0]
            elif i == 1:
                gr = gr.view(xs.shape)
            result[i] = gr
        return result


class _NewtonScanFn(torch.autograd.Function):
    """Forward: Newton (or the fallback). Backward: the adjoint at the converged states."""

    @staticmethod
    def forward(ctx, solver: NewtonSolver, cell: Cell, keep_jacobian: bool, h0: Tensor, xs: Tensor,
                *params: Tensor):
        h, J = solver._forward(cell, h0, xs, params, keep_jacobian)
        ctx.solver, ctx.cell = solver, cell
        ctx.save_for_backward(h0, xs, h, J, *params)
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        h0, xs, h, J, *params = ctx.saved_tensors
        needs = ctx.needs_input_grad[3:]
        grads = ctx.solver._backward(ctx.cell, h0, xs, h, params, g, needs, J)
        return (None, None, None, *grads)


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
) -> Tensor:
    """Solve h_t = cell(h_{t-1}, x_t, *params) for all t in parallel over T by Newton's method.

    cell: (h [M, N], x [M, ...], *params) -> [M, N], a pure function of its arguments applied to
      M = B·T rows at once (params are tensors; close over anything else).
    h0: [B, N] (any value: segments of a long sequence chain by passing the last state on).
    xs: [B, T, ...]. Returns h: [B, T, N] in h0's dtype (iterates kept in float32 or float64).
    See `NewtonSolver` for the options; pass `stats` (a `SolverStats`) to read what the solve
    did — there is no module-level default to update.
    Differentiable w.r.t. h0, xs and params (adjoint backward).
    """
    solver = NewtonSolver(
        jacobian, block, tol=tol, max_iter=max_iter, divergence=divergence,
        on_failure=on_failure, inner_scan=inner_scan,
        stats=stats, jac_fn=jac_fn, fuse=fuse,
    )
    return solver(cell, h0, xs, *params)

"""Jacobians ∂f/∂h of a cell, taken from the cell itself by automatic differentiation, and a checker.

    "diag"  : J's diagonal                                                -> [M, N]
    "block" : the k×k blocks, element j of every k-block at a time      -> [M, N/k, k, k]
    "dense" : N JVPs (vmapped), one per basis vector (small N only)      -> [M, 1, N, N]

"diag" and "block" take J by `torch.func.jvp` (method="jvp", the default, traceable by
`torch.compile`) or by reverse mode (method="vjp", what the eager solver uses): one evaluation of
the cell with an autograd graph, then one backward pass per block row — for a diagonal J, Jᵀ·1
is its diagonal. Eager autograd runs in C++, while `torch.func.jvp` decomposes several ops into
Python references: on a CPU the VJPs cost ~3× less.

WARNING — the structure is an assumption, not something these functions can see. A ones
tangent (cotangent) returns the row (column) sums of J; on a cell whose Jacobian is not
diagonal (any coupling between units, e.g. a dense recurrent matrix) that is silently wrong, and
Newton then either converges slowly to the right answer or fails and falls back. Only a caller
that has *proven* the structure — the compiler pass, from the IR — may pick "diag" or "block";
everyone else should pass "dense" or verify first with `check_jacobian_structure` (exact, by
`torch.func.jacrev`).
"""
from __future__ import annotations

from typing import Callable, Literal, Sequence

import torch
from torch import Tensor
from torch.func import jacrev, jvp, vmap

Cell = Callable[..., Tensor]
JacobianKind = Literal["diag", "block", "dense"]
JacobianMethod = Literal["vjp", "jvp"]


def _jvp(f: Callable[[Tensor], Tensor], h: Tensor, tangent: Tensor) -> tuple[Tensor, Tensor]:
    """(f(h), J·tangent). torch.func.jvp, not torch.autograd.forward_ad: the latter sees no
    tangents inside an autograd.Function's forward (where the solver runs) and would silently
    give J = 0, i.e. a Picard iteration instead of Newton."""
    return jvp(f, (h,), (tangent,))


def _by_vjp(cell: Cell, h: Tensor, x: Tensor, params: Sequence[Tensor], cotangents: Sequence[Tensor]
            ) -> tuple[Tensor, Callable[[], list[Tensor]]]:
    """f(h) now, and a thunk giving the VJPs cᵀJ for each cotangent c from the same graph (the
    solver tests convergence on f before it pays for J). Builds the graph under `enable_grad`
    (the solver runs inside an autograd.Function's forward, where grad is off); x and params
    are detached so the graph holds only what the h-derivative needs."""
    with torch.enable_grad():
        hh = h.detach().requires_grad_(True)
        out = cell(hh, x.detach(), *(p.detach() for p in params))

    def pull() -> list[Tensor]:
        if not out.requires_grad:  # f does not read h: J = 0
            return [torch.zeros_like(h) for _ in cotangents]
        grads = []
        for i, c in enumerate(cotangents):
            (g,) = torch.autograd.grad(out, hh, c.to(out.dtype), retain_graph=i + 1 < len(cotangents),
                                       allow_unused=True)
            grads.append(torch.zeros_like(h) if g is None else g)
        return grads

    return out.detach(), pull


def value_and_jacobian_deferred(
    cell: Cell, h: Tensor, x: Tensor, params: Sequence[Tensor], kind: JacobianKind, block: int = 1,
    method: JacobianMethod = "jvp",
) -> tuple[Tensor, Callable[[], Tensor]]:
    """`value_and_jacobian` as f and a thunk for J: with method "vjp" the backward passes run
    only when the thunk is called (call it at most once); otherwise J is already computed."""
    M, N = h.shape
    if method == "vjp" and kind in ("diag", "block"):
        k = block if kind == "block" else 1
        if k == 1:
            fh, pull = _by_vjp(cell, h, x, params, [torch.ones_like(h)])
            return fh, lambda: pull()[0]
        fh, pull = _by_vjp(cell, h, x, params, _selectors(h, k))
        # cotangent e_j per block gives row j of each block
        return fh, lambda: torch.stack([r.view(M, N // k, k) for r in pull()], dim=-2)
    fh, J = value_and_jacobian(cell, h, x, params, kind, block, method)
    return fh, lambda: J


def _selectors(h: Tensor, k: int) -> list[Tensor]:
    """[M, N] vectors selecting element j of every k-block, j = 0..k-1."""
    M, N = h.shape
    out = []
    for j in range(k):
        sel = torch.zeros(M, N // k, k, dtype=h.dtype, device=h.device)
        sel[..., j] = 1
        out.append(sel.view(M, N))
    return out


def value_and_jacobian(
    cell: Cell, h: Tensor, x: Tensor, params: Sequence[Tensor], kind: JacobianKind, block: int = 1,
    method: JacobianMethod = "jvp",
) -> tuple[Tensor, Tensor]:
    """f = cell(h, x, *params) and its structured Jacobian w.r.t. h, for a batch of rows.

    h: [M, N], x: [M, ...]. Returns f [M, N] and J of shape [M, N] (diag),
    [M, N // block, block, block] (block: J[m, p, i, j] = ∂f[p*k+i] / ∂h[p*k+j]) or
    [M, 1, N, N] (dense, the block case with one block). method: "jvp" (`torch.func.jvp`,
    traceable by `torch.compile`) or "vjp" (reverse mode, eager, ~3× faster on a CPU; a ones
    cotangent on a coupled cell gives column sums where "jvp" gives row sums); "dense" always
    uses vmapped JVPs.
    """
    if method not in ("vjp", "jvp"):
        raise ValueError(f"method must be 'vjp' or 'jvp', got {method!r}")

    def f(hh: Tensor) -> Tensor:
        return cell(hh, x, *params)

    M, N = h.shape
    if method == "vjp" and kind in ("diag", "block"):
        fh, jac = value_and_jacobian_deferred(cell, h, x, params, kind, block, method)
        return fh, jac()
    if kind == "diag":
        return _jvp(f, h, torch.ones_like(h))
    if kind == "block":
        cols = []
        for sel in _selectors(h, block):
            fh, col = _jvp(f, h, sel)
            cols.append(col.view(M, N // block, block))
        return fh, torch.stack(cols, dim=-1)
    if kind == "dense":
        basis = torch.eye(N, dtype=h.dtype, device=h.device).unsqueeze(1).expand(N, M, N)
        fh, cols = vmap(lambda t: jvp(f, (h,), (t,)), out_dims=(None, 0))(basis)
        return fh, cols.permute(1, 2, 0).unsqueeze(1)  # cols[j, m, i] = J[m, i, j]
    raise ValueError(f"jacobian must be 'diag', 'block' or 'dense', got {kind!r}")


def structure_mask(n: int, kind: JacobianKind, block: int = 1, device=None) -> Tensor:
    """[N, N] boolean mask of the entries a Jacobian of this structure may have nonzero."""
    idx = torch.arange(n, device=device)
    if kind == "diag":
        return idx[:, None] == idx[None, :]
    if kind == "block":
        return (idx[:, None] // block) == (idx[None, :] // block)
    if kind == "dense":
        return torch.ones(n, n, dtype=torch.bool, device=device)
    raise ValueError(f"jacobian must be 'diag', 'block' or 'dense', got {kind!r}")


def structure_violation(
    cell: Cell, h: Tensor, x: Tensor, params: Sequence[Tensor] = (), kind: JacobianKind = "diag",
    block: int = 1,
) -> float:
    """Largest |J| entry outside the claimed structure, relative to max |J| (0 = fits exactly).

    Uses the full Jacobian of the batch [B, N] -> [B, N] by `torch.func.jacrev`, so entries that
    couple different batch rows count as violations too. Keep B and N small.
    """
    B, N = h.shape
    if kind == "block" and N % block:
        raise ValueError(f"state size N={N} is not a multiple of block={block}")
    J = jacrev(lambda hh: cell(hh, x, *params))(h).detach()  # [B, N, B, N]
    same_row = torch.eye(B, dtype=torch.bool, device=h.device)
    allowed = same_row[:, None, :, None] & structure_mask(N, kind, block, h.device)[None, :, None, :]
    scale = J.abs().max().clamp_min(torch.finfo(J.dtype).tiny)
    return float(J.masked_fill(allowed, 0).abs().max() / scale)


def check_jacobian_structure(
    cell: Cell, h: Tensor, x: Tensor, params: Sequence[Tensor] = (), kind: JacobianKind = "diag",
    block: int = 1, rtol: float | None = None,
) -> bool:
    """True when ∂cell/∂h at (h, x) has the claimed structure, checked exactly with jacrev.

    Pass a random point (h: [B, N], x: [B, ...]) — structure seen at a special point such as
    h = 0 can be accidental. rtol defaults to 100·eps of h's dtype; use float64 for the check.
    """
    if rtol is None:
        rtol = 100 * torch.finfo(h.dtype).eps
    return structure_violation(cell, h, x, params, kind, block) <= rtol

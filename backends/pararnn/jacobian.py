"""Jacobians ∂f/∂h of a cell, taken from the cell itself by forward-mode AD, and a checker.

    "diag"  : one JVP with an all-ones tangent gives J's diagonal        -> [M, N]
    "block" : k JVPs, tangent j selects element j of every k-block       -> [M, N/k, k, k]
    "dense" : N JVPs (vmapped), one per basis vector (small N only)      -> [M, 1, N, N]

WARNING — the structure is an assumption, not something these functions can see. A ones-tangent
JVP returns the *row sums* of J; on a cell whose Jacobian is not diagonal (any coupling between
units, e.g. a dense recurrent matrix) that is silently wrong, and Newton then either converges
slowly to the right answer or fails and falls back. Only a caller that has *proven* the structure
— the compiler pass, from the IR — may pick "diag" or "block"; everyone else should pass
"dense" or verify first with `check_jacobian_structure` (exact, by `torch.func.jacrev`).
"""
from __future__ import annotations

from typing import Callable, Literal, Sequence

import torch
from torch import Tensor
from torch.func import jacrev, jvp, vmap

Cell = Callable[..., Tensor]
JacobianKind = Literal["diag", "block", "dense"]


def _jvp(f: Callable[[Tensor], Tensor], h: Tensor, tangent: Tensor) -> tuple[Tensor, Tensor]:
    """(f(h), J·tangent). torch.func.jvp, not torch.autograd.forward_ad: the latter sees no
    tangents inside an autograd.Function's forward (where the solver runs) and would silently
    give J = 0, i.e. a Picard iteration instead of Newton."""
    return jvp(f, (h,), (tangent,))


def value_and_jacobian(
    cell: Cell, h: Tensor, x: Tensor, params: Sequence[Tensor], kind: JacobianKind, block: int = 1
) -> tuple[Tensor, Tensor]:
    """f = cell(h, x, *params) and its structured Jacobian w.r.t. h, for a batch of rows.

    h: [M, N], x: [M, ...]. Returns f [M, N] and J of shape [M, N] (diag),
    [M, N // block, block, block] (block: J[m, p, i, j] = ∂f[p*k+i] / ∂h[p*k+j]) or
    [M, 1, N, N] (dense, the block case with one block).
    """
    def f(hh: Tensor) -> Tensor:
        return cell(hh, x, *params)

    M, N = h.shape
    if kind == "diag":
        return _jvp(f, h, torch.ones_like(h))
    if kind == "block":
        k = block
        cols = []
        for j in range(k):
            tangent = torch.zeros(M, N // k, k, dtype=h.dtype, device=h.device)
            tangent[..., j] = 1
            fh, col = _jvp(f, h, tangent.view(M, N))
            cols.append(col.view(M, N // k, k))
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

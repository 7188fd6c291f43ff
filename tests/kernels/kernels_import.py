"""The kernels package (`ncd.backends.triton`) and the helpers every kernel test shares."""
from __future__ import annotations

import torch

import ncd.backends.triton as kernels  # noqa: F401
import ncd.backends.triton.delta as delta_mod
import ncd.backends.triton.diagonal as scan_mod
import ncd.backends.triton.gated_linear as gla_mod

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
F32_TOL = 1e-4
HALF_TOL = 5e-3


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64 (b is the reference); ||a - b|| where b is exactly zero
    (e.g. dg at T=1 from a zero state: no gradient, but a kernel may round to ~1e-7)."""
    a, b = a.detach().double(), b.detach().double()
    nb = float(b.norm())
    return float((a - b).norm() / (nb if nb > 0 else 1.0))


def assert_close(got, want, tol: float, names) -> None:
    errs = {n: rel_err(g, w) for n, g, w in zip(names, got, want)}
    bad = {n: e for n, e in errs.items() if not e <= tol}
    every = ", ".join(f"{n}={e:.1e}" for n, e in errs.items())
    assert not bad, f"relative error above {tol:g}: " + ", ".join(
        f"{n}={e:.2e}" for n, e in bad.items()) + f" (all: {every})"


def outputs_and_grads(fn, inputs, seed: int = 1):
    """Run fn(*inputs) -> (y, y_T); return [y, y_T, *grads of a random linear loss]."""
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None for t in inputs]
    y, yT = fn(*leaves)
    gen = torch.Generator().manual_seed(seed)
    dy = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(y.device)
    dyT = torch.randn(yT.shape, generator=gen, dtype=torch.float64).to(yT.device)
    loss = (y.double() * dy).sum() + (yT.double() * dyT).sum()
    wrt = [t for t in leaves if t is not None]
    grads = torch.autograd.grad(loss, wrt, allow_unused=True)   # unused = zero gradient
    grads = [torch.zeros_like(w) if g is None else g for g, w in zip(grads, wrt)]
    return [y, yT, *grads]



"""The solver and its Triton scans on a CUDA device, at sizes the CPU tests cannot reach:
compiled kernels, float32 through long sequences, the fused (torch.compile'd) Newton step.
Oracle: the sequential loop / the naive scan. Skipped where no GPU is present."""
from importlib import import_module

import pytest
import torch
from pararnn_import import P

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@pytest.mark.parametrize("kind,k", [("diag", 1), ("block", 2)])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_triton_scan_at_size(kind, k, reverse):
    scan_triton = import_module(P.__name__ + ".scan_triton").scan_triton
    gen = torch.Generator().manual_seed(0)
    B, T, N = 4, 4099, 512
    if kind == "diag":
        a, b = torch.rand(B, T, N, generator=gen) * 2 - 1, torch.randn(B, T, N, generator=gen)
    else:
        a = (torch.rand(B, T, N // k, k, k, generator=gen) * 2 - 1) / k
        b = torch.randn(B, T, N // k, k, generator=gen)
    y0 = torch.randn(b[:, 0].shape, generator=gen)
    ref = P.scan_naive(a.double(), b.double(), kind, reverse, y0.double())
    out = scan_triton(a.cuda(), b.cuda(), kind, reverse, y0.cuda())
    assert rel(out.cpu(), ref) <= 1e-5


@pytest.mark.parametrize("name", ["ParaGRU", "ParaLSTM"])
@pytest.mark.parametrize("fuse", [False, True], ids=["eager", "fused"])
def test_newton_fp32_long_sequence_and_grads(name, fuse):
    gen = torch.Generator().manual_seed(1)
    cls = {"ParaGRU": P.ParaGRU, "ParaLSTM": P.ParaLSTM}[name]
    m = cls(64, 256, generator=gen).cuda()
    xs = torch.randn(4, 4096, 64, generator=gen).cuda().requires_grad_()
    solver = P.NewtonSolver(m.jacobian, m.block, fuse=fuse)
    h = m(xs, solver=solver)
    ref = m(xs, mode="sequential")
    assert rel(h, ref) <= 1e-4
    assert solver.stats.fallbacks == 0 and solver.stats.last_converged
    w = torch.randn_like(h)
    leaves = [xs, *m.parameters()]
    g = torch.autograd.grad((h * w).sum(), leaves)
    g_ref = torch.autograd.grad((ref * w).sum(), leaves)
    for i, (a, b) in enumerate(zip(g, g_ref)):
        assert rel(a, b) <= 1e-3, f"gradient {i}"


def test_newton_bf16_within_bf16_accuracy():
    gen = torch.Generator().manual_seed(2)
    m = P.ParaGRU(64, 256, generator=gen).cuda()
    xs = torch.randn(2, 2048, 64, generator=gen).cuda()
    with torch.no_grad():
        exact = m(xs, mode="sequential")
        m16, xs16 = m.to(torch.bfloat16), xs.to(torch.bfloat16)
        loop16 = m16(xs16, mode="sequential")
        newton16 = m16(xs16, solver=P.NewtonSolver("diag"))
    assert rel(newton16, exact) <= 3 * rel(loop16, exact) + 1e-2

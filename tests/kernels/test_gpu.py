"""The same checks on a CUDA device at sizes the interpreter cannot reach (compiled Triton:
tl.dot precision, register tiling, K = V = 128). Skipped where no GPU is present."""
import pytest
import torch
import torch.nn.functional as F

from kernels_import import (F32_TOL, HALF_TOL, assert_close, delta_mod, gla_mod,
                            outputs_and_grads, scan_mod)

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _gla_inputs(B, T, H, K, V, dtype):
    q, k, v = (torch.randn(B, T, H, n, device="cuda") for n in (K, K, V))
    g = F.logsigmoid(torch.randn(B, T, H, K, device="cuda")).clamp_min(-5)
    return [t.to(dtype) for t in (q, k, v, g)] + [torch.randn(B, H, K, V, device="cuda")]


def _delta_inputs(B, T, H, K, V, dtype):
    q = torch.randn(B, T, H, K, device="cuda")
    k = F.normalize(torch.randn(B, T, H, K, device="cuda"), dim=-1)
    v = torch.randn(B, T, H, V, device="cuda")
    beta = 2 * torch.sigmoid(torch.randn(B, T, H, device="cuda"))
    return [t.to(dtype) for t in (q, k, v, beta)] + [torch.randn(B, H, K, V, device="cuda")]


def _f32(ts):
    return [t.float() for t in ts]


@pytest.mark.parametrize("dtype,tol", [(torch.float32, F32_TOL), (torch.bfloat16, HALF_TOL)],
                         ids=["fp32", "bf16"])
@pytest.mark.parametrize("T", [1, 63, 300])
def test_gla_cuda(T, dtype, tol):
    ins = _gla_inputs(2, T, 2, 128, 128, dtype)
    got = outputs_and_grads(lambda *t: gla_mod.gla(*t[:4], None, t[4]), ins)
    want = outputs_and_grads(lambda *t: gla_mod.naive_gla(*t[:4], None, t[4]), _f32(ins))
    assert_close(got, want, tol, ["o", "S_T", "dq", "dk", "dv", "dg", "dh0"])


@pytest.mark.parametrize("dtype,tol", [(torch.float32, F32_TOL), (torch.bfloat16, HALF_TOL)],
                         ids=["fp32", "bf16"])
@pytest.mark.parametrize("T", [1, 63, 300])
def test_delta_cuda(T, dtype, tol):
    ins = _delta_inputs(2, T, 2, 128, 128, dtype)
    got = outputs_and_grads(lambda *t: delta_mod.delta_rule(*t[:4], None, t[4]), ins)
    want = outputs_and_grads(lambda *t: delta_mod.naive_delta_rule(*t[:4], None, t[4]),
                             _f32(ins))
    assert_close(got, want, tol, ["o", "S_T", "dq", "dk", "dv", "dbeta", "dh0"])


@pytest.mark.parametrize("dtype,tol", [(torch.float32, F32_TOL), (torch.bfloat16, HALF_TOL)],
                         ids=["fp32", "bf16"])
def test_scan_cuda(dtype, tol):
    a = (0.9 + 0.1 * torch.rand(2, 1000, 300, device="cuda")).to(dtype)
    x = torch.randn(2, 1000, 300, device="cuda").to(dtype)
    h0 = torch.randn(2, 300, device="cuda")
    got = outputs_and_grads(scan_mod.diag_scan, [a, x, h0])
    want = outputs_and_grads(scan_mod.naive_diag_scan, [a.float(), x.float(), h0])
    assert_close(got, want, tol, ["h", "h_T", "da", "dx", "dh0"])


@pytest.mark.parametrize("B,H,K,V", [(1, 1, 100, 72), (3, 2, 64, 200), (2, 16, 128, 128)],
                         ids=["ragged-B1H1", "ragged-wideV", "bench-heads"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, F32_TOL), (torch.float16, HALF_TOL)],
                         ids=["fp32", "fp16"])
def test_gla_and_delta_cuda_tiles(B, H, K, V, dtype, tol):
    """Head dims that are not multiples of the tiles, and few batch x heads (the GLA walks
    narrow their tiles to fill the SMs), through compiled kernels."""
    T = 257
    ins = _gla_inputs(B, T, H, K, V, dtype)
    got = outputs_and_grads(lambda *t: gla_mod.gla(*t[:4], None, t[4]), ins)
    want = outputs_and_grads(lambda *t: gla_mod.naive_gla(*t[:4], None, t[4]), _f32(ins))
    assert_close(got, want, tol, ["o", "S_T", "dq", "dk", "dv", "dg", "dh0"])
    ins = _delta_inputs(B, T, H, K, V, dtype)
    got = outputs_and_grads(lambda *t: delta_mod.delta_rule(*t[:4], None, t[4]), ins)
    want = outputs_and_grads(lambda *t: delta_mod.naive_delta_rule(*t[:4], None, t[4]),
                             _f32(ins))
    assert_close(got, want, tol, ["o", "S_T", "dq", "dk", "dv", "dbeta", "dh0"])

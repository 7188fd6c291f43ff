"""Parallel PyTorch scan and the Triton scan against the sequential naive scan."""
import math
from importlib import import_module

import pytest
import torch

from pararnn_import import P

scan_naive = P.scan_naive
scan_parallel = P.scan_parallel


def _coeffs(kind: str, pattern: str, B: int, T: int, n: int, k: int, dtype, gen):
    """a [B, T, n] (diag) or [B, T, n, k, k] (block) following `pattern`, b matching."""
    shape = (B, T, n) if kind == "diag" else (B, T, n, k, k)
    if pattern == "uniform":  # entries in (-1, 1)
        a = torch.rand(shape, generator=gen, dtype=dtype) * 2 - 1
        if kind == "block":
            a = a / k  # keep the products bounded
    elif pattern == "pm1":  # ±1 (diag) or ±identity blocks: no decay at all
        s = torch.randint(0, 2, shape[:3], generator=gen).to(dtype) * 2 - 1
        a = s if kind == "diag" else s[..., None, None] * torch.eye(k, dtype=dtype)
    elif pattern == "rotation":  # 2x2 rotations: norm-preserving, non-commuting with nothing
        th = torch.rand(shape[:3], generator=gen, dtype=dtype) * 2 * math.pi
        c, s = th.cos(), th.sin()
        a = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    else:
        raise ValueError(pattern)
    b = torch.randn((B, T, n) if kind == "diag" else (B, T, n, k), generator=gen, dtype=dtype)
    return a, b


CASES = [
    ("diag", "uniform", 1), ("diag", "pm1", 1),
    ("block", "uniform", 2), ("block", "uniform", 3), ("block", "pm1", 2), ("block", "rotation", 2),
]


@pytest.mark.parametrize("kind,pattern,k", CASES, ids=[f"{c[0]}-{c[1]}-k{c[2]}" for c in CASES])
@pytest.mark.parametrize("T", [1, 2, 7, 63, 64, 257])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("with_initial", [False, True], ids=["y0=0", "y0"])
def test_parallel_scan_matches_naive_f64(kind, pattern, k, T, reverse, with_initial):
    gen = torch.Generator().manual_seed(T * 7 + k)
    a, b = _coeffs(kind, pattern, 2, T, 3, k, torch.float64, gen)
    y0 = torch.randn(b[:, 0].shape, generator=gen, dtype=torch.float64) if with_initial else None
    ref = scan_naive(a, b, kind, reverse, y0)
    out = scan_parallel(a, b, kind, reverse, y0)
    assert out.shape == b.shape and out.dtype == b.dtype
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12 * max(1.0, ref.abs().max().item()))


@pytest.mark.parametrize("kind,pattern,k", CASES, ids=[f"{c[0]}-{c[1]}-k{c[2]}" for c in CASES])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_parallel_scan_matches_naive_f32_long(kind, pattern, k, reverse):
    gen = torch.Generator().manual_seed(1)
    a, b = _coeffs(kind, pattern, 1, 4099, 4, k, torch.float32, gen)
    ref = scan_naive(a.double(), b.double(), kind, reverse)
    out = scan_parallel(a, b, kind, reverse)
    scale = ref.abs().max().item()
    assert (out.double() - ref).abs().max().item() <= 1e-5 * max(1.0, scale)


def test_bf16_inputs_accumulate_in_f32():
    gen = torch.Generator().manual_seed(2)
    a, b = _coeffs("diag", "uniform", 2, 300, 8, 1, torch.float32, gen)
    a16, b16 = a.bfloat16(), b.bfloat16()
    ref = scan_naive(a16.double(), b16.double())  # the same rounded inputs, exact arithmetic
    out = scan_parallel(a16, b16)
    assert out.dtype == torch.bfloat16
    assert (out.double() - ref).abs().max().item() <= 2 ** -7 * ref.abs().max().item()


def test_linear_scan_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"got a \(2, 5, 3\), b \(2, 5, 4\)"):
        P.linear_scan(torch.zeros(2, 5, 3), torch.zeros(2, 5, 4))
    with pytest.raises(ValueError, match="block scan wants"):
        P.linear_scan(torch.zeros(2, 5, 3, 2, 3), torch.zeros(2, 5, 3, 2), "block")
    with pytest.raises(ValueError, match="kind must be"):
        P.linear_scan(torch.zeros(2, 5, 3), torch.zeros(2, 5, 3), "dense")


# ------------------------------------------------------------------ Triton (interpreter on CPU)
TRITON_CASES = [("diag", "uniform", 1), ("diag", "pm1", 1), ("block", "uniform", 2),
                ("block", "rotation", 2), ("block", "uniform", 3)]


@pytest.mark.parametrize("kind,pattern,k", TRITON_CASES,
                         ids=[f"{c[0]}-{c[1]}-k{c[2]}" for c in TRITON_CASES])
@pytest.mark.parametrize("T", [1, 8, 21])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_triton_scan_matches_naive(nan_empty, kind, pattern, k, T, reverse):
    pytest.importorskip("triton")
    scan_triton = import_module(P.__name__ + ".scan_triton").scan_triton
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator().manual_seed(T + k)
    a, b = _coeffs(kind, pattern, 2, T, 3, k, torch.float32, gen)
    y0 = torch.randn(b[:, 0].shape, generator=gen)
    ref = scan_naive(a, b, kind, reverse, y0)
    # chunk 8 with odd T: a partial last chunk and carries across several chunks
    out = scan_triton(a.to(device), b.to(device), kind, reverse, y0.to(device), chunk=8, block_n=2)
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-5, atol=1e-5)


def test_triton_scan_bf16_and_no_initial(nan_empty):
    pytest.importorskip("triton")
    scan_triton = import_module(P.__name__ + ".scan_triton").scan_triton
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator().manual_seed(5)
    a, b = _coeffs("diag", "uniform", 1, 19, 5, 1, torch.float32, gen)
    a16, b16 = a.bfloat16(), b.bfloat16()
    ref = scan_naive(a16, b16)
    out = scan_triton(a16.to(device), b16.to(device), "diag", chunk=4)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.cpu().float(), ref.float(), rtol=2 ** -7, atol=2 ** -7)

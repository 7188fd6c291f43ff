"""gla (Triton forward, PyTorch chunked twin) against the sequential float32 reference,
and that reference against fla's naive_recurrent_gla."""
import importlib
import sys

import pytest
import torch
import torch.nn.functional as F
from kernels_import import (
    DEVICE,
    F32_TOL,
    HALF_TOL,
    assert_close,
    gla_mod,
    outputs_and_grads,
)

NAMES = ["o", "S_T", "dq", "dk", "dv", "dg", "dh0"]
naive = gla_mod.naive_gla
chunk_mod = importlib.import_module(f"{gla_mod.__name__}.chunk")
TILES16 = chunk_mod.GLATiles(BK=16, BV=16, BV_dqk=16)   # several tiles already at K, V > 16


def inputs(B, T, H, K, V, h0=True, dtype=torch.float32, gate_scale=1.0):
    q, k = torch.randn(B, T, H, K), torch.randn(B, T, H, K)
    v = torch.randn(B, T, H, V)
    g = F.logsigmoid(torch.randn(B, T, H, K) * 2) * gate_scale
    s = torch.randn(B, H, K, V) if h0 else None
    return [t.to(DEVICE, dtype) if t is not None else None for t in (q, k, v, g)] + [
        s.to(DEVICE) if s is not None else None]


def run(backend, chunk_size=64, scale=None):
    return lambda q, k, v, g, s: gla_mod.gla(q, k, v, g, scale, s, chunk_size=chunk_size,
                                              backend=backend)


def ref(scale=None):
    return lambda q, k, v, g, s: naive(q, k, v, g, scale, s)


SHAPES = [(1, 1, 1, 16, 16), (2, 7, 2, 16, 8), (1, 63, 2, 8, 16), (2, 65, 1, 16, 16)]


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("h0", [True, False], ids=["h0", "zero-h0"])
@pytest.mark.parametrize("B,T,H,K,V", SHAPES, ids=lambda v: str(v))
def test_matches_naive_fp32(B, T, H, K, V, h0, backend):
    ins = inputs(B, T, H, K, V, h0)
    got = outputs_and_grads(run(backend), ins)
    assert_close(got, outputs_and_grads(ref(), ins), F32_TOL, NAMES)


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("chunk_size", [16, 32])
def test_chunk_sizes_and_scale(chunk_size, backend):
    ins = inputs(1, 37, 2, 12, 10)      # K, V below 16 and not powers of two
    got = outputs_and_grads(run(backend, chunk_size, scale=0.3), ins)
    assert_close(got, outputs_and_grads(ref(0.3), ins), F32_TOL, NAMES)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_strong_decay_stays_finite(backend):
    """Gates down to ~ -40 per step: exp(-b_s) alone would overflow float32 within a chunk;
    secondary chunking keeps every exponent <= 0."""
    ins = inputs(1, 64, 1, 16, 16, gate_scale=20.0)
    got = outputs_and_grads(run(backend), ins)
    assert all(torch.isfinite(t).all() for t in got)
    assert_close(got, outputs_and_grads(ref(), ins), F32_TOL, NAMES)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("T", [7, 65])
def test_half_against_fp32_naive(T, dtype):
    q, k, v, g, s = inputs(1, T, 2, 16, 16, dtype=dtype)
    got = outputs_and_grads(run("triton"), [q, k, v, g, s])
    want = outputs_and_grads(ref(), [q.float(), k.float(), v.float(), g.float(), s])
    assert got[0].dtype == dtype and got[1].dtype == torch.float32
    assert_close(got, want, HALF_TOL, NAMES)


def test_naive_matches_fla_oracle():
    sys.modules.setdefault("fla.layers", None)   # skip fla's model zoo (needs transformers)
    sys.modules.setdefault("fla.models", None)
    naive_recurrent_gla = pytest.importorskip("fla.ops.gla.naive").naive_recurrent_gla
    q, k, v, g, s = inputs(2, 33, 2, 16, 8)
    o, S = naive(q, k, v, g, None, s)
    o_fla, S_fla = naive_recurrent_gla(q, k, v, g, initial_state=s, output_final_state=True)
    assert_close([o, S], [o_fla, S_fla], 1e-5, ["o", "S_T"])


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_gradcheck_fp64(backend):
    """Two chunks of 16; fast_mode (random projections) keeps the interpreted forwards few."""
    q, k, v, g, s = (t.double().requires_grad_(True) for t in inputs(1, 18, 1, 2, 2))
    assert torch.autograd.gradcheck(run(backend, 16), (q, k, v, g, s), eps=1e-6, atol=1e-7,
                                    fast_mode=True)


@pytest.mark.slow
def test_gradcheck_fp64_full_jacobian_torch():
    q, k, v, g, s = (t.double().requires_grad_(True) for t in inputs(1, 18, 1, 2, 2))
    assert torch.autograd.gradcheck(run("torch", 16), (q, k, v, g, s), eps=1e-6, atol=1e-7)


def test_empty_time_axis():
    q, k, v, g, s = inputs(1, 0, 2, 4, 4)
    o, S = gla_mod.gla(q, k, v, g, initial_state=s, backend="triton")
    assert o.shape == (1, 0, 2, 4) and torch.equal(S, s)


@pytest.mark.parametrize("change,match", [
    (lambda t: t.update(q=t["q"][0]), r"q must be 4-D \[B, T, H, K\], got 3-D"),
    (lambda t: t.update(k=t["k"][:, :3]), r"k must have shape \[B, T, H, K\] = \(2, 5, 2, 4\), got \(2, 3, 2, 4\)"),
    (lambda t: t.update(v=t["v"][:, :4]), r"v must have shape \[B, T, H, V\] with \(B, T, H\) = \(2, 5, 2\)"),
    (lambda t: t.update(g=t["g"][..., :3]), r"g must have shape \[B, T, H, K\] = \(2, 5, 2, 4\), got \(2, 5, 2, 3\)"),
    (lambda t: t.update(initial_state=t["initial_state"][:, :1]), r"initial_state must have shape \[B, H, K, V\] = \(2, 2, 4, 3\)"),
    (lambda t: t.update(k=t["k"].double()), r"q, k, v must share a dtype"),
    (lambda t: t.update(g=t["g"].half()), r"g must share q's dtype"),
    (lambda t: t.update(q=t["q"].long(), k=t["k"].long(), v=t["v"].long()), r"q must be float16"),
    (lambda t: t.update(chunk_size=48), r"chunk_size must be 16, 32 or 64, got 48"),
], ids=["ndim", "k-shape", "v-shape", "g-shape", "h0-shape", "dtype-mismatch", "g-dtype", "int",
        "chunk"])
def test_rejects_bad_input(change, match):
    q, k, v, g, s = inputs(2, 5, 2, 4, 3)
    kw = {"q": q, "k": k, "v": v, "g": g, "initial_state": s}
    change(kw)
    with pytest.raises(ValueError, match=match):
        gla_mod.gla(**kw)


def test_rejects_head_dim_too_big_for_triton():
    q, k, v, g, _ = inputs(1, 2, 1, 300, 4)
    with pytest.raises(ValueError, match=r"K, V <= 256, got K=300, V=4"):
        gla_mod.gla(q, k, v, g, backend="triton")
    o, _ = gla_mod.gla(q, k, v, g, backend="torch")      # the PyTorch twin has no such limit
    assert o.shape == (1, 2, 1, 4)


def test_package_exports():
    from kernels_import import kernels
    assert kernels.gla is gla_mod.gla
    assert set(kernels.__all__) == {"diag_scan", "gla", "delta_rule"}


def run_tiles(tiles, chunk_size=64, scale=None):
    def f(q, k, v, g, s):
        sc = q.shape[-1] ** -0.5 if scale is None else scale
        return chunk_mod.gla_triton(q, k, v, g, sc, s, chunk_size, 16, tiles)
    return f


# K, V spanning several 16-wide tiles, not multiples of 16, K != V; T off the chunk grid
MULTI_TILE = [(1, 1, 1, 40, 24, 16), (2, 37, 1, 32, 32, 16), (1, 45, 2, 40, 24, 32),
              (1, 70, 1, 24, 48, 64), (1, 17, 1, 33, 17, 16)]


@pytest.mark.parametrize("h0", [True, False], ids=["h0", "zero-h0"])
@pytest.mark.parametrize("B,T,H,K,V,C", MULTI_TILE, ids=lambda v: str(v))
def test_multi_tile_fp32(B, T, H, K, V, C, h0):
    ins = inputs(B, T, H, K, V, h0)
    got = outputs_and_grads(run_tiles(TILES16, C, scale=0.4), ins)
    assert_close(got, outputs_and_grads(ref(0.4), ins), F32_TOL, NAMES)


@pytest.mark.parametrize("tiles", [TILES16, chunk_mod.GLATiles(BK=32, BV=16, BV_dqk=32),
                                   chunk_mod.GLATiles(BK=16, BV=32, BV_dqk=16)],
                         ids=["16-16-16", "32-16-32", "16-32-16"])
def test_multi_tile_mixed_tiles(tiles):
    ins = inputs(2, 50, 1, 48, 40)
    got = outputs_and_grads(run_tiles(tiles, 32), ins)
    assert_close(got, outputs_and_grads(ref(), ins), F32_TOL, NAMES)


@pytest.mark.parametrize("h0", [True, False], ids=["h0", "zero-h0"])
@pytest.mark.parametrize("T", [1, 29])
def test_multi_tile_without_dhT(T, h0):
    """gla_bwd with dhT=None (S_T unused): the backward's no-final-gradient path."""
    q, k, v, g, s = inputs(1, T, 2, 40, 24, h0)
    scale = 40 ** -0.5
    o, hT, saved = chunk_mod.gla_fwd(q, k, v, g, scale, s, 16, 16, TILES16)
    do = torch.randn_like(o)
    got = chunk_mod.gla_bwd(q, k, v, g, scale, s, saved, hT, do, None, 16, 16, TILES16)
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v, g)]
    leaves.append(s.clone().requires_grad_(True) if h0 else None)
    o_ref, _ = naive(*leaves[:4], scale, leaves[4])
    wrt = [t for t in leaves if t is not None]
    want = torch.autograd.grad((o_ref * do).sum(), wrt)
    assert_close([o, *got[:len(want)]], [o_ref, *want], F32_TOL, ["o", *NAMES[2:]])
    assert (got[4] is None) == (not h0)


def test_gradcheck_fp64_multi_tile():
    q, k, v, g, s = (t.double().requires_grad_(True) for t in inputs(1, 18, 1, 18, 17))
    assert torch.autograd.gradcheck(run_tiles(TILES16, 16), (q, k, v, g, s), eps=1e-6,
                                    atol=1e-7, fast_mode=True)


def test_default_tiles_fit_the_head_dims():
    assert chunk_mod.default_tiles(torch.bfloat16) == chunk_mod.GLATiles(64, 64, 32)
    assert chunk_mod.default_tiles(torch.float32).BV == 32


@pytest.mark.slow
def test_bench_head_dims_k128_v128():
    """K = V = 128 as in the benchmark: several V blocks of 64 in the forward programs."""
    ins = inputs(1, 70, 1, 128, 128)
    got = outputs_and_grads(run("triton"), ins)
    assert_close(got, outputs_and_grads(ref(), ins), F32_TOL, NAMES)


def test_walk_tiles_narrow_only_when_the_walks_would_leave_sms_idle():
    walk = importlib.import_module(f"{gla_mod.__name__}.tiles").walk_tiles
    assert walk(8 * 16, 128, 128, 64, 64, sms=132) == (64, 64)     # 512 programs: enough
    assert walk(2 * 16, 128, 128, 64, 64, sms=132) == (64, 32)     # 128 -> 256 programs
    assert walk(1, 64, 64, 64, 64, sms=132) == (32, 32)            # never below 32
    assert walk(1, 16, 16, 16, 16, sms=132) == (16, 16)            # tiles already narrow


def test_sequences_past_the_int32_tile_offsets_are_refused():
    """Offsets inside one (batch, head) sequence are int32: a length that would overflow them is
    a ValueError before any launch, not a wrong answer (meta tensors: nothing is allocated)."""
    T, H, K = 2 ** 21, 16, 128
    q, k, g = (torch.empty(1, T, H, K, device="meta") for _ in range(3))
    v = torch.empty(1, T, H, K, device="meta")
    with pytest.raises(ValueError, match=r"below 2\*\*31"):
        chunk_mod.gla_fwd(q, k, v, g, 1.0, None)

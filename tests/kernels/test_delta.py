"""delta_rule (Triton forward, PyTorch chunked twin) against the sequential float32 reference,
and that reference against fla's delta_rule_recurrence."""
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
    delta_mod,
    outputs_and_grads,
)

NAMES = ["o", "S_T", "dq", "dk", "dv", "dbeta", "dh0"]
naive = delta_mod.naive_delta_rule
chunk_mod = importlib.import_module(f"{delta_mod.__name__}.chunk")  # the Triton path (imports triton)


def inputs(B, T, H, K, V, h0=True, dtype=torch.float32):
    q = torch.randn(B, T, H, K)
    k = F.normalize(torch.randn(B, T, H, K), dim=-1)
    v = torch.randn(B, T, H, V)
    beta = 2 * torch.rand(B, T, H)             # (0, 2): eigenvalues of I - beta k k^T in (-1, 1]
    s = torch.randn(B, H, K, V) if h0 else None
    return [t.to(DEVICE, dtype) for t in (q, k, v, beta)] + [
        s.to(DEVICE) if s is not None else None]


def run(backend, chunk_size=64, scale=None):
    return lambda q, k, v, b, s: delta_mod.delta_rule(q, k, v, b, scale, s,
                                                      chunk_size=chunk_size, backend=backend)


def ref(scale=None):
    return lambda q, k, v, b, s: naive(q, k, v, b, scale, s)


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


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("T", [7, 65])
def test_half_against_fp32_naive(T, dtype):
    q, k, v, b, s = inputs(1, T, 2, 16, 16, dtype=dtype)
    got = outputs_and_grads(run("triton"), [q, k, v, b, s])
    want = outputs_and_grads(ref(), [q.float(), k.float(), v.float(), b.float(), s])
    assert got[0].dtype == dtype and got[1].dtype == torch.float32
    assert_close(got, want, HALF_TOL, NAMES)


def test_naive_matches_fla_oracle():
    sys.modules.setdefault("fla.layers", None)   # skip fla's model zoo (needs transformers)
    sys.modules.setdefault("fla.models", None)
    recurrence = pytest.importorskip("fla.ops.delta_rule.naive").delta_rule_recurrence
    q, k, v, b, s = inputs(2, 33, 2, 16, 8)
    o, S = naive(q, k, v, b, None, s)
    # fla's reference takes [B, H, T, *] and beta [B, H, T]
    o_fla, S_fla = recurrence(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                              b.transpose(1, 2), initial_state=s, output_final_state=True)
    assert_close([o, S], [o_fla.transpose(1, 2), S_fla], 1e-5, ["o", "S_T"])


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_gradcheck_fp64(backend):
    """Two chunks of 16; fast_mode (random projections) keeps the interpreted forwards few."""
    q, k, v, b, s = (t.double().requires_grad_(True) for t in inputs(1, 18, 1, 2, 2))
    assert torch.autograd.gradcheck(run(backend, 16), (q, k, v, b, s), eps=1e-6, atol=1e-7,
                                    fast_mode=True)


@pytest.mark.slow
def test_gradcheck_fp64_full_jacobian_torch():
    q, k, v, b, s = (t.double().requires_grad_(True) for t in inputs(1, 18, 1, 2, 2))
    assert torch.autograd.gradcheck(run("torch", 16), (q, k, v, b, s), eps=1e-6, atol=1e-7)


def test_empty_time_axis():
    q, k, v, b, s = inputs(1, 0, 2, 4, 4)
    o, S = delta_mod.delta_rule(q, k, v, b, initial_state=s, backend="triton")
    assert o.shape == (1, 0, 2, 4) and torch.equal(S, s)


@pytest.mark.parametrize("change,match", [
    (lambda t: t.update(q=t["q"][0]), r"q must be 4-D \[B, T, H, K\], got 3-D"),
    (lambda t: t.update(k=t["k"][:, :3]), r"k must have shape \[B, T, H, K\] = \(2, 5, 2, 4\), got \(2, 3, 2, 4\)"),
    (lambda t: t.update(v=t["v"][:, :4]), r"v must have shape \[B, T, H, V\] with \(B, T, H\) = \(2, 5, 2\)"),
    (lambda t: t.update(beta=t["beta"][..., None]), r"beta must be 3-D \[B, T, H\], got 4-D"),
    (lambda t: t.update(beta=t["beta"][:, :2]), r"beta must have shape \[B, T, H\] = \(2, 5, 2\), got \(2, 2, 2\)"),
    (lambda t: t.update(initial_state=t["initial_state"][..., :1]), r"initial_state must have shape \[B, H, K, V\] = \(2, 2, 4, 3\)"),
    (lambda t: t.update(v=t["v"].half()), r"q, k, v must share a dtype"),
    (lambda t: t.update(beta=t["beta"].long()), r"beta must be float16"),
    (lambda t: t.update(chunk_size=128), r"chunk_size must be 16, 32 or 64, got 128"),
], ids=["ndim", "k-shape", "v-shape", "beta-ndim", "beta-shape", "h0-shape", "dtype-mismatch",
        "beta-int", "chunk"])
def test_rejects_bad_input(change, match):
    q, k, v, b, s = inputs(2, 5, 2, 4, 3)
    kw = {"q": q, "k": k, "v": v, "beta": b, "initial_state": s}
    change(kw)
    with pytest.raises(ValueError, match=match):
        delta_mod.delta_rule(**kw)


def run_blocks(blocks, chunk_size=16):
    """The Triton autograd path with explicit tile sizes (the launcher's are for K, V >= 64)."""
    chunk = chunk_mod

    def fn(q, k, v, b, s):
        scale = q.shape[-1] ** -0.5
        o, hT, extras = chunk.delta_rule_fwd(q, k, v, b, scale, s, chunk_size, blocks=blocks)

        class Fn(torch.autograd.Function):
            @staticmethod
            def forward(ctx, q, k, v, b, s):
                ctx.set_materialize_grads(False)     # an unused S_T gives dhT = None
                return o, hT

            @staticmethod
            def backward(ctx, do, dhT):
                return chunk.delta_rule_bwd(q, k, v, b, scale, s, extras, do.contiguous(),
                                            dhT.contiguous() if dhT is not None else None,
                                            chunk_size, blocks=blocks)
        return Fn.apply(q, k, v, b, s)
    return fn


# V spans several V-tiles and is no multiple of them; K spans several K-tiles (and, with
# bk_dstate=16, several row blocks of the backward walk's dS tile); T no multiple of the chunk.
TILED = [(1, 1, 1, 40, 48), (2, 37, 1, 48, 40), (1, 21, 2, 20, 33), (1, 40, 1, 64, 24)]


@pytest.mark.parametrize("h0", [True, False], ids=["h0", "zero-h0"])
@pytest.mark.parametrize("B,T,H,K,V", TILED, ids=lambda v: str(v))
def test_multi_tile_paths(B, T, H, K, V, h0):
    blocks = chunk_mod.DeltaBlocks(bk=16, bv=16, bv_state=16, bv_dstate=32, bk_dstate=16)
    ins = inputs(B, T, H, K, V, h0)
    got = outputs_and_grads(run_blocks(blocks), ins)
    assert_close(got, outputs_and_grads(ref(), ins), F32_TOL, NAMES)


def test_multi_tile_without_final_state_gradient():
    """dhT = None (the loss ignores S_T) through the tiled backward."""
    blocks = chunk_mod.DeltaBlocks(bk=16, bv=16, bv_state=32, bv_dstate=16, bk_dstate=32)
    q, k, v, b, s = inputs(1, 19, 2, 40, 36)
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v, b, s)]
    got = torch.autograd.grad(run_blocks(blocks)(*leaves)[0].square().sum(), leaves)
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v, b, s)]
    want = torch.autograd.grad(ref()(*leaves)[0].square().sum(), leaves)
    assert_close(got, want, F32_TOL, NAMES[2:])


def test_blocks_must_be_powers_of_two():
    q, k, v, b, s = inputs(1, 4, 1, 16, 16)
    with pytest.raises(ValueError, match=r"DeltaBlocks.bv must be a power of two >= 16"):
        chunk_mod.delta_rule_fwd(q, k, v, b, 1.0, s,
                                       blocks=chunk_mod.DeltaBlocks(bv=24))


@pytest.mark.slow
def test_bench_head_dims_k128_v128():
    """K = V = 128 as in the benchmark: several V blocks of 64 in the forward programs."""
    ins = inputs(1, 70, 1, 128, 128)
    got = outputs_and_grads(run("triton"), ins)
    assert_close(got, outputs_and_grads(ref(), ins), F32_TOL, NAMES)


def test_walk_vtile_narrows_only_when_the_walks_would_leave_sms_idle():
    walk = importlib.import_module(f"{delta_mod.__name__}.blocks").walk_vtile
    assert walk(32, 8 * 16, 128, sms=132) == 32      # 512 programs: enough
    assert walk(64, 8 * 16, 128, sms=132) == 64      # 256
    assert walk(32, 2 * 16, 128, sms=132) == 16      # 128 -> 256 programs
    assert walk(32, 1, 128, sms=132) == 16           # never below 16

"""Packed variable-length batches (fla's cu_seqlens): every kernel, Triton and PyTorch twin, on N
sequences packed along one time axis equals each sequence run alone through the sequential
float32 reference (outputs, final states, every gradient), with resets at the offsets; nothing
past the packed length is read; bad offsets are refused."""
import pytest
import torch
import torch.nn.functional as F

from kernels_import import DEVICE, F32_TOL, assert_close, delta_mod, gla_mod, outputs_and_grads, scan_mod

# lengths: one step, a single sequence, several length-1 ones, mixed across chunk boundaries (C = 16)
LENS = [(1,), (20,), (1, 1, 1), (3, 1, 37, 17)]
NAN_TAIL = 5     # the packed inputs are views of buffers whose last NAN_TAIL steps are NaN


def offsets(lens):
    return torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int64, device=DEVICE)


def nan_tailed(t):
    """t [1, T, ...] followed by NaN steps: the buffer the packed view is cut from."""
    return torch.cat([t, torch.full_like(t[:, :NAN_TAIL], float("nan"))], 1)


def alone(ref, lens):
    """The reference run on each sequence alone (its own slice, its own h0), concatenated."""
    def run(*t):
        *xs, h0 = t
        ys, finals, o = [], [], 0
        for i, n in enumerate(lens):
            y, yT = ref(*(x[:, o:o + n] for x in xs), None if h0 is None else h0[i:i + 1])
            ys.append(y)
            finals.append(yT)
            o += n
        return torch.cat(ys, 1), torch.cat(finals, 0)
    return run


def check(packed, ref, xs, h0, lens, names):
    """packed(*views, h0) on views of NaN-tailed buffers against `alone(ref)` on xs."""
    T = sum(lens)
    cut = lambda *t: packed(*(b[:, :T] for b in t[:-1]), t[-1])  # noqa: E731
    got = outputs_and_grads(cut, [nan_tailed(x) for x in xs] + [h0])
    want = outputs_and_grads(alone(ref, lens), xs + [h0])
    n_in = len(xs)
    for g in got[2:2 + n_in]:        # the NaN tail is never read, so gets no gradient
        assert torch.equal(g[:, T:], torch.zeros_like(g[:, T:]))
    got[2:2 + n_in] = [g[:, :T] for g in got[2:2 + n_in]]
    keep = [i for i, _ in enumerate(got) if i < 2 + n_in or h0 is not None]
    assert_close([got[i] for i in keep], [want[i] for i in keep], F32_TOL, names)


def ids(v):
    return "-".join(map(str, v)) if isinstance(v, tuple) else str(v)


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "reverse"])
@pytest.mark.parametrize("lens", LENS + [(70, 2, 64)], ids=ids)
def test_diag_scan_packed(lens, reverse, backend):
    T, D, N = sum(lens), 33, len(lens)
    a, x, h0 = torch.rand(1, T, D) * 1.5 - 0.5, torch.randn(1, T, D), torch.randn(N, D)
    a, x, h0 = a.to(DEVICE), x.to(DEVICE), h0.to(DEVICE)
    cu = offsets(lens)
    check(lambda a, x, h: scan_mod.diag_scan(a, x, h, reverse=reverse, backend=backend, cu_seqlens=cu),
          lambda a, x, h: scan_mod.naive_diag_scan(a, x, h, reverse), [a, x], h0, lens,
          ["h", "h_T", "da", "dx", "dh0"])


def qkv(lens, H=2, K=16, V=8):
    T = sum(lens)
    q, k, v = torch.randn(1, T, H, K), torch.randn(1, T, H, K), torch.randn(1, T, H, V)
    return [t.to(DEVICE) for t in (q, k, v)], torch.randn(len(lens), H, K, V).to(DEVICE)


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("h0", [True, False], ids=["h0", "zero-h0"])
@pytest.mark.parametrize("lens", LENS, ids=ids)
def test_gla_packed(lens, h0, backend):
    (q, k, v), s = qkv(lens)
    g = F.logsigmoid(torch.randn(q.shape) * 2).to(DEVICE)
    cu = offsets(lens)
    check(lambda q, k, v, g, s: gla_mod.gla(q, k, v, g, None, s, chunk_size=16, backend=backend,
                                            cu_seqlens=cu),
          lambda q, k, v, g, s: gla_mod.naive_gla(q, k, v, g, None, s), [q, k, v, g],
          s if h0 else None, lens, ["o", "S_T", "dq", "dk", "dv", "dg", "dh0"])


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("h0", [True, False], ids=["h0", "zero-h0"])
@pytest.mark.parametrize("lens", LENS, ids=ids)
def test_delta_rule_packed(lens, h0, backend):
    (q, k, v), s = qkv(lens)
    k = F.normalize(k, dim=-1)
    beta = (2 * torch.rand(q.shape[:3])).to(DEVICE)
    cu = offsets(lens)
    check(lambda q, k, v, b, s: delta_mod.delta_rule(q, k, v, b, None, s, chunk_size=16,
                                                     backend=backend, cu_seqlens=cu),
          lambda q, k, v, b, s: delta_mod.naive_delta_rule(q, k, v, b, None, s), [q, k, v, beta],
          s if h0 else None, lens, ["o", "S_T", "dq", "dk", "dv", "dbeta", "dh0"])


@pytest.mark.slow
@pytest.mark.parametrize("kernel", ["gla", "delta"])
def test_packed_chunk64(kernel):
    """Chunk 64 at K = V = 32, sequences crossing chunk boundaries."""
    lens = (65, 1, 130)
    (q, k, v), s = qkv(lens, H=1, K=32, V=32)
    cu = offsets(lens)
    if kernel == "gla":
        g = F.logsigmoid(torch.randn(q.shape)).to(DEVICE)
        check(lambda *t: gla_mod.gla(*t[:4], None, t[4], backend="triton", cu_seqlens=cu),
              lambda *t: gla_mod.naive_gla(*t[:4], None, t[4]), [q, k, v, g], s, lens,
              ["o", "S_T", "dq", "dk", "dv", "dg", "dh0"])
    else:
        k = F.normalize(k, dim=-1)
        beta = torch.rand(q.shape[:3]).to(DEVICE)
        check(lambda *t: delta_mod.delta_rule(*t[:4], None, t[4], backend="triton", cu_seqlens=cu),
              lambda *t: delta_mod.naive_delta_rule(*t[:4], None, t[4]), [q, k, v, beta], s, lens,
              ["o", "S_T", "dq", "dk", "dv", "dbeta", "dh0"])


@pytest.mark.slow
def test_packed_gla_several_state_tiles():
    """16-wide tiles at K = V = 32: every state walk and per-chunk kernel loops over tiles."""
    import importlib

    chunk = importlib.import_module(f"{gla_mod.__name__}.chunk")
    lens = (20, 1, 40)
    (q, k, v), s = qkv(lens, H=1, K=32, V=32)
    g = F.logsigmoid(torch.randn(q.shape)).to(DEVICE)
    cu = offsets(lens)
    tiles = chunk.GLATiles(BK=16, BV=16, BV_dqk=16)
    check(lambda *t: chunk.gla_triton(*t[:4], 32 ** -0.5, t[4], 16, 16, tiles, cu_seqlens=cu),
          lambda *t: gla_mod.naive_gla(*t[:4], None, t[4]), [q, k, v, g], s, lens,
          ["o", "S_T", "dq", "dk", "dv", "dg", "dh0"])


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_packed_gradcheck_fp64(backend):
    """float64 through the packed Triton path (the interpreter runs it in float64)."""
    lens = (2, 1, 3)
    a = (torch.rand(1, 6, 3, dtype=torch.float64) + 0.2).to(DEVICE).requires_grad_()
    x = torch.randn(1, 6, 3, dtype=torch.float64).to(DEVICE).requires_grad_()
    h0 = torch.randn(3, 3, dtype=torch.float64).to(DEVICE).requires_grad_()
    cu = offsets(lens)
    assert torch.autograd.gradcheck(
        lambda a, x, h: scan_mod.diag_scan(a, x, h, backend=backend, cu_seqlens=cu), (a, x, h0),
        eps=1e-6, atol=1e-8)


BAD = [
    (torch.tensor([0.0, 3.0, 6.0]), "integers"),
    ([0, 3, 6], "torch.Tensor"),
    (torch.tensor([[0, 3, 6]]), "1-D"),
    (torch.tensor([0]), "1-D"),
    (torch.tensor([1, 3, 6]), "start at 0"),
    (torch.tensor([0, 3, 3, 6]), "strictly increase"),
    (torch.tensor([0, 4, 3, 6]), "strictly increase"),
    (torch.tensor([0, 3, 5]), "end at the packed length 6"),
]


@pytest.mark.parametrize("cu,msg", BAD, ids=lambda v: str(v.tolist() if hasattr(v, "tolist") else v))
@pytest.mark.parametrize("kernel", ["scan", "gla", "delta"])
def test_bad_offsets_refused(kernel, cu, msg):
    with pytest.raises(ValueError, match=msg):
        packed_call(kernel, cu, rows=1, N=2)


def packed_call(kernel, cu, rows, N):
    T, H, K = 6, 1, 16
    if kernel == "scan":
        a = torch.rand(rows, T, 4)
        return scan_mod.diag_scan(a, a, torch.zeros(N, 4), backend="torch", cu_seqlens=cu)
    q = torch.randn(rows, T, H, K)
    s = torch.zeros(N, H, K, K)
    if kernel == "gla":
        return gla_mod.gla(q, q, q, -q.abs(), None, s, backend="torch", cu_seqlens=cu)
    return delta_mod.delta_rule(q, q, q, q[..., 0].sigmoid(), None, s, backend="torch", cu_seqlens=cu)


@pytest.mark.parametrize("kernel", ["scan", "gla", "delta"])
def test_packed_shapes_refused(kernel):
    cu = torch.tensor([0, 2, 6])
    with pytest.raises(ValueError, match="batch of 1"):
        packed_call(kernel, cu, rows=2, N=2)
    with pytest.raises(ValueError, match=r"\[N, "):       # one initial state per sequence
        packed_call(kernel, cu, rows=1, N=1)

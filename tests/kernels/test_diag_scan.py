"""diag_scan (Triton and PyTorch twin) against the sequential float32 reference."""
import pytest
import torch

from kernels_import import DEVICE, F32_TOL, HALF_TOL, assert_close, outputs_and_grads, scan_mod

NAMES = ["h", "h_T", "da", "dx", "dh0"]
naive = scan_mod.naive_diag_scan


def inputs(B, T, D, h0=True, dtype=torch.float32, signed=False):
    a = torch.rand(B, T, D, dtype=dtype) * 0.5 + 0.5
    if signed:  # negative and zero decays are legal and must not upset the scan
        a = a * torch.randint(-1, 2, (B, T, D)).to(dtype)
    x = torch.randn(B, T, D, dtype=dtype)
    h = torch.randn(B, D, dtype=dtype) if h0 else None
    return [t.to(DEVICE) if t is not None else None for t in (a, x, h)]


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("h0", [True, False], ids=["h0", "zero-h0"])
@pytest.mark.parametrize("B,T,D", [(1, 1, 5), (2, 7, 16), (2, 63, 33), (1, 65, 20), (1, 9, 130)],
                         ids=lambda v: str(v))
def test_matches_naive_fp32(B, T, D, h0, backend):
    ins = inputs(B, T, D, h0)
    got = outputs_and_grads(lambda *t: scan_mod.diag_scan(*t, backend=backend), ins)
    want = outputs_and_grads(naive, ins)
    assert_close(got, want, F32_TOL, NAMES)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_signed_and_zero_decay(backend):
    ins = inputs(2, 40, 8, signed=True)
    got = outputs_and_grads(lambda *t: scan_mod.diag_scan(*t, backend=backend), ins)
    assert_close(got, outputs_and_grads(naive, ins), F32_TOL, NAMES)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("T", [7, 65])
def test_half_against_fp32_naive(T, dtype):
    a, x, h0 = inputs(1, T, 24)
    a, x = a.to(dtype), x.to(dtype)           # the kernel sees half inputs ...
    got = outputs_and_grads(lambda *t: scan_mod.diag_scan(*t, backend="triton"), [a, x, h0])
    want = outputs_and_grads(naive, [a.float(), x.float(), h0])   # ... the oracle their value
    assert got[0].dtype == dtype and got[1].dtype == torch.float32
    assert_close(got, want, HALF_TOL, NAMES)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_gradcheck_fp64(backend):
    a, x, h0 = (t.double().requires_grad_(True) for t in inputs(1, 5, 3))
    assert torch.autograd.gradcheck(
        lambda *t: scan_mod.diag_scan(*t, backend=backend), (a, x, h0), eps=1e-6, atol=1e-8,
        fast_mode=backend == "triton")
    # longer than one time tile (BT = 64), through the cheap random-projection check
    a, x, h0 = (t.double().requires_grad_(True) for t in inputs(1, 67, 1))
    assert torch.autograd.gradcheck(
        lambda *t: scan_mod.diag_scan(*t, backend=backend), (a, x, h0), eps=1e-6, atol=1e-8,
        fast_mode=True)


def _loop(a, x, h0, reverse):
    """The recurrence written plainly, one step at a time, in float64."""
    a, x = a.double(), x.double()
    h = torch.zeros_like(x[:, 0]) if h0 is None else h0.double()
    out = [None] * x.shape[1]
    for t in (reversed(range(x.shape[1])) if reverse else range(x.shape[1])):
        h = a[:, t] * h + x[:, t]
        out[t] = h
    return torch.stack(out, 1), h


@pytest.mark.parametrize("backend", ["triton", "torch", "naive"])
@pytest.mark.parametrize("h0", [True, False], ids=["h0", "zero-h0"])
@pytest.mark.parametrize("T", [1, 7, 65, 130])  # one time tile, and carries across tiles (BT = 64)
def test_reverse_matches_the_loop_forward_and_gradients(backend, h0, T):
    """reverse=True is h_t = a_t h_{t+1} + x_t, h0 the state after the last step; its outputs and
    the gradients through them match autograd through the plain loop."""
    ins = inputs(2, T, 9, h0, signed=True)
    fn = (lambda *t: naive(*t, reverse=True)) if backend == "naive" else \
        (lambda *t: scan_mod.diag_scan(*t, reverse=True, backend=backend))
    got = outputs_and_grads(fn, ins)
    want = outputs_and_grads(lambda *t: _loop(*t, reverse=True), [t.double() if t is not None else None for t in ins])
    assert_close(got, want, F32_TOL, NAMES)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_reverse_gradcheck_fp64(backend):
    a, x, h0 = (t.double().requires_grad_(True) for t in inputs(1, 6, 3, signed=True))
    assert torch.autograd.gradcheck(
        lambda *t: scan_mod.diag_scan(*t, reverse=True, backend=backend), (a, x, h0), eps=1e-6, atol=1e-8,
        fast_mode=backend == "triton")


def test_empty_time_axis():
    a, x, h0 = inputs(2, 0, 4)
    h, hT = scan_mod.diag_scan(a, x, h0, backend="triton")
    assert h.shape == (2, 0, 4) and torch.equal(hT, h0)


@pytest.mark.parametrize("case,match", [
    (lambda a, x, h: (a[0], x, h), r"a must be 3-D \[B, T, D\], got 2-D"),
    (lambda a, x, h: (a[:, :3], x, h), r"a must have shape \[B, T, D\] = \(2, 5, 4\), got \(2, 3, 4\)"),
    (lambda a, x, h: (a, x, h[:, :2]), r"h0 must have shape \[B, D\] = \(2, 4\), got \(2, 2\)"),
    (lambda a, x, h: (a.double(), x, h), r"a and x must share a dtype"),
    (lambda a, x, h: (a.long(), x.long(), h), r"x must be float16, bfloat16, float32 or float64"),
], ids=["ndim", "shape", "h0-shape", "dtype-mismatch", "int"])
def test_rejects_bad_input(case, match):
    a, x, h0 = inputs(2, 5, 4)
    with pytest.raises(ValueError, match=match):
        scan_mod.diag_scan(*case(a, x, h0))


def test_rejects_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        scan_mod.diag_scan(*inputs(1, 2, 3), backend="cuda")

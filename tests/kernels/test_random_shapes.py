"""Random shapes (hypothesis) for the three Triton paths against their naive references."""
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernels_import import F32_TOL, assert_close, delta_mod, gla_mod, outputs_and_grads, scan_mod

SETTINGS = settings(max_examples=4, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
dims = st.integers(1, 2)
steps = st.integers(1, 70)
heads = st.integers(1, 16)


@SETTINGS
@given(B=dims, T=steps, D=st.integers(1, 40), h0=st.booleans())
def test_diag_scan_random(B, T, D, h0):
    a = torch.rand(B, T, D) * 2 - 1
    x = torch.randn(B, T, D)
    s = torch.randn(B, D) if h0 else None
    got = outputs_and_grads(lambda *t: scan_mod.diag_scan(*t, backend="triton"), [a, x, s])
    assert_close(got, outputs_and_grads(scan_mod.naive_diag_scan, [a, x, s]), F32_TOL,
                 ["h", "h_T", "da", "dx", "dh0"])


@SETTINGS
@given(B=dims, T=steps, H=dims, K=heads, V=heads, chunk=st.sampled_from([16, 32, 64]))
def test_gla_random(B, T, H, K, V, chunk):
    q, k, v = torch.randn(B, T, H, K), torch.randn(B, T, H, K), torch.randn(B, T, H, V)
    g = F.logsigmoid(torch.randn(B, T, H, K) * 2)
    s = torch.randn(B, H, K, V)
    got = outputs_and_grads(
        lambda *t: gla_mod.gla(*t[:4], None, t[4], chunk_size=chunk, backend="triton"),
        [q, k, v, g, s])
    want = outputs_and_grads(lambda *t: gla_mod.naive_gla(*t[:4], None, t[4]), [q, k, v, g, s])
    assert_close(got, want, F32_TOL, ["o", "S_T", "dq", "dk", "dv", "dg", "dh0"])


@SETTINGS
@given(B=dims, T=steps, H=dims, K=heads, V=heads, chunk=st.sampled_from([16, 32, 64]))
def test_delta_random(B, T, H, K, V, chunk):
    q, v = torch.randn(B, T, H, K), torch.randn(B, T, H, V)
    k = F.normalize(torch.randn(B, T, H, K), dim=-1)
    beta = 2 * torch.rand(B, T, H)
    s = torch.randn(B, H, K, V)
    got = outputs_and_grads(
        lambda *t: delta_mod.delta_rule(*t[:4], None, t[4], chunk_size=chunk, backend="triton"),
        [q, k, v, beta, s])
    want = outputs_and_grads(lambda *t: delta_mod.naive_delta_rule(*t[:4], None, t[4]),
                             [q, k, v, beta, s])
    assert_close(got, want, F32_TOL, ["o", "S_T", "dq", "dk", "dv", "dbeta", "dh0"])

"""Newton solve == the sequential loop, across cells, dtypes, lengths, segments and fallbacks."""
import warnings

import pytest
import torch

from pararnn_import import P

CELLS = {
    "ParaGRU": P.ParaGRU,
    "ParaLSTM": P.ParaLSTM,
    "DiagTanhRNN": P.DiagTanhRNN,
    "DenseGRU": P.DenseGRU,
}


def _setup(name: str, B: int, T: int, E: int, U: int, dtype, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    m = CELLS[name](E, U, generator=gen).to(dtype)
    xs = torch.randn(B, T, E, generator=gen, dtype=dtype)
    h0 = 0.5 * torch.randn(B, m.state_size, generator=gen, dtype=dtype)
    return m, xs, h0


@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("T", [1, 2, 63, 100])
def test_f64_matches_sequential(name, T):
    m, xs, h0 = _setup(name, 2, T, 3, 5, torch.float64, seed=T)
    solver = P.NewtonSolver(m.jacobian, m.block)
    with torch.no_grad():
        out = m(xs, h0, solver=solver)
        ref = m(xs, h0, mode="sequential")
    assert out.shape == (2, T, m.state_size) and out.dtype == torch.float64
    assert (out - ref).abs().max().item() <= 1e-10
    assert solver.stats.last_converged and solver.stats.fallbacks == 0
    # causal system: exact after T steps at most; a handful when J is right (a zero J from a
    # broken JVP would still converge, linearly, in ~T steps)
    assert solver.stats.last_iterations <= min(T, 12)


@pytest.mark.parametrize("name,T", [("ParaGRU", 1000), ("ParaGRU", 4096), ("ParaLSTM", 4096),
                                    ("DiagTanhRNN", 4096), ("DenseGRU", 1000)])
def test_f32_matches_sequential_long(name, T):
    m, xs, h0 = _setup(name, 2, T, 4, 16 if name != "DenseGRU" else 8, torch.float32)
    solver = P.NewtonSolver(m.jacobian, m.block)
    with torch.no_grad():
        out = m(xs, h0, solver=solver)
        ref = m(xs, h0, mode="sequential")
    rel = (out - ref).abs().max().item() / ref.abs().max().item()
    assert rel <= 1e-4, f"relative error {rel:.3g}"
    assert solver.stats.fallbacks == 0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ParaGRU", "ParaLSTM"])
def test_f32_matches_sequential_65536(name):
    m, xs, h0 = _setup(name, 1, 65536, 4, 8, torch.float32)
    solver = P.NewtonSolver(m.jacobian, m.block)
    with torch.no_grad():
        out = m(xs, h0, solver=solver)
        ref = m(xs, h0, mode="sequential")
    assert (out - ref).abs().max().item() / ref.abs().max().item() <= 1e-4
    assert solver.stats.fallbacks == 0


@pytest.mark.parametrize("name", ["ParaGRU", "ParaLSTM"])
@pytest.mark.parametrize("T", [64, 1024])
def test_bf16_within_bf16_accuracy(name, T):
    """bf16 in, bf16 out: no worse than the bf16 sequential loop, both against float64."""
    m64, xs, h0 = _setup(name, 2, T, 3, 16, torch.float64)
    ref = m64(xs, h0, mode="sequential").detach()
    m16 = CELLS[name](3, 16)
    m16.load_state_dict(m64.state_dict())
    m16 = m16.to(torch.bfloat16)
    solver = P.NewtonSolver(m16.jacobian, m16.block)
    with torch.no_grad():
        out = m16(xs.bfloat16(), h0.bfloat16(), solver=solver)
        seq = m16(xs.bfloat16(), h0.bfloat16(), mode="sequential")
    assert out.dtype == torch.bfloat16
    err_newton = (out.double() - ref).abs().max().item()
    err_seq = (seq.double() - ref).abs().max().item()
    assert err_newton <= 3 * err_seq + 1e-2, (err_newton, err_seq)
    assert solver.stats.fallbacks == 0


@pytest.mark.parametrize("name", ["ParaGRU", "ParaLSTM", "DenseGRU"])
@pytest.mark.parametrize("split", [1, 30, 61])
def test_segments_carry_the_state(name, split):
    m, xs, h0 = _setup(name, 2, 62, 3, 4, torch.float64)
    solver = P.NewtonSolver(m.jacobian, m.block)
    with torch.no_grad():
        whole = m(xs, h0, solver=solver)
        first = m(xs[:, :split], h0, solver=solver)
        second = m(xs[:, split:], first[:, -1], solver=solver)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, rtol=0, atol=1e-10)
    assert solver.stats.calls == 3


def test_scan_backends_agree():
    m, xs, h0 = _setup("ParaLSTM", 2, 40, 3, 4, torch.float64)
    cell, us, params = m.lowered(xs)
    outs = [P.NewtonSolver("block", 2, inner_scan=b).solve(cell, h0, us, *params)
            for b in ("naive", "torch")]
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=1e-12)


def test_triton_scan_backend_in_solver(nan_empty):
    pytest.importorskip("triton")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    m, xs, h0 = _setup("ParaGRU", 1, 12, 3, 4, torch.float32)
    m, xs, h0 = m.to(device), xs.to(device), h0.to(device)
    cell, us, params = m.lowered(xs)
    with torch.no_grad():
        out = P.NewtonSolver("diag", inner_scan="triton").solve(cell, h0, us, *params)
        ref = P.sequential_loop(cell, h0, us, *params)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ fallback and stats
def _divergent(T: int = 128):
    gen = torch.Generator().manual_seed(3)
    m = P.DivergentCell(3, 4, generator=gen).double()
    xs = torch.randn(2, T, 3, generator=gen, dtype=torch.float64)
    return m, xs, torch.zeros(2, 4, dtype=torch.float64)


def test_divergent_cell_falls_back_with_warning_and_counter():
    m, xs, h0 = _divergent()
    solver = P.NewtonSolver("diag")
    with pytest.warns(P.NewtonFallbackWarning, match="falling back to the sequential loop"):
        out = solver(m.step, h0, xs, *m.cell_params())
    ref = P.sequential_loop(m.step, h0, xs, *m.cell_params())
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    st = solver.stats
    assert (st.calls, st.fallbacks, st.last_converged) == (1, 1, False)
    assert "diverged" in st.last_fallback_reason or "non-finite" in st.last_fallback_reason
    st.reset()
    assert (st.calls, st.fallbacks, st.last_fallback_reason) == (0, 0, None)


def test_not_converged_falls_back_and_raise_mode():
    m, xs, h0 = _setup("ParaGRU", 2, 50, 3, 4, torch.float64)
    cell, us, params = m.lowered(xs)
    solver = P.NewtonSolver("diag", max_iter=1)
    with pytest.warns(P.NewtonFallbackWarning, match="not converged in 1 Newton steps"):
        out = solver.solve(cell, h0, us, *params)
    torch.testing.assert_close(out, P.sequential_loop(cell, h0, us, *params))
    with pytest.raises(P.NewtonFailedError, match="not converged"):
        P.NewtonSolver("diag", max_iter=1, on_failure="raise").solve(cell, h0, us, *params)


def test_newton_scan_updates_the_stats_it_is_given_and_no_global_ones():
    m, xs, h0 = _setup("DiagTanhRNN", 1, 20, 3, 4, torch.float64)
    mine = P.SolverStats()
    P.newton_scan(m.step, h0, xs, *m.cell_params(), stats=mine)
    assert mine.calls == 1 and mine.last_iterations >= 1 and mine.last_residual <= 1e-12
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a converging solve must not warn
        P.newton_scan(m.step, h0, xs, *m.cell_params())
    assert mine.calls == 1                      # a call without stats touches nobody's
    assert not hasattr(P, "default_stats") and not hasattr(P, "stats")


def test_bad_inputs_are_rejected_with_shapes():
    m, xs, h0 = _setup("ParaGRU", 2, 5, 3, 4, torch.float64)
    with pytest.raises(ValueError, match=r"h0 \(3, 4\), xs \(2, 5, 3\)"):
        P.newton_scan(m.step, h0[:1].expand(3, 4), xs, *m.cell_params())
    with pytest.raises(ValueError, match="N divisible"):
        P.newton_scan(m.step, h0, xs, *m.cell_params(), jacobian="block", block=3)
    with pytest.raises(ValueError, match="cell returned shape"):
        P.newton_scan(lambda h, x: h[:, :2], h0, xs)
    with pytest.raises(ValueError, match="jacobian must be"):
        P.NewtonSolver("tridiagonal")


def test_closed_form_jac_fn_matches_jvp_path():
    m, xs, h0 = _setup("ParaGRU", 2, 70, 3, 5, torch.float64)
    cell, us, params = m.lowered(xs)
    rows_h = torch.randn(9, 5, dtype=torch.float64)
    rows_u = us.detach().reshape(-1, us.shape[-1])[:9]
    f1, J1 = P.value_and_jacobian(cell, rows_h, rows_u, params, "diag")
    f2, J2 = P.ParaGRU.recurrent_value_and_jacobian(rows_h, rows_u, *params)
    torch.testing.assert_close((f1, J1), (f2, J2), rtol=1e-13, atol=1e-13)
    leaves = (h0.requires_grad_(), us.detach().requires_grad_(), params[0])
    solver = P.NewtonSolver("diag", jac_fn=P.ParaGRU.recurrent_value_and_jacobian)
    out = solver(cell, *leaves)
    ref = P.sequential_loop(cell, *leaves)
    assert (out - ref).abs().max().item() <= 1e-10 and solver.stats.last_iterations <= 12
    for a, b in zip(torch.autograd.grad(out.sum(), leaves), torch.autograd.grad(ref.sum(), leaves)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-8)

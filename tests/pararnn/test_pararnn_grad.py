"""The adjoint backward: gradcheck, and equality with autograd through the sequential loop."""
import pytest
import torch

from pararnn_import import CELLS, P
from pararnn_import import cell_leaves as _leaves


@pytest.mark.parametrize("name", list(CELLS))
def test_gradcheck_f64(name):
    m, h0, xs, params = _leaves(name, 2, 5, 2, 3)
    solver = P.NewtonSolver(m.jacobian, m.block)
    assert torch.autograd.gradcheck(lambda h, x, *p: solver(m.step, h, x, *p), (h0, xs, *params))


@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("T", [1, 33])
def test_grads_equal_autograd_through_sequential_loop(name, T):
    m, h0, xs, params = _leaves(name, 2, T, 3, 4, seed=T)
    solver = P.NewtonSolver(m.jacobian, m.block)
    w = torch.randn(2, T, m.state_size, dtype=torch.float64)
    leaves = (h0, xs, *params)
    g_newton = torch.autograd.grad((solver(m.step, h0, xs, *params) * w).sum(), leaves)
    g_seq = torch.autograd.grad((P.sequential_loop(m.step, h0, xs, *params) * w).sum(), leaves)
    for i, (a, b) in enumerate(zip(g_newton, g_seq)):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() <= 1e-8, f"gradient {i} differs"


@pytest.mark.parametrize("name", ["ParaGRU", "ParaLSTM"])
def test_module_grads_with_hoisted_projection(name):
    """The modules hand the solver pre-projected inputs; every parameter still gets its grad."""
    gen = torch.Generator().manual_seed(1)
    m = CELLS[name](3, 4, generator=gen).double()
    xs = torch.randn(2, 40, 3, generator=gen, dtype=torch.float64)
    grads = []
    for mode in ("newton", "sequential"):
        m.zero_grad()
        (m(xs, mode=mode) ** 2).sum().backward()
        grads.append([p.grad.clone() for p in m.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-8)


def test_grads_when_only_some_inputs_require_grad():
    m, h0, xs, params = _leaves("ParaGRU", 2, 9, 3, 4)
    h0 = h0.detach()
    W = params[0].detach()
    out = P.newton_scan(m.step, h0, xs, W, *params[1:])
    gx, gb = torch.autograd.grad(out.sum(), (xs, params[1]))
    ref = P.sequential_loop(m.step, h0, xs, W, *params[1:])
    rx, rb = torch.autograd.grad(ref.sum(), (xs, params[1]))
    torch.testing.assert_close(gx, rx, rtol=0, atol=1e-10)
    torch.testing.assert_close(gb, rb, rtol=0, atol=1e-10)


def test_grads_through_segments():
    m, h0, xs, params = _leaves("ParaLSTM", 1, 30, 3, 2)
    solver = P.NewtonSolver("block", 2)
    first = solver(m.step, h0, xs[:, :13], *params)
    second = solver(m.step, first[:, -1], xs[:, 13:], *params)
    loss = torch.cat([first, second], 1).pow(2).sum()
    g = torch.autograd.grad(loss, (h0, xs, *params))
    r = torch.autograd.grad(P.sequential_loop(m.step, h0, xs, *params).pow(2).sum(), (h0, xs, *params))
    for a, b in zip(g, r):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", ["ParaGRU", "ParaLSTM"])
def test_fused_step_equals_sequential_loop_values_and_grads(name):
    """fuse=True runs each Newton step (and the adjoint's Jacobian) as one torch.compile'd
    graph; states and all gradients still equal the sequential loop's autograd in float64."""
    T = 37
    m, h0, xs, params = _leaves(name, 2, T, 3, 4, seed=5)
    solver = P.NewtonSolver(m.jacobian, m.block, fuse=True)
    w = torch.randn(2, T, m.state_size, dtype=torch.float64)
    leaves = (h0, xs, *params)
    h_fused = solver(m.step, h0, xs, *params)
    h_seq = P.sequential_loop(m.step, h0, xs, *params)
    assert (h_fused - h_seq).abs().max().item() <= 1e-10
    assert solver.stats.last_converged and solver.stats.fallbacks == 0
    g_fused = torch.autograd.grad((h_fused * w).sum(), leaves)
    g_seq = torch.autograd.grad((h_seq * w).sum(), leaves)
    for i, (a, b) in enumerate(zip(g_fused, g_seq)):
        assert (a - b).abs().max().item() <= 1e-8, f"gradient {i} differs"
    assert set(solver._fused) == {"_system", "_reverse_coefficients", "_cell_vjp"}

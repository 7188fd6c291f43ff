"""Newton a window of steps at a time (`chunk`) == the sequential loop: states and every gradient,
for each Jacobian structure, windows that do not divide T, and per-step parameters (`step_axes`)."""
import pytest
import torch

from pararnn_import import CELLS, P
from pararnn_import import cell_leaves as _leaves
from ncd.backends.pararnn.chunks import StepAxis, window_steps, windows


def test_windows_cover_the_sequence_once():
    assert windows(10, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert windows(3, 5) == [slice(0, 3)]
    assert window_steps("all", 2, 100, 8, torch.device("cpu")) == 100
    assert window_steps(7, 2, 100, 8, torch.device("cpu")) == 7
    with pytest.raises(ValueError, match="chunk"):
        P.NewtonSolver(chunk=0)


@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("chunk", [1, 5, 36])
def test_windows_equal_the_sequential_loop_values_and_grads(name, chunk):
    T = 37
    m, h0, xs, params = _leaves(name, 2, T, 3, 4, seed=chunk)
    solver = P.NewtonSolver(m.jacobian, m.block, chunk=chunk)
    w = torch.randn(2, T, m.state_size, dtype=torch.float64)
    leaves = (h0, xs, *params)
    h_win = solver(m.step, h0, xs, *params)
    h_seq = P.sequential_loop(m.step, h0, xs, *params)
    assert (h_win - h_seq).abs().max().item() <= 1e-10
    assert solver.stats.last_converged and solver.stats.fallbacks == 0
    g_win = torch.autograd.grad((h_win * w).sum(), leaves)
    g_seq = torch.autograd.grad((h_seq * w).sum(), leaves)
    for i, (a, b) in enumerate(zip(g_win, g_seq)):
        assert (a - b).abs().max().item() <= 1e-8, f"gradient {i} differs"


def test_windows_recompute_the_adjoint_jacobian_in_half_precision():
    """bfloat16 states: the forward keeps no J (the iterate is rounded), the backward takes
    each window's again; gradients match the loop's to bfloat16 rounding."""
    m, h0, xs, params = _leaves("ParaGRU", 2, 29, 3, 4)
    to = lambda t: t.detach().to(torch.bfloat16).requires_grad_()
    h0, xs, params = to(h0), to(xs), [to(p) for p in params]
    leaves = (h0, xs, *params)
    solver = P.NewtonSolver("diag", chunk=4)
    g_win = torch.autograd.grad(solver(m.step, h0, xs, *params).float().sum(), leaves)
    g_seq = torch.autograd.grad(P.sequential_loop(m.step, h0, xs, *params).float().sum(), leaves)
    for a, b in zip(g_win, g_seq):  # bfloat16 keeps 8 bits: ~1% of the largest gradient
        scale = b.float().abs().max().item()
        assert (a.float() - b.float()).abs().max().item() <= 0.03 * scale


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("chunk", [3, "all"])
def test_per_step_parameters_are_cut_to_each_window(reverse, chunk):
    """A cell that reads its per-step input u from a parameter [T, B, N] (steps along dim 0;
    reversed: step s reads u[T-1-s]). Reference: the recurrence written plainly,
    h_t = tanh(a * h_{t-1} + u_{s(t)}), as a Python loop under autograd."""
    B, T, N = 2, 11, 3
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(N, dtype=torch.float64, generator=gen).requires_grad_()
    u = torch.randn(T, B, N, dtype=torch.float64, generator=gen).requires_grad_()
    h0 = torch.randn(B, N, dtype=torch.float64, generator=gen).requires_grad_()
    xs = torch.zeros(B, T, 0, dtype=torch.float64)

    def cell(h, _x, a, u):  # rows are (b, t) for the window's steps, b slowest
        steps = u.shape[0]
        uu = (u.flip(0) if reverse else u).transpose(0, 1).reshape(B * steps, N)
        return torch.tanh(a * h + uu)

    cell.step_axes = [None, StepAxis(0, reverse)]
    solver = P.NewtonSolver("diag", chunk=chunk)
    h_win = solver(cell, h0, xs, a, u)
    h, out = h0, []
    for t in range(T):
        h = torch.tanh(a * h + u[T - 1 - t if reverse else t])
        out.append(h)
    h_ref = torch.stack(out, dim=1)
    torch.testing.assert_close(h_win, h_ref, rtol=0, atol=1e-10)
    w = torch.randn(B, T, N, dtype=torch.float64, generator=gen)
    for g1, g2 in zip(torch.autograd.grad((h_win * w).sum(), (h0, a, u)),
                      torch.autograd.grad((h_ref * w).sum(), (h0, a, u))):
        torch.testing.assert_close(g1, g2, rtol=0, atol=1e-8)


def test_a_per_step_parameter_needs_one_entry_per_step():
    def cell(h, x, u):
        return h + u

    cell.step_axes = [StepAxis(0)]
    with pytest.raises(ValueError, match="one per step"):
        P.NewtonSolver("diag")(cell, torch.zeros(1, 2), torch.zeros(1, 4, 0), torch.zeros(3, 2))

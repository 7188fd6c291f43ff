"""Reference cells for the Newton solver, each a pure `step(h, x, *params) -> h'` on rows.

Every cell is an `nn.Module` holding its parameters, with
  * `step(h [M, N], x [M, E], *params) -> [M, N]`: pure in its arguments (uses the params passed,
    never `self`'s), which is the signature `newton_scan` and the compiler pass call;
  * `cell_params()`: the tuple of parameters in `step`'s order;
  * `lowered(xs)`: (cell, per-step inputs, params) for the solver; the diagonal cells hoist the
    input projection x W + b out of the Newton loop (computed once for all t, by plain autograd)
    and hand the solver only the recurrent part;
  * `jacobian`, `block`: the Jacobian structure, proven by hand here and re-checked in the tests
    with `check_jacobian_structure`.

Equations (σ = sigmoid, ⊙ elementwise, a*, p* diagonal vectors of size U = hidden units):

ParaGRU (state h, N = U; diagonal Jacobian)
    [u_z, u_r, u_h] = x W + b
    z = σ(a_z ⊙ h + u_z),  r = σ(a_r ⊙ h + u_r)
    ĥ = tanh(a_h ⊙ (h ⊙ r) + u_h)
    h' = (1 - z) ⊙ h + z ⊙ ĥ

ParaLSTM (CIFG, diagonal recurrence, peepholes; state s = [c_1, h_1, c_2, h_2, …], N = 2U,
interleaved so that unit i's (c_i, h_i) is the contiguous 2×2 block i of the Jacobian)
    [u_f, u_c, u_o] = x W + b
    f  = σ(a_f ⊙ h + p_f ⊙ c + u_f),   i = 1 - f          (coupled input and forget gates)
    c' = f ⊙ c + i ⊙ tanh(a_c ⊙ h + u_c)
    o  = σ(a_o ⊙ h + p_o ⊙ c' + u_o)                    (output peephole sees the new cell)
    h' = o ⊙ tanh(c')

DiagTanhRNN (diagonal):   h' = tanh(a ⊙ h + x W + b)
DenseGRU (dense Jacobian, for the "dense" path and as a coupled cell that "diag" must reject):
    z = σ(h U_z + x W_z + b_z),  r = σ(h U_r + x W_r + b_r)
    h' = (1 - z) ⊙ h + z ⊙ tanh((r ⊙ h) U_h + x W_h + b_h)
DivergentCell (diagonal, |∂f/∂h| up to 3):   h' = 3 sin(h) + x W
    a chaotic map: perturbations grow ~e^{λt} with λ > 0, so Newton's linearisation about a wrong
    guess is useless past a few steps and the solve must fall back. (A *linear* cell h' = 3h + x
    would not do: one Newton step solves a linear recurrence exactly.)
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from ncd.backends.pararnn.jacobian import JacobianKind
from ncd.backends.pararnn.naive import sequential_loop
from ncd.backends.pararnn.solver import NewtonSolver

Cell = Callable[..., Tensor]


def _uniform(shape: tuple[int, ...], bound: float, gen: torch.Generator | None) -> Tensor:
    return (torch.rand(shape, generator=gen) * 2 - 1) * bound


class ParaCell(nn.Module):
    """Base: a recurrent cell the solver can run, plus the sequential twin."""

    jacobian: JacobianKind = "dense"
    block: int = 1
    state_size: int

    def step(self, h: Tensor, x: Tensor, *params: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def cell_params(self) -> tuple[Tensor, ...]:
        return tuple(self.parameters())

    def lowered(self, xs: Tensor) -> tuple[Cell, Tensor, tuple[Tensor, ...]]:
        """(cell, per-step inputs [B, T, ...], params) to hand to the solver."""
        return self.step, xs, self.cell_params()

    def forward(self, xs: Tensor, h0: Tensor | None = None, solver: NewtonSolver | None = None,
                mode: str = "newton") -> Tensor:
        """All states [B, T, N] for xs [B, T, E]; mode "newton" or "sequential"."""
        if h0 is None:
            h0 = xs.new_zeros(xs.shape[0], self.state_size)
        cell, us, params = self.lowered(xs)
        if mode == "sequential":
            return sequential_loop(cell, h0, us, *params)
        if mode != "newton":
            raise ValueError(f"mode must be 'newton' or 'sequential', got {mode!r}")
        solver = solver or NewtonSolver(self.jacobian, self.block)
        return solver(cell, h0, us, *params)


class ParaGRU(ParaCell):
    jacobian, block = "diag", 1

    def __init__(self, input_size: int, hidden_size: int, generator: torch.Generator | None = None):
        super().__init__()
        U, s = hidden_size, 1 / math.sqrt(input_size)
        self.state_size = U
        self.W = nn.Parameter(_uniform((input_size, 3 * U), s, generator))
        self.b = nn.Parameter(_uniform((3 * U,), s, generator))
        self.a = nn.Parameter(_uniform((3, U), 1.0, generator))  # a_z, a_r, a_h

    @staticmethod
    def recurrent(h: Tensor, u: Tensor, a: Tensor) -> Tensor:
        """The cell on pre-projected inputs u = x W + b ([M, 3U])."""
        u_z, u_r, u_h = u.chunk(3, dim=-1)
        z = torch.sigmoid(a[0] * h + u_z)
        r = torch.sigmoid(a[1] * h + u_r)
        h_tilde = torch.tanh(a[2] * (h * r) + u_h)
        return (1 - z) * h + z * h_tilde

    @staticmethod
    def recurrent_value_and_jacobian(h: Tensor, u: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        """`recurrent` and its diagonal Jacobian in closed form (a `jac_fn` for the solver):
        ∂h'/∂h = (1 - z) + z'(ĥ - h) + z (1 - ĥ²) a_h (r + h r'),  σ' = σ(1 - σ)."""
        u_z, u_r, u_h = u.chunk(3, dim=-1)
        z = torch.sigmoid(a[0] * h + u_z)
        r = torch.sigmoid(a[1] * h + u_r)
        h_tilde = torch.tanh(a[2] * (h * r) + u_h)
        dz = z * (1 - z) * a[0]
        dr = r * (1 - r) * a[1]
        dh_tilde = (1 - h_tilde * h_tilde) * a[2] * (r + h * dr)
        f = (1 - z) * h + z * h_tilde
        return f, (1 - z) + dz * (h_tilde - h) + z * dh_tilde

    def step(self, h: Tensor, x: Tensor, W: Tensor, b: Tensor, a: Tensor) -> Tensor:
        return self.recurrent(h, x @ W + b, a)

    def cell_params(self) -> tuple[Tensor, ...]:
        return (self.W, self.b, self.a)

    def lowered(self, xs: Tensor):
        return self.recurrent, xs @ self.W + self.b, (self.a,)


class ParaLSTM(ParaCell):
    jacobian, block = "block", 2

    def __init__(self, input_size: int, hidden_size: int, generator: torch.Generator | None = None):
        super().__init__()
        U, s = hidden_size, 1 / math.sqrt(input_size)
        self.state_size = 2 * U
        self.W = nn.Parameter(_uniform((input_size, 3 * U), s, generator))
        self.b = nn.Parameter(_uniform((3 * U,), s, generator))
        self.a = nn.Parameter(_uniform((3, U), 1.0, generator))  # a_f, a_c, a_o
        self.p = nn.Parameter(_uniform((2, U), 0.5, generator))  # p_f, p_o

    @staticmethod
    def recurrent(s: Tensor, u: Tensor, a: Tensor, p: Tensor) -> Tensor:
        """The cell on pre-projected inputs u = x W + b ([M, 3U]); s = interleaved [c, h]."""
        c, h = s[..., 0::2], s[..., 1::2]
        u_f, u_c, u_o = u.chunk(3, dim=-1)
        f = torch.sigmoid(a[0] * h + p[0] * c + u_f)
        c_new = f * c + (1 - f) * torch.tanh(a[1] * h + u_c)
        o = torch.sigmoid(a[2] * h + p[1] * c_new + u_o)
        h_new = o * torch.tanh(c_new)
        return torch.stack([c_new, h_new], dim=-1).flatten(-2)

    def step(self, s: Tensor, x: Tensor, W: Tensor, b: Tensor, a: Tensor, p: Tensor) -> Tensor:
        return self.recurrent(s, x @ W + b, a, p)

    def cell_params(self) -> tuple[Tensor, ...]:
        return (self.W, self.b, self.a, self.p)

    def lowered(self, xs: Tensor):
        return self.recurrent, xs @ self.W + self.b, (self.a, self.p)

    @staticmethod
    def hidden(states: Tensor) -> Tensor:
        """h out of interleaved [c, h] states [..., 2U] -> [..., U]."""
        return states[..., 1::2]


class DiagTanhRNN(ParaCell):
    jacobian, block = "diag", 1

    def __init__(self, input_size: int, hidden_size: int, generator: torch.Generator | None = None):
        super().__init__()
        s = 1 / math.sqrt(input_size)
        self.state_size = hidden_size
        self.W = nn.Parameter(_uniform((input_size, hidden_size), s, generator))
        self.b = nn.Parameter(_uniform((hidden_size,), s, generator))
        self.a = nn.Parameter(_uniform((hidden_size,), 0.9, generator))

    def step(self, h: Tensor, x: Tensor, W: Tensor, b: Tensor, a: Tensor) -> Tensor:
        return torch.tanh(a * h + x @ W + b)

    def cell_params(self) -> tuple[Tensor, ...]:
        return (self.W, self.b, self.a)


class DenseGRU(ParaCell):
    jacobian, block = "dense", 1

    def __init__(self, input_size: int, hidden_size: int, generator: torch.Generator | None = None):
        super().__init__()
        N, s = hidden_size, 1 / math.sqrt(input_size)
        self.state_size = N
        self.W = nn.Parameter(_uniform((input_size, 3 * N), s, generator))
        self.b = nn.Parameter(_uniform((3 * N,), s, generator))
        self.U = nn.Parameter(_uniform((N, 3 * N), 1 / math.sqrt(N), generator))

    def step(self, h: Tensor, x: Tensor, W: Tensor, b: Tensor, U: Tensor) -> Tensor:
        N = h.shape[-1]
        w_z, w_r, w_h = (x @ W + b).chunk(3, dim=-1)
        z = torch.sigmoid(h @ U[:, :N] + w_z)
        r = torch.sigmoid(h @ U[:, N:2 * N] + w_r)
        h_tilde = torch.tanh((r * h) @ U[:, 2 * N:] + w_h)
        return (1 - z) * h + z * h_tilde

    def cell_params(self) -> tuple[Tensor, ...]:
        return (self.W, self.b, self.U)


class DivergentCell(ParaCell):
    jacobian, block = "diag", 1

    def __init__(self, input_size: int, hidden_size: int, gain: float = 3.0,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.state_size = hidden_size
        self.W = nn.Parameter(_uniform((input_size, hidden_size), 1.0, generator))
        self.a = nn.Parameter(torch.full((hidden_size,), gain))

    def step(self, h: Tensor, x: Tensor, W: Tensor, a: Tensor) -> Tensor:
        return a * torch.sin(h) + x @ W

    def cell_params(self) -> tuple[Tensor, ...]:
        return (self.W, self.a)

"""The ParaRNN package as the tests import it (`ncd.backends.pararnn`), and the cells and
float64 leaves the solver tests share."""
import torch

import ncd.backends.pararnn as P  # noqa: F401

CELLS = {
    "ParaGRU": P.ParaGRU,
    "ParaLSTM": P.ParaLSTM,
    "DiagTanhRNN": P.DiagTanhRNN,
    "DenseGRU": P.DenseGRU,
}


def cell_leaves(name: str, B: int, T: int, E: int, U: int, seed: int = 0):
    """A cell, an initial state, inputs and detached copies of its parameters, all float64 leaves."""
    gen = torch.Generator().manual_seed(seed)
    m = CELLS[name](E, U, generator=gen).double()
    xs = torch.randn(B, T, E, generator=gen, dtype=torch.float64, requires_grad=True)
    h0 = (0.5 * torch.randn(B, m.state_size, generator=gen, dtype=torch.float64)).requires_grad_()
    params = [p.detach().clone().requires_grad_() for p in m.cell_params()]
    return m, h0, xs, params

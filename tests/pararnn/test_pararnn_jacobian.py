"""Structured Jacobians by JVP against jacrev, and the structure checker."""
import pytest
import torch
from torch.func import jacrev

from pararnn_import import P

# (cell class, kind, block) claims that are true
TRUE_CLAIMS = [
    (P.ParaGRU, "diag", 1), (P.DiagTanhRNN, "diag", 1), (P.DivergentCell, "diag", 1),
    (P.ParaLSTM, "block", 2), (P.DenseGRU, "dense", 1),
    (P.ParaGRU, "block", 2), (P.ParaLSTM, "dense", 1),  # weaker claims stay true
]
FALSE_CLAIMS = [(P.DenseGRU, "diag", 1), (P.DenseGRU, "block", 2), (P.ParaLSTM, "diag", 1)]


def _point(cls, B: int = 3, E: int = 3, U: int = 4, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    m = cls(E, U, generator=gen).double()
    h = torch.randn(B, m.state_size, generator=gen, dtype=torch.float64)
    x = torch.randn(B, E, generator=gen, dtype=torch.float64)
    return m, h, x


@pytest.mark.parametrize("cls,kind,block", TRUE_CLAIMS,
                         ids=[f"{c.__name__}-{k}{b}" for c, k, b in TRUE_CLAIMS])
def test_checker_accepts_true_structure(cls, kind, block):
    m, h, x = _point(cls)
    assert P.check_jacobian_structure(m.step, h, x, m.cell_params(), kind, block)


@pytest.mark.parametrize("cls,kind,block", FALSE_CLAIMS,
                         ids=[f"{c.__name__}-{k}{b}" for c, k, b in FALSE_CLAIMS])
def test_checker_rejects_false_structure(cls, kind, block):
    m, h, x = _point(cls)
    assert not P.check_jacobian_structure(m.step, h, x, m.cell_params(), kind, block)
    assert P.structure_violation(m.step, h, x, m.cell_params(), kind, block) > 1e-3


def test_checker_rejects_batch_mixing():
    h = torch.randn(3, 4, dtype=torch.float64)
    x = torch.randn(3, 2, dtype=torch.float64)
    assert not P.check_jacobian_structure(lambda h, x: torch.tanh(h + h.mean(0)), h, x)


@pytest.mark.parametrize("cls,kind,block", TRUE_CLAIMS[:5],
                         ids=[f"{c.__name__}-{k}{b}" for c, k, b in TRUE_CLAIMS[:5]])
def test_jvp_jacobians_equal_jacrev(cls, kind, block):
    m, h, x = _point(cls)
    params = m.cell_params()
    f, J = P.value_and_jacobian(m.step, h, x, params, kind, block if kind != "dense" else h.shape[1])
    torch.testing.assert_close(f, m.step(h, x, *params))
    full = torch.stack([jacrev(lambda hh: m.step(hh[None], x[i:i + 1], *params)[0])(h[i])
                        for i in range(h.shape[0])])  # [B, N, N]
    if kind == "diag":
        dense = torch.diag_embed(J)
    else:
        dense = torch.stack([torch.block_diag(*Jb) for Jb in J])
    torch.testing.assert_close(dense, full, rtol=1e-12, atol=1e-12)


def test_ones_tangent_on_coupled_cell_is_wrong():
    """Why the structure must be proven: "diag" on DenseGRU gives row sums, not the diagonal."""
    m, h, x = _point(P.DenseGRU)
    _, J = P.value_and_jacobian(m.step, h, x, m.cell_params(), "diag")
    full = jacrev(lambda hh: m.step(hh[None], x[:1], *m.cell_params())[0])(h[0])
    torch.testing.assert_close(J[0], full.sum(1))
    assert not torch.allclose(J[0], full.diagonal())


VJP_CLAIMS = [c for c in TRUE_CLAIMS if c[1] != "dense"]


@pytest.mark.parametrize("cls,kind,block", VJP_CLAIMS,
                         ids=[f"{c.__name__}-{k}{b}" for c, k, b in VJP_CLAIMS])
def test_vjp_jacobians_equal_jacrev(cls, kind, block):
    """method="vjp" (reverse mode, what the eager solver uses) gives the same structured J."""
    m, h, x = _point(cls)
    params = m.cell_params()
    f, J = P.value_and_jacobian(m.step, h, x, params, kind, block, method="vjp")
    torch.testing.assert_close(f, m.step(h, x, *params))
    full = torch.stack([jacrev(lambda hh: m.step(hh[None], x[i:i + 1], *params)[0])(h[i])
                        for i in range(h.shape[0])])
    dense = torch.diag_embed(J) if kind == "diag" else torch.stack([torch.block_diag(*Jb) for Jb in J])
    torch.testing.assert_close(dense, full, rtol=1e-12, atol=1e-12)


def test_ones_cotangent_on_coupled_cell_is_wrong():
    """The reverse-mode twin of the row-sum test: "diag" by VJP on DenseGRU gives column sums."""
    m, h, x = _point(P.DenseGRU)
    _, J = P.value_and_jacobian(m.step, h, x, m.cell_params(), "diag", method="vjp")
    full = jacrev(lambda hh: m.step(hh[None], x[:1], *m.cell_params())[0])(h[0])
    torch.testing.assert_close(J[0], full.sum(0))
    assert not torch.allclose(J[0], full.diagonal())


def test_vjp_jacobian_of_a_cell_that_ignores_h_is_zero():
    h = torch.randn(3, 4, dtype=torch.float64)
    x = torch.randn(3, 4, dtype=torch.float64)
    f, J = P.value_and_jacobian(lambda hh, xx: torch.tanh(xx), h, x, (), "diag", method="vjp")
    torch.testing.assert_close(f, torch.tanh(x))
    assert torch.equal(J, torch.zeros_like(h))

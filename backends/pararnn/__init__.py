"""ParaRNN backend: nonlinear recurrences solved parallel-in-time by Newton + linear scans.

    naive.py       sequential cell loop and sequential scan (the slow twins)
    scan.py        `linear_scan` dispatch (Triton on CUDA): diagonal coefficients run the one
                   diagonal scan of ncd.backends.triton.diagonal, k×k blocks its odd-even twin
    scan_triton.py chunked Triton scan kernels for k×k blocks (diagonal: the diagonal kernel)
    jacobian.py    structured Jacobians by JVP; `check_jacobian_structure`
    solver.py      `NewtonSolver`, `newton_scan`, adjoint backward, stats
    chunks.py      windows of steps per cell evaluation; per-step parameters (`StepAxis`)
    cells.py       ParaGRU, ParaLSTM, DiagTanhRNN, DenseGRU, DivergentCell
"""
from ncd.backends.pararnn.cells import DenseGRU, DiagTanhRNN, DivergentCell, ParaCell, ParaGRU, ParaLSTM
from ncd.backends.pararnn.jacobian import check_jacobian_structure, structure_violation, value_and_jacobian
from ncd.backends.pararnn.naive import scan_naive, sequential_loop
from ncd.backends.pararnn.scan import linear_scan, scan_parallel
from ncd.backends.pararnn.solver import (
    NewtonFailedError,
    NewtonFallbackWarning,
    NewtonSolver,
    SolverStats,
    default_tol,
    newton_scan,
)

__all__ = [
    "DenseGRU", "DiagTanhRNN", "DivergentCell", "ParaCell", "ParaGRU", "ParaLSTM",
    "check_jacobian_structure", "structure_violation", "value_and_jacobian",
    "scan_naive", "sequential_loop", "linear_scan", "scan_parallel",
    "NewtonFailedError", "NewtonFallbackWarning", "NewtonSolver", "SolverStats",
    "default_tol", "newton_scan",
]

"""What a scan costs run each way (sequential, parallel scan, Newton, chunked, attention form,
FFT): forward FLOPs and sequential depth as sympy formulas (docs/cost.md), which of the ways a
recurrence admits (the scan-backend registry decides, ncd/scan_backends.py) and which one the
compiler runs (the recurrence pass's plan).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sympy

from ncd import scan_backends
from ncd.ir import Node


@dataclass
class ScanCost:
    path: str
    id: str
    axis: str
    length: sympy.Expr
    state: sympy.Expr  # carried elements per step (lifted dims included)
    step_flops: sympy.Expr  # forward FLOPs of one step
    chosen: str
    strategies: dict[str, dict[str, sympy.Expr]]
    reason: str = ""
    backend: str = "sequential"  # the scan backend the compiler runs it with


NEWTON_ITERATIONS = 3
CHUNK = 64


def scan_strategies(step: sympy.Expr, length: sympy.Expr, state: sympy.Expr, lifted: sympy.Expr,
                    structure: str = "dense", block: int | None = None) -> dict[str, dict[str, sympy.Expr]]:
    """Forward FLOPs and sequential depth of each way to run a scan (estimates; docs/cost.md).

    ``step``: FLOPs of one step; ``state``: carried elements per step (n per lifted row, so
    ``state / lifted`` is the per-row state size n).
    - sequential: T steps one after another.
    - fused_rnn (a step proved to be an Elman, GRU or LSTM cell): the same T steps' arithmetic,
      one after another, inside torch's fused RNN operator (nn.RNN/GRU/LSTM's kernel) — the same
      FLOPs and depth as the loop; what it saves is the per-step dispatch, which FLOPs do not count
      (the run-time cost model, backends/pytorch/scan_cost.py, does).
    - parallel_scan: a Blelloch scan of the steps' affine maps h ↦ A h + b, about 2T
      compositions; composing two costs 2n³ + 2n² per row for a dense n×n A, 3n for a diagonal
      one (the recurrence pass's ``structure``), (n/k)(2k³ + 2k²) for k×k blocks.
    - newton (ParaRNN): k iterations, each one step evaluation and the step's Jacobian (n
      Jacobian-vector products when dense, one when diagonal, k when block) per step, then a
      parallel scan of the linearised recurrence.
    - chunked (chunk C): within a chunk sequentially, the chunk summaries (n×n per row)
      combined across the T/C chunks.
    - attention_form (linear recurrences only): the decay-masked T×T form, as linear attention
      computes it — every pair (t, s ≤ t) combines an n-vector: about 2·T²·n per row.
    - fft (time-invariant linear recurrences): a causal convolution with the kernel Aⁱ, three
      real FFTs of length 2T per state channel (≈ 2.5·2T·log₂2T FLOPs each).
    """
    n = state / lifted
    if structure in ("diagonal", "gla"):
        compose, jvps = lifted * 3 * n, sympy.Integer(1)
    elif structure == "block" and block:
        compose, jvps = lifted * (n / block) * (2 * block**3 + 2 * block**2), sympy.Integer(block)
    else:
        compose, jvps = lifted * (2 * n**3 + 2 * n**2), n
    T = length
    k = sympy.Integer(NEWTON_ITERATIONS)
    C = sympy.Integer(CHUNK)
    return {
        "sequential": {"flops": T * step, "depth": T},
        "fused_rnn": {"flops": T * step, "depth": T},
        "parallel_scan": {"flops": T * step + 2 * T * compose, "depth": 2 * sympy.log(T, 2)},
        "newton": {"flops": k * (T * step * (1 + jvps) + 2 * T * compose), "depth": k * 2 * sympy.log(T, 2),
                   "iterations": k},
        "chunked": {"flops": T * step + 2 * (T / C) * compose, "depth": C + 2 * sympy.log(T / C, 2),
                    "chunk": C},
        "attention_form": {"flops": T * step + 2 * T**2 * lifted * n, "depth": sympy.log(T, 2)},
        "fft": {"flops": T * step + 3 * sympy.Rational(5, 2) * 2 * T * sympy.log(2 * T, 2) * lifted * n,
                "depth": 2 * sympy.log(2 * T, 2)},
    }


def choose_strategy(node: Node, plan: Any) -> str:
    """The strategy the compiler runs for this scan: what the recurrence pass
    (ncd/passes/recurrence.py) planned for it, or the sequential loop where it has no plan."""
    if plan is None:
        return "sequential"
    return scan_backends.strategy(plan.backend)


def scan_cost(path: str, node: Node, length: sympy.Expr, state: sympy.Expr, step: sympy.Expr,
              lifted: sympy.Expr, plan: Any) -> ScanCost:
    """One scan's record: each strategy's cost, whether this recurrence admits it (the scan-backend
    registry's rule, ncd/scan_backends.py) and the one the compiler runs (the recurrence pass's plan;
    None: no plan, the sequential loop)."""
    strategies = scan_strategies(step, length, state, lifted,
                                 getattr(plan, "structure", "dense"), getattr(plan, "block_size", None))
    for name, strategy in strategies.items():
        strategy["applicable"] = sympy.Integer(int(scan_backends.strategy_applies(name, plan)))
    return ScanCost(path, node.id, node.attrs["axis"], length, state, step, choose_strategy(node, plan),
                    strategies, plan.reason if plan is not None else "",
                    plan.backend if plan is not None else "sequential")

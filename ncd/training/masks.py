"""Pruning masks for the `buffer M` of a masked spec: by weight magnitude, and from random graphs.

A mask is a float tensor of 0s and 1s (1 = keep the weight), shaped like the weight it masks;
write it with `module.M.copy_(mask)`. Magnitude masks follow the pruning literature's
M = 1[|W| ≥ θ] with θ the sparsity quantile; graph masks follow the sparse-RNN studies that take
a layer's connectivity from a Watts–Strogatz or Barabási–Albert graph (networkx generators).
"""
from __future__ import annotations

from typing import Literal

import networkx as nx
import torch

GraphKind = Literal["watts_strogatz", "barabasi_albert"]


def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """1 where |w| is among the largest (1 − sparsity) share of |weight|, else 0.

    θ is the k-th smallest |w| with k = round(sparsity · n); weights tied with θ at the cut are
    pruned too, so exactly k weights are removed when the magnitudes are distinct.
    """
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    flat = weight.detach().abs().flatten()
    k = int(round(sparsity * flat.numel()))
    if k == 0:
        return torch.ones_like(weight)
    if k >= flat.numel():
        return torch.zeros_like(weight)
    theta = flat.kthvalue(k).values
    return (weight.detach().abs() > theta).to(weight.dtype)


def random_graph(n: int, kind: GraphKind, *, k: int = 4, p: float = 0.1, m: int = 2, seed: int = 0) -> nx.Graph:
    """An n-node Watts–Strogatz (ring of degree k, rewired with probability p) or
    Barabási–Albert (m edges per new node) graph, seeded."""
    if kind == "watts_strogatz":
        return nx.watts_strogatz_graph(n, min(k, n - 1), p, seed=seed)
    if kind == "barabasi_albert":
        return nx.barabasi_albert_graph(n, min(m, max(n - 1, 1)), seed=seed)
    raise ValueError(f"unknown graph kind {kind!r}: use 'watts_strogatz' or 'barabasi_albert'")


def graph_mask(rows: int, cols: int, kind: GraphKind, *, self_loops: bool = True, dtype: torch.dtype = torch.float32,
               **graph_args: float) -> torch.Tensor:
    """A [rows, cols] mask from a random graph laid out as a layer.

    The graph has n = max(rows, cols) nodes; input unit i connects to output unit j when the
    nodes i and j are adjacent (or i = j with `self_loops`), i.e. the adjacency matrix (plus the
    identity) cropped to rows × cols. For a recurrent matrix (rows = cols) it is the graph itself.
    """
    n = max(rows, cols)
    if n < 2:
        return torch.ones(rows, cols, dtype=dtype)
    graph = random_graph(n, kind, **graph_args)  # type: ignore[arg-type]
    adj = torch.as_tensor(nx.to_numpy_array(graph, nodelist=range(n)), dtype=dtype)
    if self_loops:
        adj = torch.clamp(adj + torch.eye(n, dtype=dtype), max=1)
    return (adj[:rows, :cols] != 0).to(dtype)


def per_gate(mask: torch.Tensor, gates: int) -> torch.Tensor:
    """A [rows, cols] mask repeated for every gate, as [rows, gates, cols] (the masked GRU/LSTM
    specs' W: [I, G, D] layout)."""
    return mask.unsqueeze(1).expand(mask.shape[0], gates, mask.shape[1]).contiguous()


def sparsity(mask: torch.Tensor) -> float:
    """The share of pruned (zero) entries."""
    return float((mask == 0).sum()) / max(mask.numel(), 1)


def fill_graph_masks(module: torch.nn.Module, kind: GraphKind, *, names: tuple[str, ...] = ("M_ih", "M_hh"),
                     seed: int = 0, **graph_args: float) -> dict[str, torch.Tensor]:
    """Write a random-graph mask into each named mask buffer of a sparse RNN spec
    (specs/sparse_*.ncd) and return them.

    A buffer [rows, cols] gets graph_mask(rows, cols); a gated one [rows, G, cols] gets the same
    graph mask for every gate. Each buffer draws its own graph (seed, seed + 1, ...).
    """
    buffers = dict(module.named_buffers())
    written: dict[str, torch.Tensor] = {}
    for offset, name in enumerate(names):
        if name not in buffers:
            raise ValueError(f"the module has no mask buffer {name!r} (it has {sorted(buffers)})")
        buf = buffers[name]
        if buf.dim() not in (2, 3):
            raise ValueError(f"mask {name} has {buf.dim()} dimensions; expected [rows, cols] or [rows, G, cols]")
        mask = graph_mask(buf.shape[0], buf.shape[-1], kind, dtype=buf.dtype, seed=seed + offset, **graph_args)
        if buf.dim() == 3:
            mask = per_gate(mask, buf.shape[1])
        with torch.no_grad():
            buf.copy_(mask)
        written[name] = mask
    return written

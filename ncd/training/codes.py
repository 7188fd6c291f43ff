"""Activation codes (Lei et al. 2021): the on/off pattern of every ReLU for an input, read from
a spec's pre-activation taps, and the paper's two measurements on them.

The code of x is concat over layers of 1[z_ℓ(x) > 0]; inputs with one code lie in one linear
region of the network. `redundancy_ratio` is the share of inputs whose code another input
shares (0 when every code is unique); `knn_accuracy` classifies codes by their k nearest codes in
Hamming distance.
"""
from __future__ import annotations

import torch
from torch import nn


def activation_codes(module: nn.Module, x: torch.Tensor, tap: str = "pre") -> torch.Tensor:
    """The binary code [N, bits] (bool) of each row of x: (pre > 0) at every tap named `tap`,
    concatenated in the module's order of taps."""
    taps = [mod for name, mod in module.named_modules() if name == f"taps.{tap}" or name.endswith(f".taps.{tap}")]
    if not taps:
        raise ValueError(f"the module has no tap named {tap!r}")
    seen: list[torch.Tensor] = []
    handles = [t.register_forward_hook(lambda mod, args, out: seen.append(out.detach() > 0)) for t in taps]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for handle in handles:
            handle.remove()
    return torch.cat([s.reshape(s.shape[0], -1) for s in seen], dim=1)


def redundancy_ratio(codes: torch.Tensor) -> float:
    """Share of inputs whose code equals at least one other input's code."""
    _, inverse, counts = torch.unique(codes, dim=0, return_inverse=True, return_counts=True)
    return float((counts[inverse] > 1).double().mean())


def knn_accuracy(train_codes: torch.Tensor, train_labels: torch.Tensor, test_codes: torch.Tensor,
                 test_labels: torch.Tensor, k: int = 1) -> float:
    """Accuracy of the k-nearest-neighbour vote (Hamming distance; ties to the lowest label)."""
    a, b = test_codes.double(), train_codes.double()
    dist = a.sum(1, keepdim=True) + b.sum(1) - 2 * a @ b.T          # Hamming distance of 0/1 codes
    nearest = dist.topk(k, dim=1, largest=False).indices
    votes = torch.nn.functional.one_hot(train_labels[nearest], int(train_labels.max()) + 1).sum(1)
    return float((votes.argmax(1) == test_labels).double().mean())

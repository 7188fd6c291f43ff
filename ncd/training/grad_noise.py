"""Annealed Gaussian gradient noise (Neelakantan et al. 2015) for any module's parameters.

After the backward pass of step t (counted from 0), every parameter gradient gets independent
noise: g ← g + N(0, σ_t²) with σ_t² = η / (1 + t)^γ (the paper: γ = 0.55, η ∈ {0.01, 0.3, 1.0}).
It is a training procedure, so it lives beside the optimizer, not in the spec:

    noise = GradientNoise(model.parameters(), eta=0.3)
    loss.backward(); noise.step(); optimizer.step()

A generator makes the noise reproducible and independent of torch's global seed.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch


def noise_variance(t: int, eta: float, gamma: float = 0.55) -> float:
    """σ_t² = η / (1 + t)^γ."""
    return eta / (1.0 + t) ** gamma


class GradientNoise:
    """Adds N(0, η / (1 + t)^γ) to each `.grad` at every `step()`; t counts the calls from 0."""

    def __init__(self, params: Iterable[torch.nn.Parameter], eta: float, gamma: float = 0.55,
                 generator: torch.Generator | None = None) -> None:
        if eta < 0:
            raise ValueError(f"eta is a variance and must be ≥ 0, got {eta}")
        self.params = [p for p in params if p.requires_grad]
        self.eta, self.gamma, self.t = eta, gamma, 0
        self.generator = generator

    def variance(self) -> float:
        """The variance the next `step()` adds."""
        return noise_variance(self.t, self.eta, self.gamma)

    @torch.no_grad()
    def step(self) -> None:
        std = self.variance() ** 0.5
        for p in self.params:
            if p.grad is not None:
                noise = torch.randn(p.grad.shape, generator=self.generator, dtype=p.grad.dtype, device="cpu")
                p.grad.add_(noise.to(p.grad.device), alpha=std)
        self.t += 1

"""The dynamic dead-neuron rate (DNR) of AP (Liu et al. 2022), read from a spec's taps.

A unit is dead on a sample when its pre-activation is ≤ 0 (ReLU passes nothing and no gradient).
The dynamic DNR of a layer over some batches is the share of (unit, sample) pairs that are dead;
AP's observation is that the more a network is pruned, the smaller this rate becomes. The
recorder hooks the taps (`tap pre = ...` in specs/ap_mlp.ncd) and counts, so the spec itself
computes nothing extra.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


class DeadNeuronRate:
    """Counts pre-activations ≤ 0 at the named taps while active (`with DeadNeuronRate(m) as d:`).

    `tap` selects the taps by name (every submodule path ending in `taps.<tap>`); `unit_dim` is
    the dimension of the tap's output that indexes units (-1 for a linear layer's [..., O], -3
    for a conv layer's [..., C, Y, X]); per-unit rates average over all other dimensions.
    """

    def __init__(self, module: nn.Module, tap: str = "pre", unit_dim: int = -1) -> None:
        self.unit_dim = unit_dim
        self.taps = {name: mod for name, mod in module.named_modules() if name == f"taps.{tap}" or name.endswith(f".taps.{tap}")}
        if not self.taps:
            raise ValueError(f"the module has no tap named {tap!r}")
        self.dead: dict[str, torch.Tensor] = {}
        self.count: dict[str, int] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> "DeadNeuronRate":
        for name, mod in self.taps.items():
            self._handles.append(mod.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def record(mod: nn.Module, args: tuple, out: torch.Tensor) -> None:
            dead = (out.detach() <= 0).movedim(self.unit_dim, -1)
            per_unit = dead.reshape(-1, dead.shape[-1]).sum(0)
            self.dead[name] = self.dead.get(name, 0) + per_unit
            self.count[name] = self.count.get(name, 0) + dead.numel() // dead.shape[-1]
        return record

    def unit_rates(self) -> dict[str, torch.Tensor]:
        """Per tap, the share of samples (and positions) on which each unit was dead."""
        return {name: self.dead[name].double() / self.count[name] for name in self.dead}

    def rates(self) -> dict[str, float]:
        """Per tap, the dynamic DNR: the share of (unit, sample) pairs with pre-activation ≤ 0."""
        return {name: float(r.mean()) for name, r in self.unit_rates().items()}

    def overall(self) -> float:
        """The dynamic DNR over all tapped layers together (pairs counted, not layers averaged)."""
        dead = sum(float(self.dead[n].sum()) for n in self.dead)
        total = sum(self.count[n] * self.dead[n].numel() for n in self.dead)
        return dead / max(total, 1)


def select_units(unit_rates: torch.Tensor, share: float) -> torch.Tensor:
    """AP's selection (as ap_mlp reads it): 1 for the `share` of units dead most often, else 0,
    ready for `module.l1.S.copy_(...)`."""
    k = int(round(share * unit_rates.numel()))
    chosen = torch.zeros(unit_rates.numel(), dtype=torch.float32)
    if k > 0:
        chosen[torch.topk(unit_rates.flatten().float(), k).indices] = 1.0
    return chosen.reshape(unit_rates.shape)


def tap_names(module: nn.Module) -> Iterable[str]:
    """Every tap path of a compiled module (`l1.taps.pre`, ...)."""
    return [name for name, _ in module.named_modules() if ".taps." in f".{name}"]

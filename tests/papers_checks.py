"""Shared checks for the paper-library tests (tests/test_papers_*.py): outputs and gradients of a
compiled spec against a reference computed by PyTorch written in the test, in float64."""
from __future__ import annotations

import random

import torch
from torch import nn

TOL = dict(rtol=1e-8, atol=1e-8)


def assert_same_with_grads(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor,
                           ref: torch.Tensor, tol: dict | None = None) -> None:
    """``out`` equals ``ref``, and so do d<w, out>/d(each float input, every parameter) for a random
    cotangent w (the reference must be computed from the module's own parameter tensors)."""
    tol = tol or TOL
    torch.testing.assert_close(out, ref, **tol)
    names, params = zip(*module.named_parameters())
    floats = [x for x in inputs if x.is_floating_point() and x.requires_grad]
    wrt = (*floats, *params)
    w = torch.randn_like(ref)
    got = torch.autograd.grad((out * w).sum(), wrt, retain_graph=True, allow_unused=True)
    want = torch.autograd.grad((ref * w).sum(), wrt, allow_unused=True)
    labels = [f"input {i}" for i in range(len(floats))] + list(names)
    for label, g, r in zip(labels, got, want):
        g = torch.zeros_like(r) if g is None and r is not None else g
        r = torch.zeros_like(g) if r is None and g is not None else r
        if g is None:
            continue
        torch.testing.assert_close(g, r, **tol, msg=lambda m, label=label: f"gradient of {label}: {m}")


def randomise(module: nn.Module, scale: float = 0.5) -> None:
    """Move every parameter off its initialisation, so no term can hide behind a zero or a one."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * scale)


def batch_shape(rng: random.Random) -> tuple[int, ...]:
    """0 to 2 leading (lifted) axes of 1 to 3 each."""
    return tuple(rng.randint(1, 3) for _ in range(rng.randint(0, 2)))

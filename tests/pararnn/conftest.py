"""Tests for backends/pararnn. Without CUDA, Triton runs under its CPU interpreter."""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def nan_empty(monkeypatch):
    """torch.empty / empty_like return NaNs, so an output a kernel forgot to write fails loudly."""
    empty, empty_like = torch.empty, torch.empty_like

    def nan_fill(t: torch.Tensor) -> torch.Tensor:
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: nan_fill(empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: nan_fill(empty_like(*a, **k)))

"""Tests for backends/triton. Without CUDA, Triton runs under its CPU interpreter (the root
conftest sets TRITON_INTERPRET before any kernel is defined)."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _unwritten_outputs_are_nan(nan_empty):
    """Every kernel test runs with NaN-filled torch.empty (the root conftest's nan_empty)."""


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)

"""Test-wide set-up: Triton kernels run through the interpreter where there is no GPU.

Triton reads TRITON_INTERPRET when a kernel is defined, so this must happen before any test
module imports ncd.backends.triton (a root conftest is imported first).
"""
import os

try:
    import torch

    _has_cuda = torch.cuda.is_available()
except ImportError:  # pragma: no cover - torch is a hard dependency
    _has_cuda = False

if not _has_cuda:
    os.environ.setdefault("TRITON_INTERPRET", "1")

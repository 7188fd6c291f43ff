"""The PyTorch backend: IR → an in-process module, or readable Python source of the same module."""
from __future__ import annotations

from ncd.backends.pytorch.module import CompiledModule
from ncd.backends.pytorch.program import lower_spec
from ncd.ir import SpecIR

SCAN_BACKENDS = ("auto", "sequential")


def compile_module(ir: SpecIR, scan_backend: str = "auto") -> CompiledModule:
    from ncd.errors import NcdError

    if scan_backend not in SCAN_BACKENDS:
        raise NcdError(f"unknown scan backend {scan_backend!r}", hint=f"choose one of {', '.join(SCAN_BACKENDS)}")
    programs = lower_spec(ir)
    return CompiledModule(ir, programs, ir.entry)


__all__ = ["CompiledModule", "compile_module", "lower_spec"]

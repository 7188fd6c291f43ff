"""Triton kernels for linear recurrences, each beside its naive float32 reference.

- ``diag_scan``: h_t = a_t * h_{t-1} + x_t over channels            ([B, T, D])
- ``gla``: gated linear attention, chunkwise form                      ([B, T, H, K])
- ``delta_rule``: DeltaNet delta rule, chunked WY/UT form               ([B, T, H, K])

Every public function takes ``backend='auto'|'triton'|'torch'``: 'auto' uses Triton on CUDA
and the chunked PyTorch twin (same algorithm, plain autograd) elsewhere.
"""
from ncd.backends.triton.delta import delta_rule
from ncd.backends.triton.diagonal import diag_scan
from ncd.backends.triton.gated_linear import gla

__all__ = ["diag_scan", "gla", "delta_rule"]

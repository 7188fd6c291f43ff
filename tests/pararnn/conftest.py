"""Tests for backends/pararnn. Without CUDA, Triton runs under its CPU interpreter (set by the
root conftest); the root's nan_empty fixture makes unwritten kernel outputs NaN."""




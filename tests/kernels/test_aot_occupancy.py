"""Occupancy as the CUDA occupancy calculator computes it for compute capability 9.0
(64 K registers, 64 warps, 32 programs and 228 KiB shared memory per SM; registers allocated
256 per warp; 1 KiB of shared memory reserved per program)."""
import pytest

from kernels_import import kernels  # noqa: F401  (puts ncd.backends on the path)

aot = pytest.importorskip("ncd.backends.triton.aot")
H100 = aot.CARDS["h100"]


@pytest.mark.parametrize("regs,warps,shared,want,limit", [
    (64, 8, 0, 4, "registers"),         # 256 threads x 64 regs: 16 K regs per program
    (255, 4, 0, 2, "registers"),        # 255 rounds up to 256 per thread
    (24, 4, 0, 16, "warps"),            # 64 warps per SM bind before 21 by registers
    (40, 4, 100 * 1024, 2, "shared"),   # 2 x (100 + 1) KiB fit in 228 KiB, 3 do not
    (16, 1, 0, 32, "blocks"),           # never more than 32 programs per SM
])
def test_occupancy_follows_the_cuda_rules(regs, warps, shared, want, limit):
    assert aot.occupancy(H100, regs, warps, shared) == (want, limit)


def test_a_program_needing_more_shared_memory_than_an_sm_has_cannot_launch():
    assert aot.occupancy(H100, 64, 4, 228 * 1024)[0] == 0

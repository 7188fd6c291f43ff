"""Helpers shared by the Triton kernels: input checks, backend choice, dtype maps."""
from __future__ import annotations

import functools
import importlib.util
import os

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
BACKENDS = ("auto", "triton", "torch")


def check_dtype(name: str, t: torch.Tensor) -> None:
    if t.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype}")


def check_ndim(name: str, t: torch.Tensor, ndim: int, layout: str) -> None:
    if t.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D {layout}, got {t.ndim}-D with shape "
                         f"{tuple(t.shape)}")


def check_shape(name: str, t: torch.Tensor, expected: tuple[int, ...], layout: str) -> None:
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {layout} = {tuple(expected)}, got "
                         f"{tuple(t.shape)}")


def check_same_device(**tensors: torch.Tensor) -> None:
    devs = {n: t.device for n, t in tensors.items() if t is not None}
    if len(set(devs.values())) > 1:
        raise ValueError("all inputs must be on one device, got "
                         + ", ".join(f"{n} on {d}" for n, d in devs.items()))


TRITON_EXTRA = "triton is not installed; install the extra: pip install 'ncd[triton]'"


@functools.lru_cache(maxsize=None)
def triton_installed() -> bool:
    """Whether the optional `triton` package can be imported, found without importing it: the
    default install (no extras) runs every recurrence through the PyTorch twins."""
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):
        return False


def require_triton() -> None:
    """Raise a clear error, naming the extra, where a Triton kernel is asked for without triton."""
    if not triton_installed():
        raise ImportError(f"a Triton kernel was requested, but {TRITON_EXTRA}", name="triton")


def triton_available(device: torch.device) -> bool:
    """Triton runs on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and os.environ.get("TRITON_INTERPRET", "0") == "1"


def auto_backend(device: torch.device) -> str:
    """What backend='auto' runs: Triton on CUDA tensors where triton is installed, else the
    chunked PyTorch twin (the CPU interpreter is for tests, far too slow to serve as a fallback)."""
    return "triton" if device.type == "cuda" and triton_installed() else "torch"


def torch_reason(device: torch.device) -> str:
    """Why backend='auto' runs the PyTorch twin on ``device``: `ncd run` and --explain say it."""
    return "triton not installed" if not triton_installed() else f"tensors on {device.type}, not CUDA"


def pick_backend(backend: str, device: torch.device) -> str:
    """Resolve 'auto' (see `auto_backend`); an explicit 'triton' needs triton and a device it runs on."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return auto_backend(device)
    if backend == "triton":
        require_triton()
        if not triton_available(device):
            raise ValueError(f"backend='triton' needs a CUDA tensor or TRITON_INTERPRET=1, "
                             f"got tensors on {device}")
    return backend


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float32 for every input dtype, float64 kept (for gradcheck)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def tl_acc(dtype: torch.dtype):
    import triton.language as tl
    return tl.float64 if dtype == torch.float64 else tl.float32


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot precision: exact ('ieee') for fp32/fp64 inputs, TF32 for half inputs.

    Half-precision inputs carry ~3 significant digits already, so TF32 (10-bit mantissa)
    loses nothing they had; float32 inputs are promised 1e-4, which TF32 cannot keep.
    """
    return "ieee" if dtype in (torch.float32, torch.float64) else "tf32"


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[int, int, int, int, int]:
    """Validate q, k [B, T, H, K] and v [B, T, H, V]; return (B, T, H, K, V)."""
    check_ndim("q", q, 4, "[B, T, H, K]")
    check_ndim("k", k, 4, "[B, T, H, K]")
    check_ndim("v", v, 4, "[B, T, H, V]")
    check_shape("k", k, tuple(q.shape), "[B, T, H, K]")
    B, T, H, K = q.shape
    if tuple(v.shape[:3]) != (B, T, H):
        raise ValueError(f"v must have shape [B, T, H, V] with (B, T, H) = {(B, T, H)} from q, "
                         f"got {tuple(v.shape)}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_dtype(name, t)
        if t.dtype != q.dtype:
            raise ValueError(f"q, k, v must share a dtype, got q {q.dtype} and {name} {t.dtype}")
    return B, T, H, K, v.shape[3]


MAX_HEAD_DIM = 256


def check_head_dims(K: int, V: int, backend: str) -> None:
    """Head dims the Triton kernels take: the delta rule's state walks keep all of K in one
    program (at most four row blocks), and neither kernel is compiled or tested above 256."""
    if backend == "triton" and (K > MAX_HEAD_DIM or V > MAX_HEAD_DIM):
        raise ValueError(f"the Triton kernels take K, V <= {MAX_HEAD_DIM}, got K={K}, V={V}; "
                         f"use backend='torch' or split heads")


def check_chunk(chunk_size: int, sub_chunk: int | None = None) -> None:
    if chunk_size not in (16, 32, 64):
        raise ValueError(f"chunk_size must be 16, 32 or 64, got {chunk_size}")
    if sub_chunk is not None and (sub_chunk != 16 or chunk_size % sub_chunk):
        raise ValueError(f"sub_chunk must be 16 (tl.dot's smallest tile) and divide "
                         f"chunk_size={chunk_size}, got {sub_chunk}")


def store_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """Dtype a kernel writes an output of `dtype` in.

    Triton's CPU interpreter truncates float32 -> bfloat16 casts (the GPU rounds to nearest
    even), so under the interpreter bfloat16 outputs are written in float32 and rounded by
    torch afterwards; on a GPU the kernel stores bfloat16 directly.
    """
    if dtype == torch.bfloat16 and device.type == "cpu":
        return torch.float32
    return dtype


def to_chunks(t: torch.Tensor, C: int, dt: torch.dtype) -> torch.Tensor:
    """[B, T, H, X] -> [B, H, NT, C, X], zero padded at the end of time."""
    B, T, H, X = t.shape
    NT = -(-T // C)
    t = t.to(dt).transpose(1, 2)
    if NT * C != T:
        t = torch.nn.functional.pad(t, (0, 0, 0, NT * C - T))
    return t.reshape(B, H, NT, C, X)


H100_SMS = 132   # SM count assumed where the tensors are not on a GPU (interpreter, meta)


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of the tensors' GPU: how many programs run at once decides
    the tiles of the sequential chunk walks."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return H100_SMS

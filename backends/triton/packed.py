"""Packed variable-length batches in fla's `cu_seqlens` convention: N sequences laid end to end
along one time axis of a batch of 1, with int offsets [N + 1] (0, T_1, T_1 + T_2, ..., total).

Checks and host-side layouts shared by the three kernels and their PyTorch twins; nothing here
imports triton.  Chunks never straddle a sequence boundary: a sequence of T_i steps owns
cdiv(T_i, C) chunks of its own, numbered consecutively over the whole batch (`chunk_layout`).
"""
from __future__ import annotations

import torch
from torch import Tensor


def check_cu_seqlens(cu_seqlens: object, total: int, device: torch.device) -> Tensor:
    """Validate offsets over an axis of `total` steps; return them as int64 on `device`.

    They must be a 1-D integer tensor, start at 0, strictly increase (every sequence has at
    least one step) and end at `total`.  Raises ValueError quoting the offending numbers.
    """
    if not isinstance(cu_seqlens, Tensor):
        raise ValueError(f"cu_seqlens must be a 1-D integer torch.Tensor of offsets [N + 1], got "
                         f"{type(cu_seqlens).__name__}")
    if cu_seqlens.dtype.is_floating_point or cu_seqlens.dtype.is_complex or cu_seqlens.dtype == torch.bool:
        raise ValueError(f"cu_seqlens must hold integers (int32 or int64), got {cu_seqlens.dtype}")
    if cu_seqlens.ndim != 1 or cu_seqlens.numel() < 2:
        raise ValueError(f"cu_seqlens must be 1-D with N + 1 >= 2 offsets, got shape "
                         f"{tuple(cu_seqlens.shape)}")
    offs = cu_seqlens.detach().to("cpu", torch.int64)
    if int(offs[0]) != 0:
        raise ValueError(f"cu_seqlens must start at 0, got {int(offs[0])}")
    steps = offs[1:] - offs[:-1]
    if bool((steps <= 0).any()):
        i = int((steps <= 0).nonzero()[0])
        raise ValueError(f"cu_seqlens must strictly increase (every sequence at least one step), "
                         f"got cu_seqlens[{i}] = {int(offs[i])} then cu_seqlens[{i + 1}] = "
                         f"{int(offs[i + 1])}")
    if int(offs[-1]) != total:
        raise ValueError(f"cu_seqlens must end at the packed length {total}, got {int(offs[-1])}")
    return offs.to(device)


def check_packed_batch(name: str, t: Tensor) -> None:
    """Packed inputs hold every sequence in one batch row (fla's convention)."""
    if t.shape[0] != 1:
        raise ValueError(f"with cu_seqlens, {name} must be packed into a batch of 1, got batch "
                         f"{t.shape[0]} (shape {tuple(t.shape)})")


def lengths(cu_seqlens: Tensor) -> list[int]:
    """Per-sequence lengths T_i (host ints)."""
    offs = cu_seqlens.to("cpu").tolist()
    return [b - a for a, b in zip(offs[:-1], offs[1:])]


def chunk_layout(cu_seqlens: Tensor, chunk: int) -> tuple[Tensor, Tensor, int]:
    """(cseq [NT] int32: the sequence of each chunk, co [N + 1] int32: index of each sequence's
    first chunk, NT: chunks in all) for chunks of `chunk` steps that restart at every sequence."""
    counts = torch.tensor([-(-n // chunk) for n in lengths(cu_seqlens)], dtype=torch.int64)
    co = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    cseq = torch.repeat_interleave(torch.arange(len(counts)), counts)
    dev = cu_seqlens.device
    return cseq.to(dev, torch.int32), co.to(dev, torch.int32), int(co[-1])


def split_packed(t: Tensor, cu_seqlens: Tensor, dim: int = 1) -> list[Tensor]:
    """Views of each sequence of a packed tensor along `dim`."""
    return list(torch.split(t, lengths(cu_seqlens), dim=dim))


class Packing:
    """What a launcher needs of a packed batch: the offsets and its chunk layout (chunk size C).

    `seqs` sequences, `chunks` chunks in all; `cu`, `cseq`, `co` live on the inputs' device."""

    def __init__(self, cu_seqlens: Tensor, chunk: int) -> None:
        self.cu = cu_seqlens
        self.seqs = cu_seqlens.numel() - 1
        self.cseq, self.co, self.chunks = chunk_layout(cu_seqlens, chunk)


class ChunkGrid:
    """The launch layout a chunked backward needs, packed or padded: `seqs` states (N), `chunks`
    chunks in all (NT), `batch` grid rows (GB: 1 when packed), the offset tables (`cu`, `cseq`,
    `co`; `placeholder` stands in for them when padded) and `varlen`, the kernels' switch."""

    def __init__(self, cu_seqlens: Tensor | None, chunk: int, B: int, T: int, placeholder: Tensor) -> None:
        pk = Packing(cu_seqlens, chunk) if cu_seqlens is not None else None
        self.varlen = pk is not None
        self.seqs = pk.seqs if pk else B
        self.chunks = pk.chunks if pk else -(-T // chunk)
        self.batch = 1 if pk else B
        self.cu, self.cseq, self.co = (pk.cu, pk.cseq, pk.co) if pk else (placeholder,) * 3


def segmented(fn, packed: list[Tensor], h0: Tensor | None, cu_seqlens: Tensor
              ) -> tuple[Tensor, Tensor]:
    """Run fn(*inputs of one sequence [1, T_i, ...], h0 [1, ...] or None) -> (y, y_T) on each
    packed sequence alone: the PyTorch twins' way with cu_seqlens.  Returns (y concatenated
    along time, the final states [N, ...])."""
    parts = [split_packed(t, cu_seqlens) for t in packed]
    ys, finals = [], []
    for i, seq in enumerate(zip(*parts)):
        y, yT = fn(*seq, None if h0 is None else h0[i:i + 1])
        ys.append(y)
        finals.append(yT)
    return torch.cat(ys, 1), torch.cat(finals, 0)

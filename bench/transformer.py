#!/usr/bin/env python3
"""The compiled transformer encoder layer beside torch.nn.TransformerEncoderLayer, in one run.

Both run forward + backward (of the output's sum, all parameter gradients) at the same sizes,
float32 on the CPU, with torch's weights copied into the compiled module (ncd.interop.load_torch)
so the two compute the same function; the maximum output difference is reported. Timings are
interleaved (ours, theirs, ours, ...) after warm-up so machine load hits both alike; the median of
N repeats is reported, and the ratio ncd / torch (< 1: ncd faster). Forward-only timings (train
mode, autograd on) are reported beside them.

Default sizes: B=8, T=128, D=256, H=8, F=1024, torch.set_num_threads(2).

Usage: python bench/transformer.py [--B 8 --T 128 --D 256 --H 8 --F 1024] [--repeat 10]
                                   [--threads 2] [--spec specs/transformer_encoder.ncd] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def bench(spec: str, B: int, T: int, D: int, H: int, F: int, repeat: int, warmup: int) -> dict:
    import torch
    from torch import nn

    import ncd

    torch.manual_seed(0)
    ref = nn.TransformerEncoderLayer(D, H, F, dropout=0.0, batch_first=True)
    ours = ncd.load(spec, D=D, H=H, F=F)
    ported, max_diff = False, None
    try:
        from ncd.interop import load_torch

        load_torch(ours, ref)
        ported = True
    except Exception as exc:  # noqa: BLE001 — the interop layer is optional for timing
        print(f"note: weights not ported ({type(exc).__name__}: {exc}); timing with separate weights",
              file=sys.stderr)
    ref.train()
    ours.train()
    x = torch.randn(B, T, D)
    with torch.no_grad():
        if ported:
            max_diff = float((ours(x) - ref(x)).abs().max())

    def step(model: nn.Module) -> None:
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()

    def forward(model: nn.Module) -> None:
        model(x)

    for _ in range(warmup):
        step(ours)
        step(ref)
    fb = {"ncd": [], "torch": []}
    fw = {"ncd": [], "torch": []}
    for _ in range(repeat):
        fb["ncd"].append(_time(lambda: step(ours)))
        fb["torch"].append(_time(lambda: step(ref)))
        fw["ncd"].append(_time(lambda: forward(ours)))
        fw["torch"].append(_time(lambda: forward(ref)))
    med = {k: {n: statistics.median(v) for n, v in d.items()} for k, d in (("fwd_bwd", fb), ("fwd", fw))}
    return {
        "spec": spec,
        "sizes": {"B": B, "T": T, "D": D, "H": H, "F": F},
        "dtype": "float32",
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "repeat": repeat,
        "weights_ported": ported,
        "max_abs_diff": max_diff,
        "fwd_bwd_ms": {k: round(v, 2) for k, v in med["fwd_bwd"].items()},
        "fwd_ms": {k: round(v, 2) for k, v in med["fwd"].items()},
        "ratio_fwd_bwd": round(med["fwd_bwd"]["ncd"] / med["fwd_bwd"]["torch"], 3),
        "ratio_fwd": round(med["fwd"]["ncd"] / med["fwd"]["torch"], 3),
        "params": {"ncd": sum(p.numel() for p in ours.parameters()),
                   "torch": sum(p.numel() for p in ref.parameters())},
        "torch": torch.__version__,
        "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, default in (("B", 8), ("T", 128), ("D", 256), ("H", 8), ("F", 1024)):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--spec", default=str(ROOT / "specs" / "transformer_encoder.ncd"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(args.threads)
    if not Path(args.spec).exists():
        print(f"no spec at {args.spec}: nothing to measure", file=sys.stderr)
        return 0
    r = bench(args.spec, args.B, args.T, args.D, args.H, args.F, max(1, args.repeat), args.warmup)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    s = r["sizes"]
    print(f"transformer encoder layer, B={s['B']} T={s['T']} D={s['D']} H={s['H']} F={s['F']}, "
          f"float32, CPU, {r['threads']} threads, median of {r['repeat']} (load average {r['load_average']})")
    diff = f"{r['max_abs_diff']:.2e}" if r["max_abs_diff"] is not None else "n/a (weights not ported)"
    print(f"  params: ncd {r['params']['ncd']:,}, torch {r['params']['torch']:,}; max |out diff| {diff}")
    print(f"  {'':<14}{'ncd ms':>10}{'torch ms':>10}{'ncd/torch':>11}")
    print(f"  {'fwd + bwd':<14}{r['fwd_bwd_ms']['ncd']:>10.1f}{r['fwd_bwd_ms']['torch']:>10.1f}{r['ratio_fwd_bwd']:>11.2f}")
    print(f"  {'fwd (train)':<14}{r['fwd_ms']['ncd']:>10.1f}{r['fwd_ms']['torch']:>10.1f}{r['ratio_fwd']:>11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

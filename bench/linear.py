#!/usr/bin/env python3
"""Our linear-recurrence kernels beside the anchors, on one CUDA GPU.

Rows (bf16 unless noted; forward, and forward+backward of a random linear loss):
  gla    ncd gla        vs fla chunk_gla         B8 T2048 H16 K=V=128, B2 T8192 H16 K=V=128
  delta  ncd delta_rule vs fla chunk_delta_rule  B8 T2048 H16 K=V=128, beta in (0, 2)
  scan   ncd diag_scan  vs accelerated_scan.scalar.scan, 8 x 4096 channels x 8192 steps, fp32
         (row skipped when accelerated_scan is not importable)
Timing: triton.testing.do_bench, median of the repetitions (p20 / p80 kept in the JSON), ms.
Accuracy: relative error ||y - y_ref|| / ||y_ref|| of the output (and of every gradient,
worst one reported) against the float32 naive loop on the same (bf16-rounded) inputs, at a
small shape with the same H, K, V (B1 T256) -- the naive loop is too slow for the timed shapes.
Work models (as in /work/shared/bench/anchors_linear.py, so the columns compare):
  GLA   4KV + 2C(K+V) FLOP per token-head (C = 64);  Delta 6KV + 6CK + 4CV;  fwd+bwd = 3x fwd
  scan  GB/s from the minimum traffic: fwd reads a, x and writes h (3 N words); fwd+bwd adds
        reading a, h, dh and writing da, dx (8 N words in all).

Usage: python bench/linear.py [--only gla,delta,scan] [--rep MS] [--json PATH]
Without CUDA it prints why and exits with status 0, measuring nothing.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback

import torch

GLA_SHAPES = [(8, 2048, 16, 128, 128), (2, 8192, 16, 128, 128)]
DELTA_SHAPES = [(8, 2048, 16, 128, 128)]
SCAN_SHAPE = (8, 4096, 8192)          # batch, channels, steps (accelerated-scan's layout)
ACC_SHAPE = (1, 256, 16, 128, 128)    # accuracy check shape for the naive loops
CHUNK = 64


def import_ours():
    import ncd.backends.triton as ours
    import ncd.backends.triton.delta as delta
    import ncd.backends.triton.diagonal as diagonal
    import ncd.backends.triton.gated_linear as gated_linear
    sub = {"diagonal": diagonal, "gated_linear": gated_linear, "delta": delta}
    return ours, sub


def import_fla():
    # fla/__init__ pulls in its model zoo (transformers) when importable; not needed here
    sys.modules.setdefault("fla.layers", None)
    sys.modules.setdefault("fla.models", None)
    from fla.ops.delta_rule import chunk_delta_rule
    from fla.ops.gla import chunk_gla
    return chunk_gla, chunk_delta_rule


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def bench(fn, rep_ms: float, grad_to_none=None) -> tuple[float, float, float]:
    import triton
    r = triton.testing.do_bench(fn, warmup=25, rep=rep_ms, grad_to_none=grad_to_none,
                                quantiles=[0.5, 0.2, 0.8])
    return float(r[0]), float(r[1]), float(r[2])


def gla_flops(B, T, H, K, V, C=CHUNK):
    return B * T * H * (4 * K * V + 2 * C * (K + V))


def delta_flops(B, T, H, K, V, C=CHUNK):
    return B * T * H * (6 * K * V + 6 * C * K + 4 * C * V)


def shape_str(B, T, H, K, V):
    return f"B{B} T{T} H{H} K{K} V{V}"


class Table:
    def __init__(self):
        self.rows: list[dict] = []

    def add(self, section, case, shape, ms=None, **kw):
        row = {"section": section, "case": case, "shape": shape, "ms": ms, **kw}
        self.rows.append(row)
        extra = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in kw.items() if k not in ("p20", "p80"))
        ms_s = f"{ms:9.3f} ms" if ms is not None else "       -- "
        print(f"  [{section}] {case:<34} {shape:<24} {ms_s}  {extra}", flush=True)

    def error(self, section, case, shape, exc):
        self.add(section, case, shape, None, error=repr(exc)[:200])
        traceback.print_exc(limit=4)


# ------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------
def gla_inputs(B, T, H, K, V, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    kw = dict(device="cuda", generator=gen)
    q, k = torch.randn(B, T, H, K, **kw), torch.randn(B, T, H, K, **kw)
    v = torch.randn(B, T, H, V, **kw)
    g = torch.nn.functional.logsigmoid(torch.randn(B, T, H, K, **kw)).clamp_min(-5)
    return [t.to(torch.bfloat16) for t in (q, k, v, g)]


def delta_inputs(B, T, H, K, V, seed=1):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    kw = dict(device="cuda", generator=gen)
    q = torch.nn.functional.normalize(torch.randn(B, T, H, K, **kw), dim=-1)
    k = torch.nn.functional.normalize(torch.randn(B, T, H, K, **kw), dim=-1)
    v = torch.randn(B, T, H, V, **kw)
    beta = 2 * torch.sigmoid(torch.randn(B, T, H, **kw))
    return [t.to(torch.bfloat16) for t in (q, k, v, beta)]


def fwd_and_fwdbwd(fn, ins, rep_ms):
    """Median ms of fn(*ins) under no_grad, and of fn(*ins)[0].backward(do)."""
    leaves = [t.detach().clone().requires_grad_(True) for t in ins]
    with torch.no_grad():
        out = fn(*ins)
    do = torch.randn_like(out)

    def fwd():
        with torch.no_grad():
            return fn(*ins)

    def fwdbwd():
        fn(*leaves).backward(do)

    return bench(fwd, rep_ms), bench(fwdbwd, rep_ms, grad_to_none=leaves)


def accuracy(fn, naive, ins) -> dict:
    """Errors of fn's output and gradients against the float32 naive loop on the same inputs."""
    leaves = [t.detach().clone().requires_grad_(True) for t in ins]
    ref_leaves = [t.detach().float().requires_grad_(True) for t in ins]
    out = fn(*leaves)
    ref = naive(*ref_leaves)
    do = torch.randn_like(ref)
    g = torch.autograd.grad(out, leaves, do.to(out.dtype))
    g_ref = torch.autograd.grad(ref, ref_leaves, do)
    return {"err_out": rel_err(out, ref),
            "err_grad_max": max(rel_err(a, b) for a, b in zip(g, g_ref))}


# ------------------------------------------------------------------------------------------
# sections
# ------------------------------------------------------------------------------------------
def section_gla(tab: Table, sub, rep_ms):
    ours = lambda q, k, v, g: sub["gated_linear"].gla(q, k, v, g, backend="triton")[0]   # noqa: E731
    naive = lambda q, k, v, g: sub["gated_linear"].naive_gla(q, k, v, g)[0]               # noqa: E731
    try:
        chunk_gla, _ = import_fla()
        theirs = lambda q, k, v, g: chunk_gla(q, k, v, g)[0]                      # noqa: E731
    except Exception as e:  # the anchor is optional; our rows still run
        tab.error("gla", "import fla", "", e)
        theirs = None
    impls = [("ncd gla", ours)] + ([("fla chunk_gla", theirs)] if theirs else [])
    acc_in = gla_inputs(*ACC_SHAPE, seed=3)
    for name, fn in impls:
        try:
            tab.add("gla", f"{name} accuracy vs fp32 naive", shape_str(*ACC_SHAPE),
                    **accuracy(fn, naive, acc_in))
        except Exception as e:
            tab.error("gla", f"{name} accuracy", shape_str(*ACC_SHAPE), e)
    for shape in GLA_SHAPES:
        ins, fl = gla_inputs(*shape), gla_flops(*shape)
        for name, fn in impls:
            try:
                (ms, lo, hi), (ms2, lo2, hi2) = fwd_and_fwdbwd(fn, ins, rep_ms)
                tab.add("gla", f"{name} fwd", shape_str(*shape), ms, p20=lo, p80=hi,
                        TFLOPs=fl / ms / 1e9)
                tab.add("gla", f"{name} fwd+bwd", shape_str(*shape), ms2, p20=lo2, p80=hi2,
                        TFLOPs=3 * fl / ms2 / 1e9)
            except Exception as e:
                tab.error("gla", name, shape_str(*shape), e)
        del ins
        torch.cuda.empty_cache()


def section_delta(tab: Table, sub, rep_ms):
    ours = lambda q, k, v, b: sub["delta"].delta_rule(q, k, v, b, backend="triton")[0]  # noqa
    naive = lambda q, k, v, b: sub["delta"].naive_delta_rule(q, k, v, b)[0]             # noqa
    try:
        _, chunk_delta_rule = import_fla()
        theirs = lambda q, k, v, b: chunk_delta_rule(q, k, v, b)[0]                      # noqa
    except Exception as e:
        tab.error("delta", "import fla", "", e)
        theirs = None
    impls = [("ncd delta_rule", ours)] + ([("fla chunk_delta_rule", theirs)] if theirs else [])
    acc_in = delta_inputs(*ACC_SHAPE, seed=4)
    for name, fn in impls:
        try:
            tab.add("delta", f"{name} accuracy vs fp32 naive", shape_str(*ACC_SHAPE),
                    **accuracy(fn, naive, acc_in))
        except Exception as e:
            tab.error("delta", f"{name} accuracy", shape_str(*ACC_SHAPE), e)
    for shape in DELTA_SHAPES:
        ins, fl = delta_inputs(*shape), delta_flops(*shape)
        for name, fn in impls:
            try:
                (ms, lo, hi), (ms2, lo2, hi2) = fwd_and_fwdbwd(fn, ins, rep_ms)
                tab.add("delta", f"{name} fwd", shape_str(*shape), ms, p20=lo, p80=hi,
                        TFLOPs=fl / ms / 1e9)
                tab.add("delta", f"{name} fwd+bwd", shape_str(*shape), ms2, p20=lo2, p80=hi2,
                        TFLOPs=3 * fl / ms2 / 1e9)
            except Exception as e:
                tab.error("delta", name, shape_str(*shape), e)
        del ins
        torch.cuda.empty_cache()


def section_scan(tab: Table, sub, rep_ms):
    B, C, T = SCAN_SHAPE
    N = B * C * T
    shp = f"[{B},{C},{T}] fp32"
    gen = torch.Generator(device="cuda").manual_seed(5)
    # ours is [B, T, D] (channels contiguous); accelerated-scan is [B, D, T] (time contiguous).
    # Each gets its own layout, so neither pays for a transpose.
    a = 0.9 + 0.1 * torch.rand(B, T, C, device="cuda", generator=gen)
    x = torch.randn(B, T, C, device="cuda", generator=gen)
    ours = lambda a, x: sub["diagonal"].diag_scan(a, x, backend="triton")[0]   # noqa: E731
    impls = [("ncd diag_scan", ours, a, x)]
    try:
        from accelerated_scan.scalar import scan as as_scan
        impls.append(("accelerated_scan.scalar", as_scan, a.transpose(1, 2).contiguous(),
                      x.transpose(1, 2).contiguous()))
    except Exception as e:
        tab.add("scan", "accelerated_scan (not importable: row skipped)", shp, None,
                error=repr(e)[:120])
    # accuracy on a slice (a few channels, all steps) against the float32 time loop
    naive = sub["diagonal"].naive_diag_scan
    ref = naive(a[:1, :, :256], x[:1, :, :256])[0]
    for name, fn, aa, xx in impls:
        try:
            if name.startswith("ncd"):
                y = fn(a[:1, :, :256].contiguous(), x[:1, :, :256].contiguous())
            else:
                y = fn(aa[:1, :256].contiguous(), xx[:1, :256].contiguous()).transpose(1, 2)
            err = rel_err(y, ref)
            (ms, lo, hi), (ms2, lo2, hi2) = fwd_and_fwdbwd(fn, [aa, xx], rep_ms)
            tab.add("scan", f"{name} fwd", shp, ms, p20=lo, p80=hi, GBps=3 * N * 4 / ms / 1e6,
                    err_out=err)
            tab.add("scan", f"{name} fwd+bwd", shp, ms2, p20=lo2, p80=hi2,
                    GBps=8 * N * 4 / ms2 / 1e6)
        except Exception as e:
            tab.error("scan", name, shp, e)
    try:
        ms, lo, hi = bench(lambda: x.clone(), rep_ms)
        tab.add("scan", "d2d copy (same size, ceiling)", shp, ms, GBps=2 * N * 4 / ms / 1e6)
    except Exception as e:
        tab.error("scan", "copy", shp, e)


SECTIONS = {"gla": section_gla, "delta": section_delta, "scan": section_scan}

# Issue 4's targets, measured side by side in this run: (ours, anchor, metric, target ratio).
TARGETS = [
    ("ncd gla fwd+bwd", "fla chunk_gla fwd+bwd", "ms", 1.2),
    ("ncd delta_rule fwd+bwd", "fla chunk_delta_rule fwd+bwd", "ms", 1.0),
    ("ncd diag_scan fwd", "accelerated_scan.scalar fwd", "GBps", 0.95),
]


def targets(rows: list[dict]) -> list[dict]:
    """Ours against the anchor per shape: speed-up (anchor ms / ours) or bandwidth ratio."""
    out = []
    for ours, anchor, metric, want in TARGETS:
        for r in rows:
            if r["case"] != ours or r.get(metric) is None:
                continue
            a = next((x for x in rows if x["case"] == anchor and x["shape"] == r["shape"]
                      and x.get(metric) is not None), None)
            if a is None:
                continue
            ratio = a["ms"] / r["ms"] if metric == "ms" else r[metric] / a[metric]
            out.append({"case": ours, "anchor": anchor, "shape": r["shape"], "ratio": ratio,
                        "target": want, "met": ratio >= want})
    return out


def print_table(meta, rows):
    print("\n" + "=" * 112)
    print(f"bench/linear.py | {meta['gpu']} | torch {meta['torch']} | triton {meta['triton']}")
    print("=" * 112)
    print(f"{'case':<40} {'shape':<24} {'ms(med)':>9} {'TFLOP/s':>8} {'GB/s':>7} "
          f"{'err_out':>9} {'err_grad':>9}")
    print("-" * 112)

    def f(v, w, p):
        return f"{v:{w}.{p}f}" if isinstance(v, float) else "-".rjust(w)

    def e(v, w):
        return f"{v:{w}.2e}" if isinstance(v, float) else "-".rjust(w)

    for r in rows:
        line = (f"{r['case'][:40]:<40} {r['shape'][:24]:<24} {f(r.get('ms'), 9, 3)} "
                f"{f(r.get('TFLOPs'), 8, 1)} {f(r.get('GBps'), 7, 0)} {e(r.get('err_out'), 9)} "
                f"{e(r.get('err_grad_max'), 9)}")
        if r.get("error"):
            line += "  ERROR " + r["error"][:60]
        print(line)
    print("-" * 112)
    print("GLA FLOPs 4KV+2C(K+V)/token-head, Delta 6KV+6CK+4CV, fwd+bwd = 3x fwd (C=64); "
          "scan GB/s: fwd 3N, fwd+bwd 8N fp32 words")
    for t in meta.get("targets", []):
        print(f"target {t['case']:<24} vs {t['anchor']:<30} {t['shape']:<22} "
              f"{t['ratio']:5.2f}x (want >= {t['target']}) {'met' if t['met'] else 'NOT met'}")
    print("=" * 112, flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="gla,delta,scan", help="comma list of gla,delta,scan")
    ap.add_argument("--rep", type=float, default=100.0, help="do_bench rep time per row, ms")
    ap.add_argument("--json", nargs="?", const="-", default=None,
                    help="write results as JSON to PATH ('-' or no value: stdout)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench/linear.py: no CUDA device visible (torch.cuda.is_available() is False); "
              "these benchmarks time GPU kernels, so nothing was measured.", file=sys.stderr)
        return 0
    import triton
    _, sub = import_ours()
    meta = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
            "triton": triton.__version__}
    tab = Table()
    t0 = time.perf_counter()
    for name in [s for s in args.only.split(",") if s]:
        if name not in SECTIONS:
            tab.add(name, "unknown section", "", None, error="unknown")
            continue
        print(f"section {name} ...", flush=True)
        try:
            SECTIONS[name](tab, sub, args.rep)
        except Exception as e:
            tab.error(name, f"section {name}", "", e)
        torch.cuda.empty_cache()
    meta["wall_s"] = time.perf_counter() - t0
    meta["targets"] = targets(tab.rows)
    print_table(meta, tab.rows)
    if args.json:
        text = json.dumps({"meta": meta, "rows": tab.rows}, indent=1, default=str)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as fh:
                fh.write(text)
            print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Convolution as people use it, against torch.nn in float64 at random sizes: groups and depthwise,
per-axis stride / padding / dilation, each padding_mode, causal 1-D padding, ceil_mode pools,
linear / nearest up-sampling with align_corners; their sizes, costs, drawings and emitted Python.
"""
from __future__ import annotations

import importlib.util
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import ncd
from ncd import NcdError
from ncd.analysis import analyze
from ncd.backends.graphviz import render_dot
from ncd.backends.pytorch.emit import emit_python

DT = torch.float64
MODES = ["zeros", "reflect", "replicate", "circular"]


def load_emitted(source: str, tmp_path, name: str):
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def grads_agree(out, ref, tensors_a, tensors_b):
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(out, tensors_a, g), torch.autograd.grad(ref, tensors_b, g)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


GROUPED_2D = """
axis G, Cg, Dg, KY, KX, Y, X, Y2, X2, C, D
block Grouped(x: [C, Y, X]) -> [D, Y2, X2] {
    param W: [G, Dg, Cg, KY, KX] init normal(0, 1)
    h = conv(x[C -> G Cg], W, over = [Y, X] -> [Y2, X2], kernel = [KY, KX], groups = [G],
             stride = [%(sy)d, %(sx)d], padding = [%(py)d, %(px)d], dilation = [%(dy)d, %(dx)d], padding_mode = %(mode)s)
    return h[G Dg -> D]
}
"""


def grouped_case(seed: int, mode: str) -> dict:
    rng = random.Random(seed)
    g, cg, dg = rng.randint(1, 3), rng.randint(1, 3), rng.randint(1, 3)
    ky, kx = rng.randint(1, 3), rng.randint(1, 3)
    dy, dx = rng.randint(1, 2), rng.randint(1, 2)
    py, px = rng.randint(0, 2), rng.randint(0, 2)
    y = rng.randint(max(dy * (ky - 1) + 1, py + 1), 9)
    x = rng.randint(max(dx * (kx - 1) + 1, px + 1), 9)
    return dict(G=g, Cg=cg, Dg=dg, KY=ky, KX=kx, Y=y, X=x, sy=rng.randint(1, 3), sx=rng.randint(1, 3),
                py=py, px=px, dy=dy, dx=dx, mode=mode, B=rng.randint(1, 3))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", range(3))
def test_grouped_conv2d_is_nn_conv2d(seed, mode):
    c = grouped_case(seed, mode)
    sizes = {k: c[k] for k in ("G", "Cg", "Dg", "KY", "KX", "Y", "X")}
    m = ncd.load(GROUPED_2D % c, C=c["G"] * c["Cg"], D=c["G"] * c["Dg"], **sizes).to(DT)
    ref = nn.Conv2d(c["G"] * c["Cg"], c["G"] * c["Dg"], (c["KY"], c["KX"]), stride=(c["sy"], c["sx"]),
                    padding=(c["py"], c["px"]), dilation=(c["dy"], c["dx"]), groups=c["G"], bias=False,
                    padding_mode=mode).to(DT)
    m.load_state_dict({"W": ref.weight.detach().reshape(m.W.shape)})  # nn's [D, C/g, k, k] is [G Dg, Cg, k, k]
    x = torch.randn(c["B"], c["G"] * c["Cg"], c["Y"], c["X"], dtype=DT, requires_grad=True)
    out, want = m(x), ref(x)
    assert out.shape == want.shape
    g = torch.randn_like(want)
    ga = torch.autograd.grad(out, (x, m.W), g)
    gb = torch.autograd.grad(want, (x, ref.weight), g)
    torch.testing.assert_close(out, want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ga[0], gb[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ga[1].reshape(gb[1].shape), gb[1], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", range(3))
def test_depthwise_conv1d_with_multiplier_is_nn_conv1d(seed, mode):
    rng = random.Random(100 + seed)
    c, mult, k, d = rng.randint(1, 4), rng.randint(1, 3), rng.randint(1, 4), rng.randint(1, 3)
    p = rng.randint(0, 3)
    t = rng.randint(max(d * (k - 1) + 1, p + 1), 12)
    spec = f"""
axis C, M, K, T, T2
block Depthwise(x: [C, T]) -> [C, M, T2] {{
    param W: [C, M, K] init normal(0, 1)
    return conv(x, W, over = T -> T2, kernel = [K], groups = [C], padding = {p}, dilation = {d}, padding_mode = {mode})
}}
"""
    m = ncd.load(spec, C=c, M=mult, K=k, T=t).to(DT)
    ref = nn.Conv1d(c, c * mult, k, padding=p, dilation=d, groups=c, bias=False, padding_mode=mode).to(DT)
    m.load_state_dict({"W": ref.weight.detach().reshape(c, mult, k)})
    x = torch.randn(2, c, t, dtype=DT, requires_grad=True)
    out = m(x)
    want = ref(x).reshape(2, c, mult, -1)
    grads_agree(out, want, (x,), (x,))


def test_a_kernel_lifted_over_channels_is_the_same_depthwise_conv():
    """Two spellings of one depthwise conv: groups = [C], and a block's kernel lifted over C."""
    spec = """
axis C = 3, K = 3, T = 8, T2
block Taps(x: [T], w: [K]) -> [T2] { return conv(x, w, over = T -> T2, kernel = [K], padding = 1) }
block Both(x: [C, T]) -> [C, T2], [C, T2] {
    param W: [C, K] init normal(0, 1)
    return conv(x, W, over = T -> T2, kernel = [K], groups = [C], padding = 1), Taps(x, W)
}
"""
    m = ncd.load(spec).to(DT)
    x = torch.randn(2, 3, 8, dtype=DT)
    a, b = m(x)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a, F.conv1d(x, m.W.reshape(3, 1, 3), padding=1, groups=3), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_causal_conv1d_sees_only_the_past(seed):
    rng = random.Random(200 + seed)
    c, d2, k, dil = rng.randint(1, 3), rng.randint(1, 3), rng.randint(1, 4), rng.randint(1, 3)
    t = rng.randint(1, 10)
    spec = """
axis C, D, K, T
block Causal(x: [C, T]) -> [D, T] {
    param W: [D, C, K] init normal(0, 1)
    return conv(x, W, over = T, kernel = [K], padding = causal, dilation = %d)
}
""" % dil
    m = ncd.load(spec, C=c, D=d2, K=k).to(DT)  # T stays free: the causal output keeps its size
    ref = nn.Conv1d(c, d2, k, padding=dil * (k - 1), dilation=dil, bias=False).to(DT)
    m.load_state_dict({"W": ref.weight.detach()})
    x = torch.randn(2, c, t, dtype=DT, requires_grad=True)
    want = ref(x)[..., :t]  # the usual causal conv: pad both sides, drop the look-ahead
    grads_agree(m(x), want, (x,), (x,))
    x2 = x.detach().clone()
    x2[..., -1] += 1.0  # the last input moves no earlier output
    torch.testing.assert_close(m(x2)[..., :-1], m(x.detach())[..., :-1], rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("seed", range(6))
def test_ceil_mode_pools_are_nn_pools_and_sizes_are_exact(kind, seed):
    rng = random.Random(300 + seed)
    ky, kx = rng.randint(1, 4), rng.randint(1, 4)
    sy, sx = rng.randint(1, 3), rng.randint(1, 3)
    py, px = rng.randint(0, ky // 2), rng.randint(0, kx // 2)
    y, x = rng.randint(ky, 11), rng.randint(kx, 11)
    fn = "maxpool" if kind == "max" else "avgpool"
    spec = f"""
axis C = 2, Y, X, Y2, X2
block Pool(x: [C, Y, X]) -> [C, Y2, X2] {{
    return {fn}(x, over = [Y, X] -> [Y2, X2], size = [{ky}, {kx}], stride = [{sy}, {sx}], padding = [{py}, {px}], ceil_mode = true)
}}
"""
    cls = nn.MaxPool2d if kind == "max" else nn.AvgPool2d
    ref = cls((ky, kx), stride=(sy, sx), padding=(py, px), ceil_mode=True)
    xs = torch.randn(2, 2, y, x, dtype=DT, requires_grad=True)
    want = ref(xs)
    bound = ncd.check(spec, Y=y, X=x).axes  # the symbolic formula, bound at check time
    assert (int(bound["Y2"].size), int(bound["X2"].size)) == tuple(want.shape[2:])
    m = ncd.load(spec)  # free axes: read off the input
    grads_agree(m(xs), want, (xs,), (xs,))


def test_ceil_mode_keeps_a_partial_window_floor_mode_drops():
    spec = """
axis Y = 5, Y2
block P(x: [Y]) -> [Y2] { return maxpool(x, over = Y -> Y2, size = 2, ceil_mode = %s) }
"""
    assert int(ncd.check(spec % "true").axes["Y2"].size) == 3
    assert int(ncd.check(spec % "false").axes["Y2"].size) == 2


@pytest.mark.parametrize("align", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_bilinear_upsampling_is_nn_upsample(seed, align):
    rng = random.Random(400 + seed)
    y, x, fy, fx = rng.randint(1, 6), rng.randint(1, 6), rng.randint(1, 3), rng.randint(1, 3)
    spec = f"""
axis C = 2, Y, X, Y2, X2
block Up(x: [C, Y, X]) -> [C, Y2, X2] {{
    return upsample(x, over = [Y, X] -> [Y2, X2], scale = [{fy}, {fx}], mode = bilinear, align_corners = {str(align).lower()})
}}
"""
    m = ncd.load(spec)
    xs = torch.randn(3, 2, y, x, dtype=DT, requires_grad=True)
    want = nn.Upsample(scale_factor=(fy, fx), mode="bilinear", align_corners=align)(xs)
    grads_agree(m(xs), want, (xs,), (xs,))


@pytest.mark.parametrize("mode, n", [("linear", 1), ("trilinear", 3), ("nearest", 2), ("linear", 2)])
def test_other_upsampling_modes_are_nn_upsample(mode, n):
    axes = ["Y", "X", "Z"][:n]
    scale = [2, 3, 1][:n]
    spec = (f"axis C = 2, {', '.join(axes)}, {', '.join(a + '2' for a in axes)}\n"
            f"block Up(x: [C, {', '.join(axes)}]) -> [C, {', '.join(a + '2' for a in axes)}] {{\n"
            f"  return upsample(x, over = [{', '.join(axes)}] -> [{', '.join(a + '2' for a in axes)}], "
            f"scale = [{', '.join(map(str, scale))}], mode = {mode})\n}}\n")
    xs = torch.randn(2, 2, *[3, 4, 2][:n], dtype=DT, requires_grad=True)
    torch_mode = {("linear", 2): "bilinear"}.get((mode, n), mode)
    want = nn.Upsample(scale_factor=tuple(float(s) for s in scale), mode=torch_mode)(xs)
    grads_agree(ncd.load(spec)(xs), want, (xs,), (xs,))


COSTED = """
axis G = 2, Cg = 3, Dg = 2, K = 3, T = 11, T2, T3, C, D
block Net(x: [C, T]) -> [D, T3] {
    param W: [G, Dg, Cg, K] init normal(0, 1)
    param V: [D, D', K] init normal(0, 1)
    h = conv(x[C -> G Cg], W, over = T -> T2, kernel = [K], groups = [G], stride = 2, padding_mode = circular, padding = 1)
    u = upsample(h[G Dg -> D], over = T2 -> T3, mode = linear)
    return conv(u[D as D'], V, over = T3, kernel = [K], padding = causal)
}
"""


def test_costs_match_flop_counter():
    ir = ncd.check(COSTED, C=6, D=4)
    report = analyze(ir, {"B": 3}, input_grad=True)
    m = ncd.load(COSTED, C=6, D=4).to(DT)
    x = torch.randn(3, 6, 11, dtype=DT, requires_grad=True)
    with FlopCounterMode(display=False) as fwd:
        y = m(x)
    with FlopCounterMode(display=False) as bwd:
        y.sum().backward()
    assert report.number(report.total["matmul_flops_fwd"]) == fwd.get_total_flops()
    assert report.number(report.total["matmul_flops_bwd"]) == bwd.get_total_flops()


def test_emitted_python_equals_the_module(tmp_path):
    module = load_emitted(emit_python(ncd.check(COSTED, C=6, D=4), class_name="Entry"), tmp_path, "emitted_conv")
    m = ncd.load(COSTED, C=6, D=4).to(DT)
    e = module.Entry().to(DT)
    e.load_state_dict(m.state_dict())
    x = torch.randn(2, 6, 11, dtype=DT)
    assert torch.equal(e(x), m(x))


def test_the_drawing_names_the_options():
    dot = render_dot(ncd.check(COSTED, C=6, D=4))
    assert "groups = [G]" in dot and "padding_mode = circular" in dot
    assert "padding = causal" in dot and "mode = linear" in dot


def test_a_free_axis_too_short_for_reflect_is_a_located_error_at_load_and_forward():
    spec = """axis C = 1, D = 1, K = 3, T, T2
block R(x: [C, T]) -> [D, T2] {
    param W: [D, C, K] init normal(0, 1)
    return conv(x, W, over = T -> T2, kernel = [K], padding = 2, padding_mode = reflect)
}
"""
    with pytest.raises(NcdError, match="reflect padding by 2 needs axis T to have more than 2 positions") as info:
        ncd.load(spec, T=2)
    assert info.value.line == 4 and "replicate" in info.value.hint
    m = ncd.load(spec)
    assert m(torch.randn(1, 1, 3)).shape == (1, 1, 5)
    with pytest.raises(NcdError, match="reflect padding by 2 needs more than 2"):
        m(torch.randn(1, 1, 2))


def test_flop_counter_counts_a_grouped_weight_gradient_g_times():
    """Why the cost rule multiplies a grouped conv's weight gradient by G: FlopCounterMode does."""
    x = torch.randn(3, 6, 13, dtype=DT, requires_grad=True)
    counts = {}
    for g in (1, 2, 3):
        w = torch.randn(6, 6 // g, 3, dtype=DT, requires_grad=True)
        with FlopCounterMode(display=False) as fwd:
            y = F.conv1d(x, w, groups=g)
        with FlopCounterMode(display=False) as bwd:
            torch.autograd.grad(y.sum(), (w,))
        counts[g] = (fwd.get_total_flops(), bwd.get_total_flops())
    for g, (f, b) in counts.items():
        assert f * g == counts[1][0] and b == counts[1][1] == g * f


@pytest.mark.parametrize("padding", ["1, padding_mode = zeros", "1, padding_mode = reflect", "2, padding_mode = replicate",
                                     "1, padding_mode = circular", "causal"])
def test_saved_activations_match_saved_tensors_hooks(padding):
    """What the analyzer says autograd keeps equals what saved_tensors_hooks sees (5 %, as
    tests/test_cost.py): an explicitly padded input keeps the padded copy, reflect / replicate
    pads keep their input too."""
    spec = ("axis C = 3, D = 4, K = 3, T, T2\n"
            "block Net(x: [C, T]) -> [D, T2] {\n  param W: [D, C, K] init normal(0, 1)\n"
            f"  return tanh(conv(x, W, over = T -> T2, kernel = [K], padding = {padding}))\n}}\n")
    report = analyze(ncd.check(spec, T=16), {"B": 2}, input_grad=True)
    m = ncd.load(spec, T=16)
    x = torch.randn(2, 3, 16, requires_grad=True)
    params = {p.untyped_storage().data_ptr() for p in m.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in params:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = m(x)
    y.sum().backward()
    want = sum(saved.values())
    assert abs(report.number(report.total["activation_bytes"]) / want - 1) <= 0.05, (report.total, saved)

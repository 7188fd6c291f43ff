"""conv / conv_transpose / maxpool / avgpool / upsample over named axes, against torch.nn.functional.

Each case writes a one-block spec, compiles it in float64 and compares outputs and gradients with
the torch call on the same tensors, laid out by hand. Sizes are tiny and odd on purpose.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ncd

DT = torch.float64


def _spec(axes: str, signature: str, body: str) -> str:
    return f"# spatial op test\naxis {axes}\nblock Net{signature} {{\n{body}\n}}\n"


def _load(text: str, **sizes):
    return ncd.load(text, **sizes).to(DT)


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=DT))


def _check_grads(out, ref, tensors):
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, tensors, g, retain_graph=True)
    want = torch.autograd.grad(ref, tensors, g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------- conv2d
CONV2D = [  # (Y, X, KY, KX, stride, padding, dilation)
    (9, 8, 3, 2, 1, 0, 1),
    (9, 8, 3, 3, 2, 1, 1),
    (7, 10, 2, 3, 2, 0, 1),
    (11, 6, 3, 3, 1, 2, 2),
    (8, 8, 4, 4, 4, 0, 1),
]


@pytest.mark.parametrize("Y, X, KY, KX, s, p, d", CONV2D, ids=[f"{c[0]}x{c[1]}-k{c[2]}x{c[3]}-s{c[4]}p{c[5]}d{c[6]}"
                                                              for c in CONV2D])
def test_conv2d_matches_torch(Y, X, KY, KX, s, p, d):
    text = _spec(f"C = 3, C2 = 5, KY = {KY}, KX = {KX}, Y = {Y}, X = {X}, Y2, X2",
                 "(x: [C, Y, X]) -> [C2, Y2, X2]",
                 "param W: [C2, C, KY, KX] init normal(0, 1)\n"
                 f"return conv(x, W, over = [Y, X] -> [Y2, X2], kernel = [KY, KX], stride = {s}, padding = {p}, "
                 f"dilation = {d})")
    m = _load(text)
    x = torch.randn(2, 3, Y, X, dtype=DT, requires_grad=True)
    _check_grads(m(x), F.conv2d(x, m.W, stride=s, padding=p, dilation=d), (x, m.W))
    sizes = {k: v.size for k, v in ncd.check(text).axes.items()}
    want = F.conv2d(x, m.W, stride=s, padding=p, dilation=d).shape[2:]
    assert (int(sizes["Y2"]), int(sizes["X2"])) == tuple(want)  # inferred at check time


def test_conv_channel_order_is_by_name():
    """x channels-last with W in a scrambled order: the result is x's order, channels replaced."""
    text = _spec("C = 3, C2 = 4, KY = 3, KX = 2, Y = 7, X = 6, Y2, X2",
                 "(x: [Y, X, C]) -> [Y2, X2, C2]",
                 "param W: [KX, C, KY, C2] init normal(0, 1)\n"
                 "return conv(x, W, over = [Y, X] -> [Y2, X2], kernel = [KY, KX], stride = 2, padding = 1)")
    m = _load(text)
    x = torch.randn(2, 7, 6, 3, dtype=DT, requires_grad=True)
    w = m.W.permute(3, 1, 2, 0)  # [C2, C, KY, KX]
    ref = F.conv2d(x.permute(0, 3, 1, 2), w, stride=2, padding=1).permute(0, 2, 3, 1)
    _check_grads(m(x), ref, (x, m.W))


def test_conv_lifted_dims_and_spatial_first():
    """Two lifted dims, a batch-like core axis N, and x laid out [Y, N, C, X]."""
    text = _spec("N = 2, C = 3, C2 = 4, KY = 3, KX = 3, Y = 6, X = 5",
                 "(x: [Y, N, C, X]) -> [Y, N, C2, X]",
                 "param W: [C2, C, KY, KX] init normal(0, 1)\n"
                 "return conv(x, W, over = [Y, X], kernel = [KY, KX], padding = 1)")
    m = _load(text)
    x = torch.randn(2, 3, 6, 2, 3, 5, dtype=DT, requires_grad=True)  # [B1, B2, Y, N, C, X]
    flat = x.permute(0, 1, 3, 4, 2, 5).reshape(12, 3, 6, 5)
    ref = F.conv2d(flat, m.W, padding=1).reshape(2, 3, 2, 4, 6, 5).permute(0, 1, 4, 2, 3, 5)
    _check_grads(m(x), ref, (x, m.W))


def test_conv_several_channel_axes_and_none():
    """Contract two shared axes [H, K]; produce two output axes [G, G2]; and a channel-free input."""
    text = _spec("H = 2, K = 3, G = 2, G2 = 3, KY = 3, KX = 3, Y = 6, X = 5",
                 "(x: [H, K, Y, X], z: [Y, X]) -> [G, G2, Y, X]",
                 "param W: [G, H, G2, K, KY, KX] init normal(0, 1)\n"
                 "param V: [G, G2, KY, KX] init normal(0, 1)\n"
                 "return conv(x, W, over = [Y, X], kernel = [KY, KX], padding = 1) + "
                 "conv(z, V, over = [Y, X], kernel = [KY, KX], padding = 1)")
    m = _load(text)
    x = torch.randn(2, 2, 3, 6, 5, dtype=DT, requires_grad=True)
    z = torch.randn(2, 6, 5, dtype=DT, requires_grad=True)
    w = m.W.permute(0, 2, 1, 3, 4, 5).reshape(6, 6, 3, 3)
    ref = F.conv2d(x.reshape(2, 6, 6, 5), w, padding=1) + F.conv2d(z[:, None], m.V.reshape(6, 1, 3, 3), padding=1)
    _check_grads(m(x, z), ref.reshape(2, 2, 3, 6, 5), (x, z, m.W, m.V))


def test_conv1d_and_conv3d():
    text = _spec("C = 2, C2 = 3, K = 3, T, T2, Z = 4, Y = 5, X = 3, KZ = 2, KY = 3, KX = 2, Z2, Y2, X2",
                 "(x: [C, T], v: [C, Z, Y, X]) -> [C2, T2], [C2, Z2, Y2, X2]",
                 "param W: [C2, C, K] init normal(0, 1)\n"
                 "param V: [C2, C, KZ, KY, KX] init normal(0, 1)\n"
                 "a = conv(x, W, over = T -> T2, kernel = K, stride = 2, padding = 1)\n"
                 "b = conv(v, V, over = [Z, Y, X] -> [Z2, Y2, X2], kernel = [KZ, KY, KX], padding = 1)\n"
                 "return a, b")
    m = _load(text)
    x = torch.randn(2, 2, 11, dtype=DT, requires_grad=True)
    v = torch.randn(2, 2, 4, 5, 3, dtype=DT, requires_grad=True)
    a, b = m(x, v)
    _check_grads(a, F.conv1d(x, m.W, stride=2, padding=1), (x, m.W))
    _check_grads(b, F.conv3d(v, m.V, padding=1), (v, m.V))
    # the free axis T gives T2 = floor((T - 1) / 2) + 1 at run time, for any length
    assert m(torch.randn(13, 2, 4, dtype=DT), v[0])[0].shape == (13, 3, 2)


# ----------------------------------------------------------------------------- conv_transpose
@pytest.mark.parametrize("s, p, op, k", [(2, 0, 0, 2), (2, 1, 1, 3), (1, 1, 0, 3), (3, 1, 2, 4)],
                         ids=["s2k2", "s2p1op1k3", "s1p1k3", "s3p1op2k4"])
def test_conv_transpose2d_matches_torch(s, p, op, k):
    text = _spec(f"C = 3, C2 = 2, KY = {k}, KX = {k}, Yh = 4, Xh = 5, Y, X",
                 "(x: [C, Yh, Xh]) -> [C2, Y, X]",
                 "param W: [C, C2, KY, KX] init normal(0, 1)\n"
                 "return conv_transpose(x, W, over = [Yh, Xh] -> [Y, X], kernel = [KY, KX], "
                 f"stride = {s}, padding = {p}, output_padding = {op})")
    m = _load(text)
    x = torch.randn(2, 3, 4, 5, dtype=DT, requires_grad=True)
    ref = F.conv_transpose2d(x, m.W, stride=s, padding=p, output_padding=op)
    _check_grads(m(x), ref, (x, m.W))
    sizes = ncd.check(text).axes
    assert (int(sizes["Y"].size), int(sizes["X"].size)) == tuple(ref.shape[2:])


# ----------------------------------------------------------------------------- pooling, up-sampling
@pytest.mark.parametrize("kind", ["maxpool", "avgpool"])
@pytest.mark.parametrize("size, stride, padding", [(2, None, 0), (3, 2, 1), (3, 1, 0)], ids=["k2", "k3s2p1", "k3s1"])
def test_pool2d_matches_torch(kind, size, stride, padding):
    opts = f"size = {size}, padding = {padding}" + ("" if stride is None else f", stride = {stride}")
    text = _spec("C = 3, Y = 9, X = 6, Yh, Xh", "(x: [Y, C, X]) -> [Yh, C, Xh]",
                 f"return {kind}(x, over = [Y, X] -> [Yh, Xh], {opts})")
    m = _load(text)
    x = torch.randn(2, 9, 3, 6, dtype=DT, requires_grad=True)
    fn = F.max_pool2d if kind == "maxpool" else F.avg_pool2d
    ref = fn(x.permute(0, 2, 1, 3), size, stride=stride, padding=padding).permute(0, 2, 1, 3)
    _check_grads(m(x), ref, (x,))


def test_pool1d_and_same_size_pool():
    text = _spec("C = 3, T, T2", "(x: [T, C]) -> [T2, C], [T, C]",
                 "return maxpool(x, over = T -> T2, size = 3, stride = 2), avgpool(x, over = T, size = 3, stride = 1, "
                 "padding = 1)")
    m = _load(text)
    x = torch.randn(2, 11, 3, dtype=DT, requires_grad=True)
    a, b = m(x)
    _check_grads(a, F.max_pool1d(x.transpose(1, 2), 3, stride=2).transpose(1, 2), (x,))
    _check_grads(b, F.avg_pool1d(x.transpose(1, 2), 3, stride=1, padding=1).transpose(1, 2), (x,))


@pytest.mark.parametrize("scale", [2, 3])
def test_upsample_matches_interpolate(scale):
    text = _spec("C = 2, Yh = 3, Xh = 4, Y, X", "(x: [C, Yh, Xh]) -> [C, Y, X]",
                 f"return upsample(x, over = [Yh, Xh] -> [Y, X], scale = {scale})")
    m = _load(text)
    x = torch.randn(2, 2, 3, 4, dtype=DT, requires_grad=True)
    _check_grads(m(x), F.interpolate(x, scale_factor=scale, mode="nearest"), (x,))
    assert ncd.check(text).axes["Y"].size == str(3 * scale)


# ----------------------------------------------------------------------------- typing errors
ERRORS = [  # (axes, body, the message's words, line)
    ("C = 3, KY = 3, KX = 3, Y = 8, X = 8, Y2 = 8, X2",
     "param W: [C', C, KY, KX] init zeros\nreturn conv(x, W, over = [Y, X] -> [Y2, X2], kernel = [KY, KX], stride = 2)",
     "axis Y2 has size 8 here, but the output size of conv along Y is 3", 5),
    ("C = 3, KY = 3, KX = 3, Y, X",
     "param W: [C', C, KY, KX] init zeros\nreturn conv(x, W, over = [Y, X], kernel = [KY, KX])",
     "over keeps axis Y, but the output size of conv along Y is Y - 2", 5),
    ("C = 3, KY = 3, KX = 3, Y, X, Y2, X2",
     "param W: [C', C, KY] init zeros\nreturn conv(x, W, over = [Y, X] -> [Y2, X2], kernel = [KY, KX])",
     "kernel axis KX is not on the weights", 5),
    ("C = 3, KY = 3, KX = 3, Y, X, Z, Y2, X2",
     "param W: [C', C, KY, KX] init zeros\nreturn conv(x, W, over = [Y, Z] -> [Y2, X2], kernel = [KY, KX])",
     "axis Z is not on this wire", 5),
    ("C = 3, KY = 3, KX = 3, Y, X, Y2",
     "param W: [C', C, KY, KX] init zeros\nreturn conv(x, W, over = [Y, X] -> [Y2], kernel = [KY, KX])",
     "over maps 2 axes to 1", 5),
    ("C = 3, KY = 3, KX = 3, Y, X",
     "param W: [C', C, KY, KX] init zeros\nreturn conv(x, W, over = [Y, X], kernel = [KY], padding = 1)",
     "kernel names 1 axes but over names 2", 5),
    ("C = 3, KY = 3, KX = 3, Y, X",
     "param W: [C', C, KY, KX] init zeros\nreturn conv(x, W, over = [Y, X], kernel = [KY, KX], stride = 1.5)",
     "stride must be a whole number", 5),
    ("C = 3, Y = 8, X = 8, Yh = 5, Xh",
     "\nreturn maxpool(x, over = [Y, X] -> [Yh, Xh])",
     "axis Yh has size 5 here, but the pooled size along Y is 4", 5),
    ("C = 3, Y = 8, X = 8, Yh = 5, Xh",
     "\nreturn upsample(x, over = [Y, X] -> [Yh, Xh])",
     "axis Yh has size 5 here, but the up-sampled size along Y (2 × Y) is 16", 5),
]


@pytest.mark.parametrize("axes, body, message, line", ERRORS, ids=[f"err{i}" for i in range(len(ERRORS))])
def test_typing_errors_point_at_the_call(axes, body, message, line):
    text = _spec(axes, "(x: [C, Y, X]) -> [..]", body)
    with pytest.raises(ncd.NcdError) as info:
        ncd.check(text)
    assert message in str(info.value)
    assert info.value.line == line


def test_output_channels_must_not_clash_with_spatial_outputs():
    text = _spec("N = 2, C = 3, KY = 3, Y = 5, X, Y2", "(x: [N, C, Y]) -> [..]",
                 "param W: [Y2, C, KY] init zeros\n"
                 "return conv(x, W, over = Y -> Y2, kernel = KY)")
    with pytest.raises(ncd.NcdError, match="output channel axis Y2 of the weights is also an output spatial axis"):
        ncd.check(text)


def test_shared_axes_are_contracted():
    """Every axis on both x and W (kernel aside) is an input channel: here N and C."""
    text = _spec("N = 2, C = 3, C2 = 4, KY = 3, Y = 5, X", "(x: [N, C, Y]) -> [C2, Y]",
                 "param W: [C, C2, N, KY] init normal(0, 1)\n"
                 "return conv(x, W, over = Y, kernel = KY, padding = 1)")
    m = _load(text)
    x = torch.randn(2, 3, 5, dtype=DT, requires_grad=True)
    ref = F.conv1d(x.reshape(1, 6, 5), m.W.permute(1, 2, 0, 3).reshape(4, 6, 3), padding=1)[0]
    _check_grads(m(x), ref, (x, m.W))


# ----------------------------------------------------------------------------- cost and emitted source
def test_cost_matches_flop_counter():
    """matmul FLOPs of conv / conv_transpose, forward and backward, as torch's FlopCounterMode counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    from ncd.analysis import analyze

    text = _spec("C = 3, C2 = 4, KY = 3, KX = 3, Y = 9, X = 8, Y2, X2, Y3, X3",
                 "(x: [C, Y, X]) -> [C, Y3, X3]",
                 "param W: [C2, C, KY, KX] init normal(0, 1)\nparam V: [C2, C, KY, KX] init normal(0, 1)\n"
                 "h = conv(x, W, over = [Y, X] -> [Y2, X2], kernel = [KY, KX], stride = 2, padding = 1)\n"
                 "return conv_transpose(maxpool(h, over = [Y2, X2] -> [Y3, X3], size = 2, stride = 1), V, "
                 "over = [Y3, X3], kernel = [KY, KX], padding = 1)")
    report = analyze(ncd.check(text), {"B": 2}, input_grad=True)
    m = _load(text)
    x = torch.randn(2, 3, 9, 8, dtype=DT, requires_grad=True)
    with FlopCounterMode(display=False) as fwd:
        y = m(x)
    with FlopCounterMode(display=False) as bwd:
        y.sum().backward()
    assert report.number(report.total["matmul_flops_fwd"]) == fwd.get_total_flops()
    assert report.number(report.total["matmul_flops_bwd"]) == bwd.get_total_flops()


def test_emitted_source_computes_the_same():
    from ncd.backends.pytorch.emit import emit_python

    text = _spec("C = 3, C2 = 4, KY = 3, KX = 3, Y, X, Y2, X2, Y3, X3",
                 "(x: [Y, X, C]) -> [Y2, X2, C2]",
                 "param W: [C2, C, KY, KX] init normal(0, 1)\nparam V: [C2, C2', KY, KX] init normal(0, 1)\n"
                 "h = conv(x, W, over = [Y, X] -> [Y2, X2], kernel = [KY, KX], stride = 2, padding = 1)\n"
                 "p = avgpool(upsample(h, over = [Y2, X2] -> [Y3, X3]), over = [Y3, X3] -> [Y2, X2])\n"
                 "return conv_transpose(relu(p), V, over = [Y2, X2], kernel = [KY, KX], padding = 1)[C2' as C2]")
    m = _load(text)
    namespace: dict = {}
    exec(compile(emit_python(ncd.check(text)), "<emitted>", "exec"), namespace)  # our own generated code
    e = namespace["Net"]().to(DT)
    e.load_state_dict(m.state_dict())
    x = torch.randn(2, 9, 7, 3, dtype=DT)
    assert torch.equal(e(x), m(x))

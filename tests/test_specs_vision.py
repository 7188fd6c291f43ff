"""The vision and operator specs (vit, resnet_block, unet, deeponet) against plain PyTorch.

Each reference is written here from the papers' equations, reads the compiled module's own
weights (randomised, so that zero-initialised biases and heads are exercised), and is compared in
float64 to 1e-10: outputs, the input's gradient and every parameter's gradient.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import ncd

DT = torch.float64
SPECS = Path(__file__).resolve().parents[1] / "specs"


def _load(name: str, **sizes) -> torch.nn.Module:
    m = ncd.load(SPECS / f"{name}.ncd", **sizes).to(DT)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen, dtype=DT))
    return m


def _compare(module, reference, *inputs):
    inputs = [x.detach().clone().requires_grad_(True) for x in inputs]
    out = module(*inputs)
    ref = reference(dict(module.named_parameters()), *inputs)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    tensors = [*inputs, *module.parameters()]
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, tensors, g, retain_graph=True, allow_unused=True)
    want = torch.autograd.grad(ref, tensors, g, allow_unused=True)
    names = [f"input{i}" for i in range(len(inputs))] + [n for n, _ in module.named_parameters()]
    for name, a, b in zip(names, got, want):
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("name", ["vit", "resnet_block", "unet", "deeponet"])
def test_library_sizes_type_check(name):
    ncd.check(SPECS / f"{name}.ncd")


# ----------------------------------------------------------------------------- ViT
def _layer_norm(x, gamma, beta, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * gamma + beta


def _vit_reference(P, n_layers, heads):
    def ref(p, image):
        b = image.shape[0]
        grid = F.conv2d(image, p["W_E"], stride=P)                       # [B, D, Yp, Xp]
        patches = grid.flatten(2).transpose(1, 2) + p["b_E"]             # [B, S, D], row-major grid
        z = torch.cat([p["cls"].expand(b, 1, -1), patches], dim=1) + p["pos"]
        for i in range(n_layers):
            w = {k[len(f"layers.{i}."):]: v for k, v in p.items() if k.startswith(f"layers.{i}.")}
            h = _layer_norm(z, w["norm1.gamma"], w["norm1.beta"], 1e-6)
            q, k, v = (torch.einsum("btd,dhk->bthk", h, w[f"attn.W{c}"]) + w[f"attn.b{c}"] for c in "qkv")
            scores = torch.einsum("bthk,bshk->bhts", q, k) / math.sqrt(q.shape[-1])
            o = torch.einsum("bhts,bshk->bthk", scores.softmax(-1), v)
            z = z + torch.einsum("bthk,hkd->btd", o, w["attn.Wo"]) + w["attn.bo"]
            h = _layer_norm(z, w["norm2.gamma"], w["norm2.beta"], 1e-6)
            h = F.gelu(h @ w["mlp.W1"] + w["mlp.b1"])
            z = z + h @ w["mlp.W2"] + w["mlp.b2"]
        cls = _layer_norm(z[:, 0], p["norm.gamma"], p["norm.beta"], 1e-6)
        return cls @ p["W_head"] + p["b_head"]

    return ref


def test_vit_matches_reference():
    m = _load("vit", C=3, Y=12, X=8, P=4, D=8, H=2, F=16, Q=5)
    assert m.pos.shape == (1 + 3 * 2, 8)  # T = 1 + (Y/P)(X/P), inferred
    image = torch.randn(2, 3, 12, 8, dtype=DT)
    _compare(m, _vit_reference(4, 2, 2), image)


# ----------------------------------------------------------------------------- ResNet block
def _resnet_reference(p, x):
    h = F.conv2d(x, p["W1"], padding=1) * p["gamma1"][:, None, None] + p["beta1"][:, None, None]
    r = F.conv2d(h.relu(), p["W2"], padding=1) * p["gamma2"][:, None, None] + p["beta2"][:, None, None]
    return (x + r).relu()


def test_resnet_block_matches_reference():
    m = _load("resnet_block", C=4)
    _compare(m, _resnet_reference, torch.randn(2, 4, 7, 5, dtype=DT))  # any Y, X: 'same' padding


# ----------------------------------------------------------------------------- U-Net
def _double_conv(p, prefix, x):
    h = F.conv2d(x, p[f"{prefix}.W1"], p[f"{prefix}.b1"], padding=1).relu()
    return F.conv2d(h, p[f"{prefix}.W2"], p[f"{prefix}.b2"], padding=1).relu()


def _unet_reference(p, x):
    e1 = _double_conv(p, "enc1", x)
    e2 = _double_conv(p, "enc2", F.max_pool2d(e1, 2))
    mid = _double_conv(p, "mid", F.max_pool2d(e2, 2))
    u2 = F.conv_transpose2d(mid, p["up2.W"], p["up2.b"], stride=2)
    d2 = _double_conv(p, "dec2", torch.cat([e2, u2], dim=1))
    u1 = F.conv_transpose2d(d2, p["up1.W"], p["up1.b"], stride=2)
    d1 = _double_conv(p, "dec1", torch.cat([e1, u1], dim=1))
    return torch.einsum("bcyx,co->boyx", d1, p["W_out"]) + p["b_out"][:, None, None]


def test_unet_matches_reference():
    m = _load("unet", C=2, C1=3, C2=4, C3=5, O=2)
    _compare(m, _unet_reference, torch.randn(2, 2, 8, 12, dtype=DT))


def test_unet_with_bound_grid():
    m = ncd.load(SPECS / "unet.ncd", C=1, C1=2, C2=2, C3=2, O=1, Yq=2, Xq=3).to(DT)
    assert m(torch.randn(3, 1, 8, 12, dtype=DT)).shape == (3, 1, 8, 12)


# ----------------------------------------------------------------------------- DeepONet
def _mlp(p, prefix, x, last_act):
    h = torch.tanh(x @ p[f"{prefix}.W1"] + p[f"{prefix}.b1"])
    h = torch.tanh(h @ p[f"{prefix}.W2"] + p[f"{prefix}.b2"])
    h = h @ p[f"{prefix}.W3"] + p[f"{prefix}.b3"]
    return torch.tanh(h) if last_act else h


def _deeponet_pairs(p, u, y):  # one query point per function: G(u_i)(y_i)
    return (_mlp(p, "branch", u, False) * _mlp(p, "trunk", y, True)).sum(-1) + p["b0"]


def _deeponet_grid(p, u, y):  # every function at every query point: G(u_i)(y_j)
    return _mlp(p, "branch", u[:, 0], False) @ _mlp(p, "trunk", y, True).T + p["b0"]


def test_deeponet_matches_reference():
    m = _load("deeponet", M=7, Dy=2, Hb=5, Ht=4, P=3)
    _compare(m, _deeponet_pairs, torch.randn(6, 7, dtype=DT), torch.randn(6, 2, dtype=DT))
    _compare(m, _deeponet_grid, torch.randn(3, 1, 7, dtype=DT), torch.randn(5, 2, dtype=DT))

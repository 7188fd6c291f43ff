"""mip_hypernet (Ortiz et al. 2023) against hyperlight's HyperNet (PyPI, encoding="cos|sin") with
the same weights, in float64 at random sizes: the generated primary weights (the spec's taps)
equal hyperlight's outputs, and the primary network run with them (torch.func.functional_call
on an nn.Sequential, vmapped over examples) equals the spec's output, gradients included."""
from __future__ import annotations

import random

import pytest
import torch
from torch import nn

import ncd

hyperlight = pytest.importorskip("hyperlight")
TOL = dict(rtol=1e-10, atol=1e-10)


def load_from_hyperlight(m: nn.Module, hyper: nn.Module, shapes: dict[str, tuple[int, ...]]) -> None:
    bb = hyper.backbone
    offsets = hyper.output_offsets()
    H = bb.output.weight.shape[1]
    with torch.no_grad():
        m.A1.copy_(bb.block0_lin.weight.T)
        m.c1.copy_(bb.block0_lin.bias)
        m.A2.copy_(bb.block1_lin.weight.T)
        m.c2.copy_(bb.block1_lin.bias)
        for name, (head, base) in {"0.weight": ("G_W1", "W1_0"), "0.bias": ("G_b1", "b1_0"),
                                   "2.weight": ("G_W2", "W2_0"), "2.bias": ("G_b2", "b2_0")}.items():
            off, n = offsets[name]
            rows = bb.output.weight[off:off + n].view(*shapes[name], H)      # torch layout, then H
            bias = bb.output.bias[off:off + n].view(shapes[name])
            if name.endswith("weight"):                                        # [out, in] → spec [in, out]
                rows, bias = rows.permute(1, 0, 2), bias.T
            getattr(m, head).copy_(rows.movedim(-1, 0))
            getattr(m, base).copy_(bias)


@pytest.mark.parametrize("seed", range(4))
def test_mip_hypernet_matches_hyperlight(seed):
    rng = random.Random(seed)
    E, F, D, H, B = rng.randint(1, 6), rng.randint(1, 7), rng.randint(1, 4), rng.randint(1, 6), rng.randint(2, 4)
    torch.manual_seed(seed)
    primary = nn.Sequential(nn.Linear(E, F), nn.ReLU(), nn.Linear(F, D)).double()
    shapes = {name: tuple(p.shape) for name, p in primary.named_parameters()}
    hyper = hyperlight.HyperNet(input_shapes={"gamma": (1,)}, output_shapes=shapes, hidden_sizes=[H, H],
                                encoding="cos|sin").double()
    with torch.no_grad():                      # hyperlight zero-inits the bias heads: make them count
        for p in hyper.parameters():
            p.add_(0.3 * torch.randn_like(p))
    m = ncd.load("mip_hypernet", E=E, F=F, D=D, H=H).double()
    load_from_hyperlight(m, hyper, shapes)

    gamma = torch.rand(B, dtype=torch.float64, requires_grad=True)
    x = torch.randn(B, E, dtype=torch.float64, requires_grad=True)
    taps = {}
    for name in ("W1", "b1", "W2", "b2"):
        getattr(m.taps, name).register_forward_hook(lambda mod, args, out, name=name: taps.__setitem__(name, out))
    out = m(x, gamma)
    theta = hyper(gamma=gamma[:, None])
    torch.testing.assert_close(taps["W1"], theta["0.weight"].transpose(1, 2), **TOL)
    torch.testing.assert_close(taps["b1"], theta["0.bias"], **TOL)
    torch.testing.assert_close(taps["W2"], theta["2.weight"].transpose(1, 2), **TOL)
    torch.testing.assert_close(taps["b2"], theta["2.bias"], **TOL)

    def run_primary(params, xi):
        return torch.func.functional_call(primary, params, (xi,))
    ref = torch.func.vmap(run_primary)(theta, x)
    torch.testing.assert_close(out, ref, **TOL)

    w = torch.randn_like(ref)
    got = torch.autograd.grad((out * w).sum(), [x, gamma, m.A1, m.G_W2, m.b1_0])
    want = torch.autograd.grad((ref * w).sum(), [x, gamma, hyper.backbone.block0_lin.weight,
                                                   hyper.backbone.output.weight, hyper.backbone.output.bias])
    torch.testing.assert_close(got[0], want[0], **TOL)
    torch.testing.assert_close(got[1], want[1], **TOL)
    torch.testing.assert_close(got[2], want[2].T, **TOL)
    off, n = hyper.output_offsets()["2.weight"]
    torch.testing.assert_close(got[3], want[3][off:off + n].view(D, F, H).permute(2, 1, 0), **TOL)
    off, n = hyper.output_offsets()["0.bias"]
    torch.testing.assert_close(got[4], want[4][off:off + n], **TOL)


def test_encoding_is_hyperlights_cos_sin_and_has_unit_norm():
    m = ncd.load("mip_hypernet", E=2, F=2, D=1, H=1).double()
    seen = []
    m.taps.enc.register_forward_hook(lambda mod, args, out: seen.append(out))
    gamma = torch.linspace(0, 1, 7, dtype=torch.float64)
    m(torch.zeros(7, 2, dtype=torch.float64), gamma)
    want = hyperlight.hypernet.encoding.encode_input(gamma[:, None], mode="cos|sin")
    torch.testing.assert_close(seen[0], want, **TOL)
    torch.testing.assert_close(seen[0].norm(dim=-1), torch.ones(7, dtype=torch.float64), **TOL)

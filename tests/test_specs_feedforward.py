"""The feed-forward spec library against PyTorch written here from the papers' equations.

mlp_tanh / mlp_relu (Alleman et al. 2024) against nn.Sequential(Linear, Tanh/ReLU, Linear);
quadratic (Fan et al. 2021, ReLinear) against its formula, and at ReLinear initialisation against
σ(Linear); polycom (Zhuo et al. 2024) against PolyReLU from the paper's formula and PolyNorm as the
PolyCom repository writes it (weights highest power first); relu_kan (Qiu et al. 2024, All-KAN variant) against the reference's own computation
(Conv2d over a reshaped basis). Everything in float64, sizes drawn per seed; outputs and the
gradients with respect to the input and every parameter agree to 1e-10. The attention and
transformer specs are checked against torch.nn in test_interop_attention.py; torch.compile and
state_dict round trips are checked here.
"""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ncd
from ncd.library import library_path

FEEDFORWARD = ["mlp_tanh", "mlp_relu", "attention", "transformer_encoder", "transformer_encoder_preln",
               "transformer_single_layer", "quadratic", "polycom", "relu_kan"]
TOL = dict(rtol=1e-10, atol=1e-10)
SEEDS = [0, 1, 2]


def assert_same_with_grads(module: nn.Module, x: torch.Tensor, out: torch.Tensor, ref: torch.Tensor,
                           ref_params: dict[str, torch.Tensor] | None = None) -> None:
    """Outputs equal, and d<w, out>/d(x, every parameter) equal for a random cotangent w.

    ``ref_params`` names the tensors the reference computed with (default: the module's own).
    """
    torch.testing.assert_close(out, ref, **TOL)
    names, params = zip(*module.named_parameters())
    ref_side = [x, *(ref_params[n] for n in names)] if ref_params is not None else [x, *params]
    w = torch.randn_like(ref)
    got = torch.autograd.grad((out * w).sum(), (x, *params), retain_graph=True)
    want = torch.autograd.grad((ref * w).sum(), ref_side, allow_unused=True)
    for name, g, r in zip(("input", *names), got, want):
        r = torch.zeros_like(g) if r is None else r
        torch.testing.assert_close(g, r, **TOL, msg=lambda m, name=name: f"gradient of {name}: {m}")


def randomise(module: nn.Module, scale: float = 0.5) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * scale)


def batch_shape(rng: random.Random) -> tuple[int, ...]:
    return tuple(rng.randint(1, 3) for _ in range(rng.randint(0, 2)))


# ---------------------------------------------------------------- the library itself
@pytest.mark.parametrize("name", FEEDFORWARD)
def test_spec_loads_with_paper_sizes(name):
    assert library_path(name) is not None, f"specs/{name}.ncd missing"
    assert ncd.check(name).meta.paper
    module = ncd.load(name)                              # the defaults written in the spec
    assert sum(p.numel() for p in module.parameters()) > 0


# ---------------------------------------------------------------- one-hidden-layer MLPs
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name, act", [("mlp_tanh", nn.Tanh), ("mlp_relu", nn.ReLU)])
def test_mlp_matches_sequential(name, act, seed):
    rng = random.Random(seed)
    E, Fh, D = rng.randint(1, 6), rng.randint(1, 9), rng.randint(1, 5)
    torch.manual_seed(seed)
    m = ncd.load(name, E=E, F=Fh, D=D).double()
    ref = nn.Sequential(nn.Linear(E, Fh), act(), nn.Linear(Fh, D)).double()
    with torch.no_grad():
        ref[0].weight.copy_(m.W1.t())
        ref[0].bias.copy_(m.b1)
        ref[2].weight.copy_(m.W2.t())
        ref[2].bias.copy_(m.b2)
    x = torch.randn(*batch_shape(rng), E, dtype=torch.float64, requires_grad=True)
    out, want = m(x), ref(x)
    torch.testing.assert_close(out, want, **TOL)
    w = torch.randn_like(want)
    got = torch.autograd.grad((out * w).sum(), (x, m.W1, m.b1, m.W2, m.b2))
    exp = torch.autograd.grad((want * w).sum(), (x, ref[0].weight, ref[0].bias, ref[2].weight, ref[2].bias))
    for name_, g, r, tr in zip(("x", "W1", "b1", "W2", "b2"), got, exp, (False, True, False, True, False)):
        torch.testing.assert_close(g, r.t() if tr else r, **TOL, msg=lambda s, n=name_: f"gradient of {n}: {s}")


def test_mlp_initialisation_is_linear_like():
    torch.manual_seed(0)
    m = ncd.load("mlp_relu", E=16, F=64, D=4)
    assert m.W1.abs().max() <= 1 / 16**0.5 and m.W2.abs().max() <= 1 / 64**0.5
    assert m.W1.std() > 0.5 / 16**0.5 / 3**0.5


# ---------------------------------------------------------------- quadratic neurons (ReLinear)
def quadratic_formula(x, Wr, br, Wg, bg, Wb, c):
    """(x·w_r + b_r)(x·w_g + b_g) + (x⊙x)·w_b + c, one column of each W per neuron."""
    return (x @ Wr + br) * (x @ Wg + bg) + (x * x) @ Wb + c


@pytest.mark.parametrize("seed", SEEDS)
def test_quadratic_at_relinear_init_is_linear(seed):
    rng = random.Random(seed)
    E, D = rng.randint(1, 6), rng.randint(1, 6)
    torch.manual_seed(seed)
    for block, sigma in (("Quadratic", lambda z: z), ("QuadraticLayer", F.relu)):
        m = ncd.load("quadratic", block=block, E=E, D=D).double()
        q = m if block == "Quadratic" else m.q
        assert torch.all(q.Wg == 0) and torch.all(q.bg == 1) and torch.all(q.Wb == 0) and torch.all(q.c == 0)
        lin = nn.Linear(E, D).double()
        with torch.no_grad():
            lin.weight.copy_(q.Wr.t())
            lin.bias.copy_(q.br)
        x = torch.randn(*batch_shape(rng), E, dtype=torch.float64, requires_grad=True)
        out, want = m(x), sigma(lin(x))
        torch.testing.assert_close(out, want, **TOL)
        w = torch.randn_like(want)
        got = torch.autograd.grad((out * w).sum(), (x, q.Wr, q.br))
        exp = torch.autograd.grad((want * w).sum(), (x, lin.weight, lin.bias))
        torch.testing.assert_close(got[0], exp[0], **TOL)
        torch.testing.assert_close(got[1], exp[1].t(), **TOL)
        torch.testing.assert_close(got[2], exp[2], **TOL)


@pytest.mark.parametrize("seed", SEEDS)
def test_quadratic_trained_weights_match_formula(seed):
    rng = random.Random(seed)
    E, D = rng.randint(1, 6), rng.randint(1, 6)
    torch.manual_seed(seed)
    m = ncd.load("quadratic", E=E, D=D).double()
    randomise(m)
    q = m.q
    x = torch.randn(*batch_shape(rng), E, dtype=torch.float64, requires_grad=True)
    ref = F.relu(quadratic_formula(x, q.Wr, q.br, q.Wg, q.bg, q.Wb, q.c))
    assert_same_with_grads(m, x, m(x), ref)


# ---------------------------------------------------------------- PolyCom
class PolyReLURef(nn.Module):
    """Σᵢ₌₁..₃ aᵢ ReLU(x)ⁱ + a₀, coefficients lowest power first."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(3) / 3)
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        r = torch.relu(x)
        return self.weight[0] * r + self.weight[1] * r**2 + self.weight[2] * r**3 + self.bias


class PolyNormRef(nn.Module):
    """w₀·norm(x³) + w₁·norm(x²) + w₂·norm(x) + b, norm(u) = u / √(mean(u²) + ε) (highest power first)."""

    def __init__(self, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(3) / 3)
        self.bias = nn.Parameter(torch.zeros(1))
        self.eps = eps

    def _norm(self, u):
        return u * torch.rsqrt(u.pow(2).mean(-1, keepdim=True) + self.eps)

    def forward(self, x):
        return (self.weight[0] * self._norm(x**3) + self.weight[1] * self._norm(x**2)
                + self.weight[2] * self._norm(x) + self.bias)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("block", ["PolyReLUFFN", "PolyNormFFN"])
def test_polycom_ffn_matches_reference(block, seed):
    rng = random.Random(seed)
    D, Fh = rng.randint(1, 6), rng.randint(1, 9)
    torch.manual_seed(seed)
    m = ncd.load("polycom", block=block, D=D, F=Fh).double()
    assert torch.allclose(m.act.a if block == "PolyReLUFFN" else m.act.w, torch.full((3,), 1 / 3, dtype=torch.float64))
    randomise(m, 0.3)
    act = (PolyReLURef() if block == "PolyReLUFFN" else PolyNormRef()).double()
    with torch.no_grad():
        if block == "PolyReLUFFN":
            act.weight.copy_(m.act.a)
            act.bias.copy_(m.act.a0.reshape(1))
        else:
            act.weight.copy_(m.act.w.flip(0))              # the repository stores x³'s weight first
            act.bias.copy_(m.act.b.reshape(1))
    W1 = m.W1.detach().clone().requires_grad_(True)
    W2 = m.W2.detach().clone().requires_grad_(True)
    x = torch.randn(*batch_shape(rng), D, dtype=torch.float64, requires_grad=True)
    out, ref = m(x), act(x @ W1) @ W2
    coeff = "act.a" if block == "PolyReLUFFN" else "act.w"
    bias = "act.a0" if block == "PolyReLUFFN" else "act.b"
    torch.testing.assert_close(out, ref, **TOL)
    w = torch.randn_like(ref)
    got = dict(zip(("x", "W1", "W2", coeff, bias), torch.autograd.grad(
        (out * w).sum(), (x, m.W1, m.W2, m.get_parameter(coeff), m.get_parameter(bias)))))
    exp = torch.autograd.grad((ref * w).sum(), (x, W1, W2, act.weight, act.bias))
    flip = block == "PolyNormFFN"
    want = dict(zip(("x", "W1", "W2", coeff, bias),
                    (exp[0], exp[1], exp[2], exp[3].flip(0) if flip else exp[3], exp[4].reshape(()))))
    assert set(got) == {n for n, _ in m.named_parameters()} | {"x"}
    for n in got:
        torch.testing.assert_close(got[n], want[n], **TOL, msg=lambda s, n=n: f"gradient of {n}: {s}")


def test_polynorm_respects_eps():
    """eps enters: with all-zero pre-activations only the bias survives (no NaN from 0/0)."""
    m = ncd.load("polycom", D=3, F=4).double()
    with torch.no_grad():
        m.W1.zero_()
        m.act.b.fill_(0.5)
        m.W2.fill_(1.0)
    out = m(torch.randn(2, 3, dtype=torch.float64))
    torch.testing.assert_close(out, torch.full((2, 3), 2.0, dtype=torch.float64))


# ---------------------------------------------------------------- ReLU-KAN
def relu_kan_reference(x, gamma, beta, low, high, W, b, G, k):
    """The All-KAN ReLUKANLayer forward (norm_type='layer', base_activation='relu'): a LayerNorm, the
    basis broadcast against per-input grids, and a Conv2d over the basis *reshaped* to [J, E]."""
    E, J, D = W.shape
    r = 4 * G * G / ((k + 1) * (k + 1))
    lead = x.shape[:-1]
    x = F.layer_norm(x.reshape(-1, E), (E,), gamma, beta, eps=1e-5)
    xe = x.unsqueeze(2).expand(-1, -1, J)
    phi = (torch.relu(xe - low) * torch.relu(high - xe) * r) ** 2
    conv_w = W.permute(2, 0, 1).reshape(D, 1, J, E)     # our [E, J, D] in the reference's flat order
    y = F.conv2d(phi.reshape(len(phi), 1, J, E), conv_w, b)
    return y.reshape(*lead, D)


@pytest.mark.parametrize("seed", SEEDS)
def test_relu_kan_matches_reference(seed):
    rng = random.Random(seed)
    E, D, G, k = rng.randint(1, 5), rng.randint(1, 4), rng.randint(1, 6), rng.randint(1, 3)
    torch.manual_seed(seed)
    source = library_path("relu_kan").read_text(encoding="utf-8")
    assert "[k = 3]" in source
    m = ncd.load(source.replace("[k = 3]", f"[k = {k}]"), E=E, D=D, G=G).double()
    J = G + k
    grid = (torch.arange(J, dtype=torch.float64) - k) / G
    init = dict(rtol=0, atol=1e-7)                       # parameters start in float32, then .double()
    torch.testing.assert_close(m.low, grid.expand(E, J), **init)
    torch.testing.assert_close(m.high, (grid + (k + 1) / G).expand(E, J), **init)
    with torch.no_grad():                                # trained-looking grids, affine and weights
        m.low.add_(0.05 * torch.randn_like(m.low))
        m.high.add_(0.05 * torch.randn_like(m.high))
        m.gamma.add_(0.2 * torch.randn_like(m.gamma))
        m.beta.add_(0.2 * torch.randn_like(m.beta))
        m.b.normal_()
    x = torch.randn(*batch_shape(rng), E, dtype=torch.float64, requires_grad=True)
    ref = relu_kan_reference(x, m.gamma, m.beta, m.low, m.high, m.W, m.b, G, k)
    if E > 1:                                            # LayerNorm of one feature is constant
        assert ref.abs().max() > 0
    assert_same_with_grads(m, x, m(x), ref)


def test_relu_kan_basis_is_a_unit_bump():
    """Each φ_ij peaks at 1 in the middle of [low_j, high_j] and vanishes outside it."""
    m = ncd.load("relu_kan", E=1, D=1, G=4).double()
    with torch.no_grad():
        m.W.fill_(1.0)
        m.b.zero_()
    r = 4 * 16 / 16
    t = 0.3
    phi = (r * torch.relu(torch.tensor(t) - m.low[0]) * torch.relu(m.high[0] - t)) ** 2
    assert phi.max() <= 1 + 1e-12
    mid = (m.low[0, 3] + m.high[0, 3]) / 2
    one = (r * (mid - m.low[0, 3]) * (m.high[0, 3] - mid)) ** 2
    torch.testing.assert_close(one, torch.tensor(1.0, dtype=torch.float64))


# ---------------------------------------------------------------- torch.compile and state_dict
@pytest.mark.parametrize("backend", ["eager", pytest.param("aot_eager", marks=pytest.mark.slow)])
def test_torch_compile_attention_matches_eager(backend):
    torch.manual_seed(0)
    m = ncd.load("attention", D=8, H=2).double()
    randomise(m, 0.2)
    x = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)
    compiled = torch.compile(m, backend=backend)
    out = compiled(x)
    torch.testing.assert_close(out, m(x), **TOL)
    (g_c,) = torch.autograd.grad(out.sum(), x)
    (g_e,) = torch.autograd.grad(m(x).sum(), x)
    torch.testing.assert_close(g_c, g_e, **TOL)


@pytest.mark.parametrize("name, sizes", [("attention", dict(D=6, H=3)),
                                         ("transformer_encoder", dict(D=6, H=2, F=5)),
                                         ("polycom", dict(D=4, F=5)),
                                         ("relu_kan", dict(E=3, D=2, G=3))])
def test_state_dict_round_trip(name, sizes, tmp_path):
    torch.manual_seed(0)
    m = ncd.load(name, **sizes)
    randomise(m, 0.1)
    path = tmp_path / "weights.pt"
    torch.save(m.state_dict(), path)
    torch.manual_seed(1)
    fresh = ncd.load(name, **sizes)
    fresh.load_state_dict(torch.load(path))
    x = torch.randn(2, 4, sizes.get("E", sizes.get("D")))
    if name in ("polycom", "relu_kan"):
        x = x[0]
    torch.testing.assert_close(fresh(x), m(x), rtol=0, atol=0)

"""The linear-recurrence specs (gla, deltanet, mamba_negeig, lssl) against oracles nobody here wrote.

- gla and deltanet: their bare recurrences equal flash-linear-attention's pure-PyTorch references
  (``fla.ops.gla.naive.naive_recurrent_gla``, ``fla.ops.delta_rule.naive.delta_rule_recurrence``),
  outputs and input gradients; the whole layers equal the same references wrapped in the
  projections/norms the spec headers state, on the compiled modules' own weights.
- lssl: ``scipy.signal.cont2discrete(method='bilinear')`` gives Ā, B̄ and ``scipy.signal.dlsim``
  runs the recurrence, one channel at a time.
- mamba_negeig: a plain loop over t written here from the header's equations.

fla's references compute in float32 whatever the input dtype, so comparisons with them are at
float32 tolerance; everything else is float64 at 1e-10. Every spec also runs under
scan_backend="auto" and "sequential", which must agree, and the recurrence pass must classify each
scan as the header says (gla: gated outer product, deltanet: delta rule, mamba: diagonal, lssl:
time-invariant).
"""
from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import signal

import ncd
from ncd.errors import NcdError
from ncd.library import library_path

with warnings.catch_warnings():  # fla warns that Triton has no GPU here; its naive references are plain torch
    warnings.simplefilter("ignore")
    from fla.ops.delta_rule.naive import delta_rule_recurrence
    from fla.ops.gla.naive import naive_recurrent_gla

LINEAR = ["gla", "deltanet", "mamba_negeig", "lssl"]
EXACT = dict(rtol=1e-10, atol=1e-10)
FLOAT32 = dict(rtol=2e-5, atol=2e-5)   # fla's references run in float32
SHAPES = [  # (B, T, H, K, V): T = 1, odd T, one head, K ≠ V, T past a chunk
    (1, 1, 1, 3, 2),
    (2, 7, 3, 4, 5),
    (3, 13, 2, 5, 3),
    (1, 32, 1, 8, 8),
    (2, 37, 2, 4, 3),      # past a chunk boundary, not a multiple of it
]
SHAPE_IDS = [f"B{b}-T{t}-H{h}-K{k}-V{v}" for b, t, h, k, v in SHAPES]


def grads(out: torch.Tensor, inputs, w: torch.Tensor):
    return torch.autograd.grad((out * w).sum(), inputs)


def assert_close_with_grads(out, ref, inputs, tol, what=""):
    torch.testing.assert_close(out, ref, **tol, msg=lambda m: f"{what} output: {m}")
    w = torch.randn_like(ref)
    for i, (g, r) in enumerate(zip(grads(out, inputs, w), grads(ref, inputs, w))):
        torch.testing.assert_close(g, r, **tol, msg=lambda m, i=i: f"{what} gradient of input {i}: {m}")


def plans(module) -> set[tuple[str, str]]:
    return {(p.block, p.structure) for p in module.scan_plans}


# ---------------------------------------------------------------- the library itself
@pytest.mark.parametrize("name", LINEAR)
def test_spec_loads_with_its_sizes(name):
    assert library_path(name) is not None, f"specs/{name}.ncd missing"
    module = ncd.load(name)
    assert sum(p.numel() for p in module.parameters()) > 0


@pytest.mark.parametrize("name, block, structure", [
    ("gla", "GLA", "gla"),
    ("deltanet", "DeltaNet", "delta"),
    ("deltanet", "DeltaNet01", "delta"),
    ("mamba_negeig", "Mamba", "diagonal"),
    ("mamba_negeig", "Mamba01", "diagonal"),
    ("lssl", "LSSL", "time_invariant"),
])
def test_recurrence_pass_classifies_each_spec(name, block, structure):
    module = ncd.load(name, block=block)
    assert len(module.scan_plans) == 1
    plan = module.scan_plans[0]
    assert plan.linear and plan.structure == structure, plan.reason


# ---------------------------------------------------------------- gla
def gla_inputs(shape, seed):
    B, T, H, K, V = shape
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(B, T, H, K, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(B, T, H, V, generator=g, dtype=torch.float64)
    gk = F.logsigmoid(torch.randn(B, T, H, K, generator=g, dtype=torch.float64) + 2) / 4   # log-gates in (-∞, 0)
    return [t.requires_grad_() for t in (q, k, v, gk)]


@pytest.mark.parametrize("backend", ["auto", "sequential"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_gla_recurrence_equals_fla_naive(shape, backend):
    B, T, H, K, V = shape
    rec = ncd.load("gla", block="GLARecurrence", H=H, K=K, V=V, scan_backend=backend)
    q, k, v, gk = inputs = gla_inputs(shape, seed=T)
    ref, _ = naive_recurrent_gla(q, k, v, gk)          # [B, T, H, K] layout, q scaled by K^-1/2
    assert_close_with_grads(rec(q, k, v, gk), ref, inputs, FLOAT32, "GLARecurrence")


def gla_layer_reference(m, x):
    """GLA's layer from the header, with fla's naive recurrence in the middle."""
    q = torch.einsum("btd,dhk->bthk", x, m.W_Q)
    k = torch.einsum("btd,dhk->bthk", x, m.W_K)
    v = torch.einsum("btd,dhv->bthv", x, m.W_V)
    r = torch.einsum("btd,dhv->bthv", x, m.W_r)
    gk = F.logsigmoid(torch.einsum("btd,dr,rhk->bthk", x, m.W_1, m.W_2) + m.b) / 16
    o, _ = naive_recurrent_gla(q, k, v, gk)
    o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-5) * m.w_norm * F.silu(r)
    return torch.einsum("bthv,hvd->btd", o, m.W_O)


@pytest.mark.parametrize("T", [1, 9])
def test_gla_layer_equals_fla_naive_in_the_layer(T):
    torch.manual_seed(T)
    m = ncd.load("gla", D=12, H=2, K=3, V=4, R=5).double()
    with torch.no_grad():
        m.b.normal_()
        m.w_norm.uniform_(0.5, 1.5)
    x = torch.randn(2, T, 12, dtype=torch.float64, requires_grad=True)
    assert_close_with_grads(m(x), gla_layer_reference(m, x), [x, *m.parameters()], FLOAT32, "GLA layer")


def test_gla_layer_auto_equals_sequential():
    torch.manual_seed(0)
    auto = ncd.load("gla", D=12, H=3, K=2, V=4, R=3).double()
    seq = ncd.load("gla", D=12, H=3, K=2, V=4, R=3, scan_backend="sequential").double()
    seq.load_state_dict(auto.state_dict())
    assert plans(auto) == {("GLAHead", "gla")}
    assert seq.scan_plans[0].backend == "sequential"
    x = torch.randn(2, 11, 12, dtype=torch.float64, requires_grad=True)
    assert_close_with_grads(auto(x), seq(x), [x], EXACT, "GLA auto vs sequential")


# ---------------------------------------------------------------- deltanet
def delta_inputs(shape, seed, neg=True):
    B, T, H, K, V = shape
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, K, generator=g, dtype=torch.float64)
    k = F.normalize(torch.randn(B, T, H, K, generator=g, dtype=torch.float64), dim=-1)
    v = torch.randn(B, T, H, V, generator=g, dtype=torch.float64)
    beta = (2.0 if neg else 1.0) * torch.rand(B, T, H, generator=g, dtype=torch.float64)
    return [t.requires_grad_() for t in (q, k, v, beta)]


def fla_delta(q, k, v, beta):
    """fla's reference takes [B, H, T, K]; ours is [B, T, H, K] like its kernels."""
    o, _ = delta_rule_recurrence(*(t.transpose(1, 2) for t in (q, k, v, beta)))
    return o.transpose(1, 2)


@pytest.mark.parametrize("backend", ["auto", "sequential"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_delta_recurrence_equals_fla_naive(shape, backend):
    B, T, H, K, V = shape
    rec = ncd.load("deltanet", block="DeltaRecurrence", H=H, K=K, V=V, scan_backend=backend)
    inputs = delta_inputs(shape, seed=T)
    assert_close_with_grads(rec(*inputs), fla_delta(*inputs), inputs, FLOAT32, "DeltaRecurrence")


def deltanet_layer_reference(m, x, neg):
    """DeltaNet's layer from the header, with fla's naive delta rule in the middle."""
    q = F.normalize(F.silu(torch.einsum("btd,dhk->bthk", x, m.W_Q)), dim=-1, eps=1e-6)
    k = F.normalize(F.silu(torch.einsum("btd,dhk->bthk", x, m.W_K)), dim=-1, eps=1e-6)
    v = F.silu(torch.einsum("btd,dhv->bthv", x, m.W_V))
    beta = (1 + neg) * torch.sigmoid(torch.einsum("btd,dh->bth", x, m.W_beta))
    o = fla_delta(q, k, v, beta)
    o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-5) * m.w_norm
    return torch.einsum("bthv,hvd->btd", o, m.W_O)


@pytest.mark.parametrize("neg", [0, 1])
def test_deltanet_layer_equals_fla_naive_in_the_layer(neg):
    torch.manual_seed(neg)
    block = "DeltaNet" if neg else "DeltaNet01"
    outer = ncd.load("deltanet", block=block, D=10, H=2, K=3, V=4).double()
    m = outer if neg else outer.layer
    with torch.no_grad():
        m.W_beta.mul_(4)                         # β spread over its whole range
        m.w_norm.uniform_(0.5, 1.5)
    x = torch.randn(2, 9, 10, dtype=torch.float64, requires_grad=True)
    assert_close_with_grads(outer(x), deltanet_layer_reference(m, x, neg), [x, *m.parameters()], FLOAT32,
                            f"DeltaNet neg={neg}")


def test_deltanet_layer_auto_equals_sequential_and_negative_eigenvalues():
    torch.manual_seed(1)
    auto = ncd.load("deltanet", D=8, H=2, K=3, V=2).double()
    seq = ncd.load("deltanet", D=8, H=2, K=3, V=2, scan_backend="sequential").double()
    seq.load_state_dict(auto.state_dict())
    assert plans(auto) == {("DeltaHead", "delta")}
    x = torch.randn(3, 10, 8, dtype=torch.float64, requires_grad=True)
    assert_close_with_grads(auto(x), seq(x), [x], EXACT, "DeltaNet auto vs sequential")
    # the switch: β = 2σ(·) reaches past 1 (an eigenvalue 1 − β < 0 of the transition), σ(·) never does
    with torch.no_grad():
        auto.W_beta.mul_(20)
    seen = []
    hook = auto.recurrence.register_forward_pre_hook(lambda mod, args: seen.append(args[3].detach()))
    auto(x)
    hook.remove()
    assert seen[0].max() > 1.5 and seen[0].min() >= 0 and seen[0].max() <= 2


# ---------------------------------------------------------------- mamba with negative eigenvalues
def mamba_loop(x, W_dt, b_dt, A_log, W_B, W_C, D_skip, neg):
    """The header's equations, one step at a time."""
    A = -torch.exp(A_log)                                        # [D, N]
    h = x.new_zeros(*x.shape[:-2], *A.shape)
    ys = []
    for t in range(x.shape[-2]):
        xt = x[..., t, :]                                        # [B, D]
        dt = F.softplus(xt @ W_dt + b_dt)                        # [B, D]
        Abar = torch.exp(dt[..., None] * A)
        if neg:
            Abar = 2 * Abar - 1
        Bt, Ct = xt @ W_B, xt @ W_C                              # [B, N]
        h = Abar * h + (dt * xt)[..., None] * Bt[..., None, :]
        ys.append((h * Ct[..., None, :]).sum(-1) + D_skip * xt)
    return torch.stack(ys, dim=-2)


@pytest.mark.parametrize("backend", ["auto", "sequential"])
@pytest.mark.parametrize("neg", [0, 1])
def test_mamba_negeig_matches_equations(neg, backend):
    rng = random.Random(neg)
    B, T, D, N = rng.randint(1, 3), rng.choice([1, 6, 11]), rng.randint(2, 5), rng.randint(2, 4)
    torch.manual_seed(neg)
    outer = ncd.load("mamba_negeig", block="Mamba" if neg else "Mamba01", D=D, N=N, scan_backend=backend).double()
    m = outer if neg else outer.ssm
    with torch.no_grad():
        m.b_dt.uniform_(-1, 1)                                   # large steps: Ā spans its range
        m.A_log.add_(torch.randn_like(m.A_log) * 0.3)
        m.D_skip.normal_()
    x = torch.randn(B, T, D, dtype=torch.float64, requires_grad=True)
    if neg:  # the setting reaches negative eigenvalues 2 exp(ΔA) − 1 < 0
        dt = F.softplus(x @ m.W_dt + m.b_dt)
        assert (2 * torch.exp(dt[..., None] * -torch.exp(m.A_log)) - 1).min() < 0
    ref = mamba_loop(x, m.W_dt, m.b_dt, m.A_log, m.W_B, m.W_C, m.D_skip, neg)
    params = list(m.parameters())
    assert_close_with_grads(outer(x), ref, [x, *params], EXACT, f"Mamba neg={neg} {backend}")


# ---------------------------------------------------------------- lssl
def lssl_scipy(u: np.ndarray, dt: float, C: np.ndarray, D: float, N: int) -> np.ndarray:
    """One channel: scipy's bilinear Ā, B̄, then dlsim. dlsim's y_k reads the state before u_k,
    LSSL's after, so LSSL's y_k = C x_{k+1} + D u_k with dlsim's states (one extra step)."""
    n = np.arange(N)
    A = np.where(n[:, None] > n[None, :], -np.sqrt(2 * n[:, None] + 1) * np.sqrt(2 * n[None, :] + 1),
                 np.where(n[:, None] == n[None, :], -(n[:, None] + 1.0), 0.0))
    B = np.sqrt(2 * n + 1.0)[:, None]
    Ad, Bd, _, _, _ = signal.cont2discrete((A, B, np.eye(N), np.zeros((N, 1))), dt, method="bilinear")
    _, _, x = signal.dlsim((Ad, Bd, C[None, :], np.array([[D]]), dt), np.append(u, 0.0))
    return x[1:] @ C + D * u


@pytest.mark.parametrize("backend", ["auto", "sequential"])
def test_lssl_equals_scipy_bilinear_and_dlsim(backend):
    H, N, T = 3, 6, 17
    torch.manual_seed(0)
    m = ncd.load("lssl", H=H, N=N, scan_backend=backend).double()
    with torch.no_grad():
        m.log_dt.copy_(torch.log(torch.tensor([0.01, 0.2, 1.0], dtype=torch.float64)))
        m.D_skip.normal_()
    u = torch.randn(2, T, H, dtype=torch.float64)
    y = m(u).detach().numpy()
    dts = m.log_dt.exp().detach().numpy()
    for b in range(2):
        for h in range(H):
            want = lssl_scipy(u[b, :, h].numpy(), float(dts[h]), m.C[h].detach().numpy(),
                              float(m.D_skip[h].detach()), N)
            np.testing.assert_allclose(y[b, :, h], want, rtol=1e-10, atol=1e-10, err_msg=f"channel {h}")


def test_lssl_kernel_view_equals_recurrence():
    """Time-invariant: y = D u + (K * u) with K_i = C Āⁱ B̄ per channel (Ā, B̄ from scipy)."""
    H, N, T = 2, 5, 9
    m = ncd.load("lssl", H=H, N=N).double()
    u = torch.randn(1, T, H, dtype=torch.float64)
    y = m(u).detach()
    impulse = torch.zeros(1, T, H, dtype=torch.float64)
    impulse[0, 0] = 1.0
    kernel = (m(impulse) - impulse * m.D_skip).detach()[0]      # [T, H]: K_0 .. K_{T-1}
    conv = torch.stack([(kernel[: t + 1].flip(0) * u[0, : t + 1]).sum(0) for t in range(T)])
    torch.testing.assert_close(y[0], conv + m.D_skip.detach() * u[0], **EXACT)


# ---------------------------------------------------------------- the inv op
def test_inv_op_inverts_over_named_axes_in_any_position():
    spec = """
    axis N = 3, H = 2
    block F(m: [N, H, N']) -> [N, H, N'] { return inv(m, over = [N, N']) }
    """
    mats = torch.randn(4, 3, 2, 3, dtype=torch.float64) + 3 * torch.eye(3, dtype=torch.float64)[:, None, :]
    got = ncd.load(spec)(mats)
    want = torch.linalg.inv(mats.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)
    torch.testing.assert_close(got, want, **EXACT)


def test_inv_op_rejects_a_non_square_matrix():
    spec = """
    axis N = 3, M = 2
    block F(m: [N, M]) -> [N, M] { return inv(m, over = [N, M]) }
    """
    with pytest.raises(NcdError, match="square"):
        ncd.check(spec)

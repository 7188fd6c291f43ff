"""Parallel scan backends equal the sequential loop; the pass's classes agree with jacrev."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import ncd
from ncd.backends.pararnn import structure_violation

SPECS = Path(__file__).resolve().parents[1] / "specs"
SMALL = {"paragru": dict(E=8, D=8, H=2), "paralstm": dict(E=8, D=8, H=2)}


def pair(spec, sizes, backend="auto"):
    torch.manual_seed(0)
    seq = ncd.load(spec, scan_backend="sequential", **sizes).double()
    par = ncd.load(spec, scan_backend=backend, **sizes).double()
    par.load_state_dict(seq.state_dict())
    return seq, par


def assert_same(seq, par, *inputs, atol=1e-10):
    ys, yp = seq(*inputs), par(*inputs)
    torch.testing.assert_close(yp, ys, rtol=0, atol=atol)
    wrt_s = [*(i for i in inputs if i.requires_grad), *seq.parameters()]
    wrt_p = [*(i for i in inputs if i.requires_grad), *par.parameters()]
    gs = torch.autograd.grad(ys.sin().sum(), wrt_s)
    gp = torch.autograd.grad(yp.sin().sum(), wrt_p)
    for a, b in zip(gp, gs):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-8)


@pytest.mark.parametrize("name", ["paragru", "paralstm"])
@pytest.mark.parametrize("shape", [(3, 17), (1, 1), (2, 1, 6), (5,)], ids=lambda s: "x".join(map(str, s)))
def test_para_cells_use_newton_and_equal_the_loop(name, shape):
    seq, par = pair(SPECS / f"{name}.ncd", SMALL[name])
    assert [p.backend for p in par.scan_plans] == ["newton"]
    x = torch.randn(*shape, 8, dtype=torch.float64, requires_grad=True)
    assert_same(seq, par, x)
    stats = par.parallel_scans()[0].stats
    assert stats.calls >= 1 and stats.fallbacks == 0


def test_fused_newton_steps_in_a_compiled_spec_equal_the_loop():
    """fuse_scans=True traces the spec's step (our interpreter) into one compiled graph per
    Newton step; values and gradients are unchanged."""
    torch.manual_seed(0)
    sizes = SMALL["paragru"]
    seq = ncd.load(SPECS / "paragru.ncd", scan_backend="sequential", **sizes).double()
    par = ncd.load(SPECS / "paragru.ncd", fuse_scans=True, **sizes).double()
    par.load_state_dict(seq.state_dict())
    (scan,) = par.parallel_scans()
    assert scan.solver.fuse
    assert_same(seq, par, torch.randn(2, 23, 8, dtype=torch.float64, requires_grad=True))
    assert scan.stats.fallbacks == 0 and set(scan.solver._fused) == {"_system", "_reverse_coefficients", "_cell_vjp"}


LINEAR = """
# a diagonal linear recurrence with input-dependent decay (Mamba-like, one channel axis)
axis T, E = 3, D = 4
block Lin(x: [T, E], h0: [D]) -> [T, D] {
    param Wa, Wb: [E, D] init normal(0, 0.5)
    return scan t over T REVERSE carry (h: [D] = h0) {
        h = sigmoid(x[t] @[E] Wa) * h + x[t] @[E] Wb
        emit h * 2
    }
}
"""


@pytest.mark.parametrize("reverse", [False, True])
def test_linear_diagonal_scan_with_initial_state(reverse):
    spec = LINEAR.replace("REVERSE", "reverse" if reverse else "")
    seq, par = pair(spec, {})
    assert [(p.structure, p.backend) for p in par.scan_plans] == [("diagonal", "scan")]
    x = torch.randn(2, 11, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    assert_same(seq, par, x, h0)


def test_segments_carry_the_state():
    spec = LINEAR.replace("REVERSE", "")
    _, par = pair(spec, {})
    x = torch.randn(2, 10, 3, dtype=torch.float64)
    h0 = torch.randn(2, 4, dtype=torch.float64)
    whole = par(x, h0)
    first = par(x[:, :6], h0)
    second = par(x[:, 6:], first[:, -1] / 2)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, rtol=0, atol=1e-12)


def test_forcing_a_backend_the_step_does_not_allow_is_an_error():
    with pytest.raises(ncd.NcdError, match="affine and elementwise"):
        ncd.load(SPECS / "gru.ncd", scan_backend="scan", E=3, D=4)
    with pytest.raises(ncd.NcdError, match="unknown scan backend"):
        ncd.load(SPECS / "gru.ncd", scan_backend="warp")


RECURRENT = ["rnn_tanh", "rnn_relu", "gru", "lstm", "bilstm", "leaky_rnn", "paragru", "paralstm"]


class Recorder:
    """Stands in for the Newton solver: records the step, then solves by the loop it wraps."""

    def __init__(self, solver):
        self.solver, self.calls = solver, []

    def __call__(self, cell, h0, xs, *params):
        self.calls.append((cell, h0, xs, params))
        return self.solver(cell, h0, xs, *params)


@pytest.mark.parametrize("name", [n for n in RECURRENT if (SPECS / f"{n}.ncd").exists()])
def test_classification_agrees_with_jacrev(name):
    """Force every scan through the Newton runner, capture its step and differentiate it."""
    ir = ncd.check(SPECS / f"{name}.ncd")
    sizes = {a: 4 for a, d in ir.axes.items() if d.size is not None and a not in ("T",)}
    sizes.update({"H": 2} if "H" in ir.axes else {})
    sizes = {k: v for k, v in sizes.items() if ir.axes[k].size is not None and "/" not in ir.axes[k].size
             and "*" not in ir.axes[k].size}
    torch.manual_seed(0)
    module = ncd.load(SPECS / f"{name}.ncd", scan_backend="newton", **sizes).double()
    recorders = []
    for sub in module.modules():
        for scan in getattr(sub, "parallel_scans", lambda: [])():
            scan.solver = Recorder(scan.solver)
            recorders.append((scan.loop.plan, scan.solver))
    assert recorders, "no scan ran in parallel"
    port = ir.entry_block.inputs[0]
    from ncd.backends.pytorch.program import SizeTable

    table = SizeTable(ncd.check(SPECS / f"{name}.ncd", **sizes))
    x = torch.randn(1, 3, *[table.bound(a) or 3 for a in port.type.axes[1:]], dtype=torch.float64)
    module(x)
    for plan, recorder in recorders:
        assert_class_by_jacrev(plan, recorder.calls[0])


def assert_class_by_jacrev(plan, call):
    """The plan's class against the Jacobian of the step the solver was handed, by jacrev at a
    random point: diagonal/block must fit exactly, anything else must not be diagonal."""
    cell, h0, xs, params = call
    rows = xs.shape[0] * xs.shape[1]
    h = torch.randn(rows, h0.shape[1], dtype=torch.float64)
    x_rows = xs.reshape(rows, *xs.shape[2:])
    if plan.structure == "diagonal":
        assert structure_violation(cell, h, x_rows, params, "diag") < 1e-12, plan.reason
    elif plan.structure == "block":
        assert structure_violation(cell, h, x_rows, params, "block", plan.block_size) < 1e-12, plan.reason
    else:
        assert structure_violation(cell, h, x_rows, params, "diag") > 1e-6, \
            f"{plan.structure} but the Jacobian is diagonal"


TIME_INVARIANT = """
# a linear state space with a constant dense transition (LSSL-like), read out every step
axis T, N = 5, E = 2
block SSM(u: [T, E], h0: [N]) -> [T, E] {
    param A: [N', N] init normal(0, 0.3)
    param Bm: [E, N] init normal(0, 1)
    param C: [N, E] init normal(0, 1)
    return scan t over T carry (h: [N] = h0) {
        h = h[N as N'] @[N'] A + u[t] @[E] Bm
        emit h @[N] C + u[t]
    }
}
"""


def test_time_invariant_scan_runs_as_an_fft_convolution():
    seq, par = pair(TIME_INVARIANT, {})
    assert [(p.structure, p.backend) for p in par.scan_plans] == [("time_invariant", "fft")]
    u = torch.randn(3, 13, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert_same(seq, par, u, h0)
    short = torch.randn(2, 2, 2, dtype=torch.float64, requires_grad=True)  # T < N: several probes
    assert_same(seq, par, short, h0[:2].detach())


KERNEL_SPECS = {"gla": dict(D=16, H=2, K=4, V=8, R=4), "deltanet": dict(D=16, H=2)}


@pytest.mark.parametrize("name", [n for n in KERNEL_SPECS if (SPECS / f"{n}.ncd").exists()])
def test_gla_and_delta_specs_run_their_chunked_kernels(name):
    seq, par = pair(SPECS / f"{name}.ncd", KERNEL_SPECS[name])
    expected = {"gla": ("gla", "gla"), "deltanet": ("delta", "delta")}[name]
    assert [(p.structure, p.backend) for p in par.scan_plans] == [expected]
    x = torch.randn(2, 19, KERNEL_SPECS[name]["D"], dtype=torch.float64, requires_grad=True)  # 19: not a chunk multiple
    assert_same(seq, par, x)


SCALAR_GATE = """
# a GLA-like step with a scalar decay per step, run in reverse, starting from a given state
axis T, K = 3, V = 2
block G(q: [T, K], k: [T, K], v: [T, V], a: [T], s0: [K, V]) -> [T, V] {
    return scan t over T reverse carry (S: [K, V] = s0) {
        S = sigmoid(a[t]) * S + k[t] * v[t]
        emit q[t] @[K] S
    }
}
"""


def test_a_scalar_gate_reverse_gla_step_uses_the_kernel():
    seq, par = pair(SCALAR_GATE, {})
    assert [p.backend for p in par.scan_plans] == ["gla"]
    args = [torch.randn(2, 7, *s, dtype=torch.float64, requires_grad=True) for s in ((3,), (3,), (2,), ())]
    s0 = torch.randn(2, 3, 2, dtype=torch.float64, requires_grad=True)
    assert_same(seq, par, *args, s0)


def heads_inputs(spec, lead=(2,), T=9, seed=1):
    """Random float64 inputs for every port of the entry block: [*lead, *port axes], T steps; ports
    named g* are log gates (≤ 0), b* are β in (0, 1), k* are keys scaled down (a bounded state)."""
    from ncd.backends.pytorch.program import SizeTable

    ir = ncd.check(spec)
    table = SizeTable(ir)
    gen = torch.Generator().manual_seed(seed)
    args = []
    for port in ir.entry_block.inputs:
        shape = [T if a == "T" else table.bound(a) for a in port.type.axes]
        x = torch.randn(*lead, *shape, generator=gen, dtype=torch.float64)
        x = {"g": -x.abs(), "b": torch.sigmoid(x), "k": x / 2}.get(port.name[0], x)
        args.append(x.requires_grad_())
    return args


def test_head_axes_inside_the_state_run_the_chunked_kernels():
    spec = """
    axis T, H = 2, K = 3, V = 4
    block G(q: [T, H, K], k: [T, H, K], v: [T, H, V], g: [T, H, K], b: [T, H]) -> [T, H, V] {
        a = scan t over T carry (S: [H, K, V] = 0) {
            S = exp(g[t]) * S + k[t] * v[t]
            emit q[t] @[K] S
        }
        d = scan t over T carry (S: [H, K, V] = 0) {
            S = S - b[t] * k[t] * (k[t] @[K] S) + b[t] * k[t] * v[t]
            emit q[t] @[K] S
        }
        return a + d
    }
    """
    seq, par = pair(spec, {})
    assert [(p.structure, p.backend) for p in par.scan_plans] == [("gla", "gla"), ("delta", "delta")]
    assert par.scan_plans[0].kernel_layout.heads == ["H"]
    assert "lift" not in par.scan_plans[0].reason
    assert_same(seq, par, *heads_inputs(spec, T=5))


HEADS = {
    # heads after K (and after V), the read-out written S @[K] q, which puts the heads first
    "not_leading": ("""
    axis T, H = 2, K = 3, V = 4
    block G(q: [T, H, K], k: [T, K, H], v: [T, V, H], g: [T, K, H], b: [T, H]) -> [T, H, V] {
        a = scan t over T carry (S: [K, H, V] = 0) {
            S = exp(g[t]) * S + k[t] * v[t]
            emit S @[K] q[t]
        }
        d = scan t over T carry (S: [K, V, H] = 0) {
            S = S - b[t] * k[t] * (k[t] @[K] S) + b[t] * k[t] * v[t]
            emit S @[K] q[t]
        }
        return a + (d : [T, H, V])
    }
    """, ["gla", "delta"]),
    # two head axes, split around the key and value axes; β over one of them only
    "two_heads": ("""
    axis T, G = 2, H = 3, K = 4, V = 2
    block G2(q: [T, G, H, K], k: [T, H, G, K], v: [T, G, H, V], g: [T, G, H, K], b: [T, H]) -> [T, G, H, V] {
        a = scan t over T carry (S: [G, K, H, V] = 0) {
            S = exp(g[t]) * S + k[t] * v[t]
            emit q[t] @[K] S
        }
        d = scan t over T carry (S: [H, K, V, G] = 0) {
            S = S - b[t] * k[t] * (k[t] @[K] S) + b[t] * k[t] * v[t]
            emit q[t] @[K] S
        }
        return a + d
    }
    """, ["gla", "delta"]),
    # scalar gates: one per head (a log gate), one per step shared by the heads (not a log gate),
    # one per head of two (a subset of the heads); keys shared by the heads (broadcast)
    "scalar_gates": ("""
    axis T, G = 2, H = 2, K = 3, V = 4
    block S(q: [T, H, K], k: [T, H, K], v: [T, H, V], g: [T, H], a: [T], k1: [T, K], g2: [T, G]) -> [T, H, V] {
        x = scan t over T carry (S: [H, K, V] = 0) {
            S = exp(g[t]) * S + k[t] * v[t]
            emit q[t] @[K] S
        }
        y = scan t over T carry (S: [K, H, V] = 0) {
            S = sigmoid(a[t]) * S + k1[t] * v[t]
            emit q[t] @[K] S
        }
        z = scan t over T carry (S: [G, H, K, V] = 0) {
            S = exp(g2[t]) * S + k[t] * v[t]
            emit q[t] @[K] S
        }
        return x + y + sum(z, over = G)
    }
    """, ["gla", "gla", "gla"]),
    "reverse": ("""
    axis T, H = 2, K = 3, V = 4
    block R(q: [T, H, K], k: [T, H, K], v: [T, V, H], g: [T, H, K], b: [T, H]) -> [T, H, V] {
        a = scan t over T reverse carry (S: [V, H, K] = 0) {
            S = exp(g[t]) * S + k[t] * v[t]
            emit q[t] @[K] S
        }
        d = scan t over T reverse carry (S: [H, V, K] = 0) {
            S = S - b[t] * k[t] * (k[t] @[K] S) + b[t] * k[t] * v[t]
            emit q[t] @[K] S
        }
        return (a : [T, H, V]) + (d : [T, H, V])
    }
    """, ["gla", "delta"]),
    # initial states with heads: a lifted input in the declared order, and a learned one
    "initial_state": ("""
    axis T, H = 2, K = 3, V = 4
    block I(q: [T, H, K], k: [T, H, K], v: [T, H, V], g: [T, H, K], b: [T, H], s0: [K, H, V]) -> [T, H, V] {
        param S1: [V, H, K] init normal(0, 1)
        a = scan t over T carry (S: [K, H, V] = s0) {
            S = exp(g[t]) * S + k[t] * v[t]
            emit q[t] @[K] S
        }
        d = scan t over T reverse carry (S: [H, K, V] = S1) {
            S = S - b[t] * k[t] * (k[t] @[K] S) + b[t] * k[t] * v[t]
            emit q[t] @[K] S
        }
        return a + d
    }
    """, ["gla", "delta"]),
}


@pytest.mark.parametrize("lead", [(2,), (2, 3)], ids=["batch", "two_batch_axes"])
@pytest.mark.parametrize("name", HEADS)
def test_head_axes_anywhere_in_the_state_run_the_chunked_kernels(name, lead):
    spec, backends = HEADS[name]
    seq, par = pair(spec, {})
    assert [p.backend for p in par.scan_plans] == backends, [p.reason for p in par.scan_plans]
    assert_same(seq, par, *heads_inputs(spec, lead=lead))


def test_a_gate_along_v_or_a_read_out_along_v_falls_back_and_says_why():
    spec = """
    axis T, H = 2, K = 3, V = 4
    block F(q: [T, H, K], k: [T, H, K], v: [T, H, V], g: [T, H, V], b: [T, H], w: [T, H, V]) -> [T, H, K] {
        a = scan t over T carry (S: [H, K, V] = 0) {
            S = exp(g[t]) * S + k[t] * v[t]
            emit q[t] @[K] S
        }
        d = scan t over T carry (S: [H, K, V] = 0) {
            S = S - b[t] * k[t] * (k[t] @[K] S) + b[t] * k[t] * v[t]
            emit S @[V] w[t]
        }
        return (a @[V] w) * d
    }
    """
    seq, par = pair(spec, {})
    gla_plan, delta_plan = par.scan_plans
    assert [(p.structure, p.backend) for p in par.scan_plans] == [("gla", "scan"), ("delta", "sequential")]
    assert "the log gate has axes [H, V], but the kernel takes it along [H, K]" in gla_plan.reason
    assert "the erase term's k @ S contracts [K], not the read-out's V" in delta_plan.reason
    assert gla_plan.kernel is None and delta_plan.kernel is None
    assert_same(seq, par, *heads_inputs(spec))


def test_a_spec_can_ask_for_a_backend_and_the_caller_overrides_it():
    spec = LINEAR.replace("REVERSE", "").replace("= h0) {", "= h0) via sequential {")
    assert [p.backend for p in ncd.load(spec).scan_plans] == ["sequential"]
    assert "requested" in ncd.load(spec).scan_plans[0].reason
    assert [p.backend for p in ncd.load(spec, scan_backend="scan").scan_plans] == ["scan"]


GATED = """
axis T, H = 2, K = 3, V = 4
block G(q: [T, H, K], k: [T, H, K], v: [T, H, V], g: [T, H, K]) -> [T, H, V] {
    return scan t over T carry (S: [H, K, V] = 0) {
        S = GATE * S + k[t] * v[t]
        emit q[t] @[K] S
    }
}
"""


@pytest.mark.parametrize("gate,backend", [
    ("sigmoid(g[t])", "gla"), ("exp(g[t])", "gla"), ("0.9", "gla"),
    ("tanh(g[t])", "scan"), ("-0.5", "scan"),      # may be negative: the kernel takes log(gate)
])
def test_only_provably_positive_gates_reach_the_gla_kernel(gate, backend):
    seq, par = pair(GATED.replace("GATE", gate), {})
    (plan,) = par.scan_plans
    assert plan.backend == backend
    if backend == "scan":
        assert "not provably positive" in plan.reason
    args = [torch.randn(2, 5, *s, dtype=torch.float64, requires_grad=True)
            for s in ((2, 3), (2, 3), (2, 4), (2, 3))]
    args[3].requires_grad_("g[t]" in gate)   # a constant gate leaves g unused
    assert_same(seq, par, *args)


# ----------------------------------------------------------------------------- steps that call sub-blocks
SUB_CELL = """
axis T, E = 3, D = 4, H = 2
block Cell(h: [D], x: [E]) -> [D] {
    param a: [D] init uniform(-1, 1)
    param W: [E, D] init normal(0, 0.5)
    return BODY
}
block R(x: [T, E]) -> [T, D] {
    use cell = Cell
    return scan t over T carry (h: [D] = 0) {
        h = cell(h, x[t])
        emit h
    }
}
"""
SUB_BODIES = {  # the callee's body: (structure, backend) the pass must find through the call
    "tanh(a * h + x @[E] W)": ("diagonal", "newton"),
    "a * h + x @[E] W": ("diagonal", "scan"),
    "tanh(h[D as D'] @[D'] W2 + a + x @[E] W)": ("dense", "sequential"),
    "tanh(a * (h - mean(h, over = D)) + x @[E] W)": ("dense", "sequential"),
}
SUB_SPECS = {
    "lifted": """
    axis T, E = 3, D = 4, H = 2
    block Cell(h: [D], x: [E]) -> [D] {
        param a: [D] init uniform(-1, 1)
        param W: [E, D] init normal(0, 0.5)
        return tanh(a * h + x @[E] W)
    }
    block R(x: [T, E]) -> [T, H, D] {
        use cell = Cell
        return scan t over T carry (h: [H, D] = 0) {
            h = cell(h, x[t])
            emit h
        }
    }
    """,
    "nested": """
    axis T, E = 3, D = 4
    block Inner(h: [D], x: [E]) -> [D] {
        param a: [D] init uniform(-1, 1)
        param W: [E, D] init normal(0, 0.5)
        return a * h + x @[E] W
    }
    block Outer(h: [D], x: [E]) -> [D] {
        use inner = Inner
        param g: [D] init uniform(0.5, 1)
        return tanh(g * inner(h, x))
    }
    block R(x: [T, E]) -> [T, D] {
        use cell = Outer
        return scan t over T carry (h: [D] = 0) {
            h = cell(h, x[t])
            emit h
        }
    }
    """,
    "repeated": """
    axis T, E = 3, D = 4
    block Layer(h: [D]) -> [D] {
        param a: [D] init uniform(-1, 1)
        return tanh(a * h)
    }
    block R(x: [T, E]) -> [T, D] {
        use layers = Layer × 2
        param W: [E, D] init normal(0, 0.5)
        return scan t over T carry (h: [D] = 0) {
            h = layers(h) + x[t] @[E] W
            emit h
        }
    }
    """,
    "block": """
    axis T, E = 3, D = 4
    block Cell2(c: [D], h: [D], x: [E]) -> [D], [D] {
        param a, b: [D] init uniform(-1, 1)
        param W, V: [E, D] init normal(0, 0.5)
        c = sigmoid(a * h + x @[E] W) * c + tanh(x @[E] V)
        return c, b * tanh(c)
    }
    block R(x: [T, E]) -> [T, D] {
        use cell = Cell2
        return scan t over T carry (c: [D] = 0, h: [D] = 0) {
            c, h = cell(c, h, x[t])
            emit h
        }
    }
    """,
    "several_results_dense": """
    axis T, E = 3, D = 4
    block Cell2(c: [D], h: [D], x: [E]) -> [D], [D] {
        param U: [D', D] init normal(0, 0.5)
        param W: [E, D] init normal(0, 0.5)
        return tanh(c + x @[E] W), tanh(h[D as D'] @[D'] U + c)
    }
    block R(x: [T, E]) -> [T, D] {
        use cell = Cell2
        return scan t over T carry (c: [D] = 0, h: [D] = 0) {
            c, h = cell(c, h, x[t])
            emit h + c  # (h alone is unbatched at the first step: c0 = h0 = 0)
        }
    }
    """,
    "time_invariant": """
    axis T, N = 5, E = 3
    block Step(h: [N], u: [E]) -> [N] {
        param A: [N', N] init normal(0, 0.3)
        param Bm: [E, N] init normal(0, 1)
        return h[N as N'] @[N'] A + u @[E] Bm
    }
    block SSM(u: [T, E]) -> [T, N] {
        use step = Step
        return scan t over T carry (h: [N] = 0) {
            h = step(h, u[t])
            emit h
        }
    }
    """,
}
SUB_EXPECTED = {"time_invariant": ("time_invariant", "fft"), "lifted": ("diagonal", "newton"), "nested": ("diagonal", "newton"),
                "repeated": ("diagonal", "newton"), "block": ("block", "newton"),
                "several_results_dense": ("dense", "sequential")}


def sub_specs():
    out = []
    for i, (body, expected) in enumerate(SUB_BODIES.items()):
        spec = SUB_CELL.replace("BODY", body)
        if "W2" in body:
            spec = spec.replace("param W:", "param W2: [D', D] init normal(0, 0.5)\n    param W:")
        out.append(pytest.param(spec, expected, id=f"body{i}"))
    return out + [pytest.param(spec, SUB_EXPECTED[name], id=name) for name, spec in SUB_SPECS.items()]


def assert_structure_by_jacrev(spec):
    """Force the scan through the Newton runner, capture its step and check the class by jacrev."""
    torch.manual_seed(0)
    module = ncd.load(spec, scan_backend="newton").double()
    (scan,) = module.parallel_scans()
    scan.solver = Recorder(scan.solver)
    module(torch.randn(2, 3, 3, dtype=torch.float64))
    assert_class_by_jacrev(scan.loop.plan, scan.solver.calls[0])


@pytest.mark.parametrize("spec,expected", sub_specs())
def test_a_step_calling_a_sub_block_is_classified_through_its_body(spec, expected):
    """The pass reads the callee's body; the parallel backends take the sub-block's weights as
    solver inputs, so values and every gradient (the sub-block's included) equal the loop."""
    seq, par = pair(spec, {})
    assert [(p.structure, p.backend) for p in par.scan_plans] == [expected]
    assert any("." in n for n, _ in par.named_parameters())  # the sub-block has weights
    x = torch.randn(2, 9, 3, dtype=torch.float64, requires_grad=True)
    assert_same(seq, par, x)
    if expected[1] == "newton":
        assert par.parallel_scans()[0].stats.fallbacks == 0
    assert_structure_by_jacrev(spec)


def test_a_sub_block_with_weights_in_a_fused_newton_step():
    spec = SUB_CELL.replace("BODY", "tanh(a * h + x @[E] W)")
    torch.manual_seed(0)
    seq = ncd.load(spec, scan_backend="sequential").double()
    par = ncd.load(spec, fuse_scans=True).double()
    par.load_state_dict(seq.state_dict())
    (scan,) = par.parallel_scans()
    assert scan.solver.fuse
    assert_same(seq, par, torch.randn(2, 13, 3, dtype=torch.float64, requires_grad=True))
    assert scan.stats.fallbacks == 0 and set(scan.solver._fused) == {"_system", "_reverse_coefficients", "_cell_vjp"}


def test_a_callee_the_pass_cannot_read_stays_conservative():
    """A loop inside the callee is not analysed: the call counts as mixing every state axis it sees."""
    spec = SUB_CELL.replace("    return BODY", "    y = h\n    repeat 2 { y = tanh(a * y) }\n    return y + x @[E] W")
    (plan,) = ncd.load(spec).scan_plans
    assert (plan.structure, plan.backend) == ("dense", "sequential")


VIEWS = """
axis T, E = 3, D = 4, F = 4, G = 2, H = 2, K = 2
block R(x: [T, E]) -> [T, STATE] {
    param U: [F, D] init normal(0, 0.5)
    param W: [E, D] init normal(0, 0.5)
    return scan t over T carry (h: [STATE] = 0) {
        h = STEP + x[t] @[E] W
        emit h
    }
}
"""


@pytest.mark.parametrize("state,step", [
    ("D", "tanh(h[D as F] @[F] U)"),  # a state axis renamed, then contracted under its new name
    ("G, D", "tanh(h[G = 0] + h)"),  # one slice broadcast back over G
    ("D", "tanh(h[D -> H K] - mean(h[D -> H K], over = K))[H K -> D]"),  # mixed within a reshaped axis
])
def test_views_that_hide_a_state_axis_count_as_mixing_it(state, step):
    """Inline and through a call: a mix along a renamed, reshaped or sliced state axis is a mix."""
    spec = VIEWS.replace("STATE", state).replace("STEP", step)
    assert [p.structure for p in ncd.load(spec).scan_plans] == ["dense"]
    assert_structure_by_jacrev(spec)
    if state == "D":
        called = spec.replace("block R(", "block C(h: [D]) -> [D] {\n    param U: [F, D] init normal(0, 0.5)\n"
                              f"    return {step}\n}}\nblock R(").replace(f"h = {step}", "h = c(h)")
        called = called.replace("    param W", "    use c = C\n    param W", 1)
        assert [p.structure for p in ncd.load(called).scan_plans] == ["dense"]
        assert_structure_by_jacrev(called)


def test_an_emit_that_reads_only_the_initial_carry_at_step_0_still_stacks():
    """y_t = 2 h_{t-1} with h_0 = 0: step 0's value has no batch dim yet, the later ones do.
    Every backend broadcasts and equals a plain PyTorch loop."""
    spec = """
    axis T, E = 3, D = 4
    block R(x: [T, E]) -> [T, D] {
        param W: [E, D] init normal(0, 0.5)
        return scan t over T carry (h: [D] = 0) {
            y = h * 2
            h = tanh(h + x[t] @[E] W)
            emit y
        }
    }
    """
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    for backend in ("sequential", "auto"):
        torch.manual_seed(0)
        m = ncd.load(spec, scan_backend=backend).double()
        h, want = torch.zeros(2, 4, dtype=torch.float64), []
        for t in range(5):
            want.append(2 * h)
            h = torch.tanh(h + x[:, t] @ m.W)
        torch.testing.assert_close(m(x), torch.stack(want, 1), rtol=0, atol=1e-12)


SPATIAL_STEP = """
axis T, C = 2, Y = 5, K = 3, Y2
block R(x: [T, C, Y], h0: [C, Y]) -> [T, C, Y] {
    param w: [C', C, K] init normal(0, 0.3)
    return scan t over T carry (h: [C, Y] = h0) {
        h = STEP + x[t] * w[C' = 0, K = 0]
        emit h
    }
}
"""
SPATIAL_STEPS = {
    "conv": ("conv(h, w, over = Y -> Y2, kernel = [K], padding = 1)[C' as C, Y2 as Y]", True),
    "avgpool": ("0.5 * avgpool(h, over = Y -> Y2, size = 3, stride = 1, padding = 1)[Y2 as Y]", True),
    "maxpool": ("0.5 * maxpool(h, over = Y -> Y2, size = 3, stride = 1, padding = 1)[Y2 as Y]", False),
}


@pytest.mark.parametrize("name", SPATIAL_STEPS)
def test_conv_and_pool_in_a_step_are_classed_by_their_algebra(name):
    """conv (fixed weights) and avgpool are linear in the carry and mix it along their axes, so such a step is an affine, time-invariant recurrence: it runs as the FFT convolution,
    which reads the transition off the step and equals the loop only if the step is affine.
    maxpool is nonlinear: the loop."""
    step, linear = SPATIAL_STEPS[name]
    spec = SPATIAL_STEP.replace("STEP", step)
    try:
        seq, par = pair(spec, {})
    except ncd.NcdError as err:
        pytest.fail(f"the spec does not check: {err}")
    [plan] = par.scan_plans
    assert plan.linear is linear, plan.reason
    if linear:
        assert (plan.structure, plan.backend) == ("time_invariant", "fft"), plan.reason
    else:
        assert plan.backend == "sequential" and plan.structure == "dense", plan.reason
    x = torch.randn(2, 7, *[int(ncd.check(spec).axes[a].size) for a in ("C", "Y")], dtype=torch.float64,
                    requires_grad=True)
    h0 = torch.randn(2, *x.shape[2:], dtype=torch.float64, requires_grad=True)
    assert_same(seq, par, x, h0)

"""State in and out (docs/language.md): a sequence run in segments, each from the previous
segment's final state, equals the whole sequence — outputs, final states and every gradient
(inputs, parameters, the initial state) — for every scan backend."""
from __future__ import annotations

import random

import pytest
import torch

import ncd

SIZES = {"gru": dict(E=5, D=6), "lstm": dict(E=5, D=6), "rnn_tanh": dict(E=5, D=6), "rnn_relu": dict(E=5, D=6),
         "paragru": dict(E=6, D=6, H=2), "paralstm": dict(E=6, D=6, H=2), "mamba_negeig": dict(D=4, N=3),
         "lssl": dict(H=3, N=4), "gla": dict(D=8, K=4, V=4, H=2), "deltanet": dict(D=8, K=4, V=4, H=2),
         "sparse_gru": dict(E=5, D=6), "leaky_rnn": dict(E=5, D=6), "sparse_lstm": dict(E=5, D=6),
         "sparse_rnn_tanh": dict(E=5, D=6)}


def load(spec, backend: str = "auto", **sizes):
    torch.manual_seed(0)
    return ncd.load(spec, scan_backend=backend, **sizes).double()


def splits(T: int, rng: random.Random) -> list[int]:
    """Random segment lengths summing to T, with a length-1 segment among them."""
    cuts = sorted(rng.sample(range(1, T), k=min(3, T - 1)))
    bounds = [0, *cuts, T]
    return [b - a for a, b in zip(bounds, bounds[1:])]


def time_dims(module) -> list[int]:
    return [axes.index("T") - len(axes) for _, _, axes, _ in module._ncd_program.inputs]


def random_state(module, inputs: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """A random initial state of the shapes this call's carries have (lifted dims included)."""
    with torch.no_grad():
        _, final = module(*inputs, return_state=True)
    return {name: (torch.randn_like(value) * 0.5).requires_grad_() for name, value in final.items()}


def carry_equals_whole(module, inputs: list[torch.Tensor], lengths: list[int], h0: dict[str, torch.Tensor] | None,
                       atol: float = 1e-10, compiled=None) -> None:
    """Run whole and in segments (each from the last one's final state); compare everything.
    ``compiled``: the in-process module whose layout ``module`` (emitted Python) has."""
    compiled = compiled or module
    dims = time_dims(compiled)
    leaves = [*(x for x in inputs if x.requires_grad), *(h0 or {}).values(), *module.parameters()]
    whole, final = module(*inputs, initial_state=h0, return_state=True)
    parts, state, start = [], h0, 0
    for n in lengths:
        seg = [x.narrow(d, start, n) for x, d in zip(inputs, dims)]
        y, state = module(*seg, initial_state=state, return_state=True)
        parts.append(y)
        start += n
    out_axes = compiled._ncd_spec.blocks[compiled._ncd_block].outputs[0].axes
    pieced = torch.cat(parts, dim=out_axes.index("T") - len(out_axes))
    torch.testing.assert_close(pieced, whole, rtol=0, atol=atol)
    assert list(state) == list(final) == list(module.state_spec())
    for name in final:
        torch.testing.assert_close(state[name], final[name], rtol=0, atol=atol)
    weights = torch.randn_like(whole)

    def loss(y, st):
        return (y * weights).sum() + sum((v.sin()).sum() for v in st.values())

    g_whole = torch.autograd.grad(loss(whole, final), leaves, allow_unused=True)
    g_parts = torch.autograd.grad(loss(pieced, state), leaves, allow_unused=True)
    for a, b in zip(g_parts, g_whole):
        if a is None or b is None:
            assert a is None and b is None or (a if b is None else b).abs().max() == 0
            continue
        torch.testing.assert_close(a, b, rtol=0, atol=atol * 100)


@pytest.mark.parametrize("name", ["gru", "lstm", "sparse_gru", "sparse_lstm", "sparse_rnn_tanh", "leaky_rnn"])
def test_sequential_segments_equal_the_whole(name):
    module = load(name, "sequential", **SIZES[name])
    rng = random.Random(name)
    for T in (2, 7):
        x = torch.randn(2, T, SIZES[name]["E"], dtype=torch.float64, requires_grad=True)
        carry_equals_whole(module, [x], splits(T, rng), None)
        carry_equals_whole(module, [x], splits(T, rng), random_state(module, [x]))


def test_state_names_follow_the_module_paths():
    assert list(load("lstm", E=5, D=6).state_spec()) == ["l1.h", "l1.c"]
    assert list(load("bilstm", E=5, D=6).state_spec()) == ["l1.fwd.h", "l1.fwd.c", "l1.bwd.h", "l1.bwd.c"]
    spec = load("lstm", E=5, D=6).state_spec()["l1.c"]
    assert spec.axes == ("D",) and spec.shape == (6,)
    stacked = ncd.load("""
axis T, E = 3
block Cell(x: [T, E]) -> [T, E] {
    param W: [E', E] init normal(0, 0.5)
    return scan t over T carry (h: [E] = 0) {
        h = tanh(x[t] + h[E as E'] @[E'] W)
        emit h
    }
}
block Net(x: [T, E]) -> [T, E] {
    use layers = Cell * 3
    return layers(x)
}
""")
    assert list(stacked.state_spec()) == ["layers.0.h", "layers.1.h", "layers.2.h"]
    assert set(stacked.state_spec()) <= {f"{p}.h" for p, _ in stacked.named_modules()}


DIRECT_CALLS = """
axis T, E = 3
block Leak(x: [T, E]) -> [T, E] {
    return scan t over T carry (h: [E] = 0) {
        h = tanh(x[t] + 0.5 * h)
        emit h
    }
}
block Mixed(x: [T, E]) -> [T, E] {
    param W: [E', E] init normal(0, 0.5)
    return scan t over T carry (h: [E] = 0) {
        h = tanh(x[t] + h[E as E'] @[E'] W)
        emit h
    }
}
block Pair(x: [T, E]) -> [T, E] {
    a = Leak(x)
    return Leak(a * 2)
}
block Net(x: [T, E]) -> [T, E] {
    use Leak_1 = Mixed
    a = Leak(x)
    b = Leak_1(a)
    return Pair(Leak(b))
}
"""


def test_directly_called_blocks_are_named_by_the_block_then_an_ordinal():
    gla = load("gla", **SIZES["gla"])
    assert list(gla.state_spec()) == ["recurrence.GLAHead.S"]  # not the builder's hidden _GLAHead_0
    assert list(load("deltanet", **SIZES["deltanet"]).state_spec()) == ["recurrence.DeltaHead.S"]
    net = load(DIRECT_CALLS)
    # the direct calls of Leak are Leak, then (Leak_1 being an instance's name) Leak_2; in Pair,
    # called directly too, Leak and Leak_1, in call order
    assert list(net.state_spec()) == ["Leak.h", "Leak_1.h", "Leak_2.h", "Pair.Leak.h", "Pair.Leak_1.h"]
    assert list(net.step_module().state_spec()) == list(net.state_spec())
    x = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    carry_equals_whole(net, [x], [2, 1, 2], random_state(net, [x]))


def test_a_spec_without_scans_returns_an_empty_state():
    module = load("mlp_relu")
    x = torch.randn(2, module._ncd_program.inputs[0][3][-1] or 4, dtype=torch.float64)
    y, state = module(x, return_state=True)
    assert state == {} and module.state_spec() == {}
    torch.testing.assert_close(y, module(x))


def test_initial_state_gives_the_spec_values_and_missing_names_start_there():
    module = load("lstm", E=5, D=6)
    zero = module.initial_state(3)
    assert {k: tuple(v.shape) for k, v in zero.items()} == {"l1.h": (3, 6), "l1.c": (3, 6)}
    assert all(v.dtype == torch.float64 and not v.any() for v in zero.values())
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(module(x, initial_state=zero), module(x))
    h = torch.randn(3, 6, dtype=torch.float64)
    torch.testing.assert_close(module(x, initial_state={"l1.h": h}),
                               module(x, initial_state={"l1.h": h, "l1.c": zero["l1.c"]}))


def test_bad_initial_states_are_errors_naming_the_state():
    module = load("gru", E=5, D=6)
    x = torch.randn(2, 4, 5, dtype=torch.float64)
    with pytest.raises(ncd.NcdError, match="l1.hh.*not a state.*l1.h") as info:
        module(x, initial_state={"l1.hh": torch.zeros(2, 6, dtype=torch.float64)})
    assert "l1.h" in str(info.value.hint)
    with pytest.raises(ncd.NcdError, match=r"l1.h has shape \(2, 5\).*\(\*lead, 6\)"):
        module(x, initial_state={"l1.h": torch.zeros(2, 5, dtype=torch.float64)})
    with pytest.raises(ncd.NcdError, match="l1.h is torch.float32"):
        module(x, initial_state={"l1.h": torch.zeros(2, 6)})
    with pytest.raises(ncd.NcdError, match="l1.h"):
        module(x, initial_state={"l1.h": torch.zeros(3, 6, dtype=torch.float64)})
    with pytest.raises(ncd.NcdError, match="must be a tensor"):
        module(x, initial_state={"l1.h": [0.0] * 6})


BACKENDS = [("gru", "fused_rnn"), ("lstm", "fused_rnn"), ("rnn_tanh", "fused_rnn"), ("rnn_relu", "fused_rnn"),
            ("paragru", "newton"), ("paralstm", "newton"), ("mamba_negeig", "scan"), ("lssl", "fft"),
            ("gla", "gla"), ("deltanet", "delta")]


def inputs_for(module, B: int, T: int) -> list[torch.Tensor]:
    out = []
    for _, _, axes, sizes in module._ncd_program.inputs:
        shape = [T if a == "T" else n for a, n in zip(axes, sizes)]
        out.append(torch.randn(B, *shape, dtype=torch.float64, requires_grad=True))
    return out


@pytest.mark.parametrize("name,backend", BACKENDS, ids=[f"{n}-{b}" for n, b in BACKENDS])
def test_every_backend_carries_state_across_segments(name, backend):
    module = load(name, backend, **SIZES[name])
    assert [p.backend for p in module.scan_plans] == [backend]
    rng = random.Random(name)
    for T in (1, 2, 9):
        xs = inputs_for(module, 2, T)
        if T > 1:
            carry_equals_whole(module, xs, splits(T, rng), None, atol=1e-9)
        carry_equals_whole(module, xs, [T] if T == 1 else splits(T, rng), random_state(module, xs), atol=1e-9)


@pytest.mark.parametrize("name,backend", BACKENDS, ids=[f"{n}-{b}" for n, b in BACKENDS])
def test_every_backend_agrees_with_the_loop_on_states(name, backend):
    """The same weights, the same initial state: the parallel backend's outputs, final states and
    gradients with respect to the initial state are the sequential loop's."""
    seq, par = load(name, "sequential", **SIZES[name]), load(name, backend, **SIZES[name])
    par.load_state_dict(seq.state_dict())
    xs = inputs_for(seq, 3, 6)
    h0 = random_state(seq, xs)
    ys, fs = seq(*xs, initial_state=h0, return_state=True)
    yp, fp = par(*xs, initial_state=h0, return_state=True)
    torch.testing.assert_close(yp, ys, rtol=0, atol=1e-9)
    assert list(fp) == list(fs)
    for k in fs:
        torch.testing.assert_close(fp[k], fs[k], rtol=0, atol=1e-9)
    loss_s = ys.square().sum() + sum(v.sin().sum() for v in fs.values())
    loss_p = yp.square().sum() + sum(v.sin().sum() for v in fp.values())
    for a, b in zip(torch.autograd.grad(loss_p, list(h0.values())), torch.autograd.grad(loss_s, list(h0.values()))):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-8)


def emitted(name: str, module, tmp_path, backend: str = "auto", **sizes):
    """The emitted Python of ``name`` (needs no ncd) holding ``module``'s weights."""
    import importlib.util

    from ncd.backends.pytorch.emit import emit_python

    text = emit_python(ncd.check(name, **sizes))
    assert "import ncd" not in text and "from ncd" not in text
    path = tmp_path / f"{name}_emitted.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(f"{name}_emitted", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = getattr(mod, mod.__all__[0])().double()
    out.load_state_dict(module.state_dict())
    return out


EMITTED = ["lstm", "bilstm", "paragru", "gla", "mlp_relu"]


@pytest.mark.parametrize("name", EMITTED)
def test_emitted_python_has_the_same_state_interface(name, tmp_path):
    sizes = {**SIZES.get(name, {}), **({"E": 5, "D": 6} if name == "bilstm" else {})}
    module = load(name, **sizes)
    out = emitted(name, module, tmp_path, **sizes)
    assert out.state_spec() == module.state_spec()
    assert {k: v.shape for k, v in out.initial_state(2).items()} == {k: v.shape for k, v in module.initial_state(2).items()}
    xs = [x.detach() for x in inputs_for(module, 2, 5)]
    h0 = random_state(module, xs) if module.state_spec() else None
    y, final = module(*xs, initial_state=h0, return_state=True)
    ye, final_e = out(*xs, initial_state=h0, return_state=True)
    torch.testing.assert_close(ye, y, rtol=0, atol=1e-12)
    assert list(final_e) == list(final) == list(module.state_spec())
    for k in final:
        torch.testing.assert_close(final_e[k], final[k], rtol=0, atol=1e-12)
    if name in ("lstm", "paragru", "gla"):  # and in segments, as the whole
        carry_equals_whole(out, [x.clone().requires_grad_() for x in xs], [2, 1, 2], h0, compiled=module)
    with pytest.raises(ValueError, match="no state named"):
        out(*xs, initial_state={"nope": torch.zeros(1)})


TRITON = [("gla", "gla"), ("deltanet", "delta"), ("mamba_negeig", "scan")]


@pytest.mark.parametrize("name,backend", TRITON, ids=[f"{n}-{b}" for n, b in TRITON])
def test_triton_kernels_carry_state_in_float32(name, backend, monkeypatch):
    """The Triton kernels (their CPU interpreter here) take the initial state and return the final
    one: segments equal the whole in float32, and both equal the PyTorch twins."""
    pytest.importorskip("triton")
    from ncd.backends.pytorch import implementations, parallel

    torch.manual_seed(1)
    module = ncd.load(name, scan_backend=backend, **SIZES[name])
    xs = [x.detach().float().requires_grad_() for x in inputs_for(module, 2, 5)]
    with torch.no_grad():
        _, final = module(*xs, return_state=True)
    h0 = {k: (torch.randn_like(v) * 0.5).requires_grad_() for k, v in final.items()}
    y_twin, f_twin = module(*xs, initial_state=h0, return_state=True)
    monkeypatch.setattr(parallel, "kernel_backend", lambda *_: "triton")  # what runs, and what is reported
    monkeypatch.setattr(implementations, "kernel_backend", lambda *_: "triton")
    y, f = module(*xs, initial_state=h0, return_state=True)
    ran = [s.implementation for sub in module.modules() if hasattr(sub, "parallel_scans") for s in sub.parallel_scans()]
    assert ran and all("Triton" in r for r in ran), ran
    torch.testing.assert_close(y, y_twin, rtol=1e-4, atol=1e-4)
    for k in f:
        torch.testing.assert_close(f[k], f_twin[k], rtol=1e-4, atol=1e-4)
    parts, state, start = [], h0, 0
    for n in (2, 1, 2):
        seg = [x.narrow(d, start, n) for x, d in zip(xs, time_dims(module))]
        out, state = module(*seg, initial_state=state, return_state=True)
        parts.append(out)
        start += n
    torch.testing.assert_close(torch.cat(parts, dim=-2), y, rtol=1e-4, atol=1e-4)
    for k in f:
        torch.testing.assert_close(state[k], f[k], rtol=1e-4, atol=1e-4)
    weights = torch.randn_like(y)
    leaves = [*xs, *h0.values(), *module.parameters()]
    loss_whole = (y * weights).sum() + sum(v.sin().sum() for v in f.values())
    loss_parts = (torch.cat(parts, dim=-2) * weights).sum() + sum(v.sin().sum() for v in state.values())
    for a, b in zip(torch.autograd.grad(loss_parts, leaves, allow_unused=True),
                    torch.autograd.grad(loss_whole, leaves, allow_unused=True)):
        if a is not None and b is not None:
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name,backend", [("gru", "fused_rnn"), ("paragru", "newton"), ("gla", "gla"),
                                          ("lssl", "fft"), ("lstm", "sequential")])
def test_unbatched_and_single_sequences_carry_state(name, backend):
    """No lead at all ([T, E]: the states have none) and a batch of one."""
    module = load(name, backend, **SIZES[name])
    for xs in (inputs_for(module, 1, 4), [x[0].detach().requires_grad_() for x in inputs_for(module, 1, 4)]):
        carry_equals_whole(module, xs, [1, 3], random_state(module, xs), atol=1e-9)
        _, final = module(*xs, return_state=True)
        lead = tuple(xs[0].shape[: xs[0].dim() - 2])
        for k, spec in module.state_spec().items():
            assert tuple(final[k].shape[-len(spec.shape):]) == spec.shape
            assert tuple(final[k].shape[: len(lead)]) == lead


REVERSE = """
axis T, E = 3, D = 4
block Lin(x: [T, E]) -> [T, D] {
    param Wa, Wb: [E, D] init normal(0, 0.5)
    return scan t over T reverse carry (h: [D] = 0) {
        h = sigmoid(x[t] @[E] Wa) * h + x[t] @[E] Wb
        emit h * 2
    }
}
"""


@pytest.mark.parametrize("backend", ["sequential", "scan", "newton"])
def test_a_reverse_scan_runs_in_segments_from_the_last(backend):
    """A reverse scan's final state is the carry after position 0: the later segment runs first."""
    module = load(REVERSE, backend)
    x = torch.randn(2, 7, 3, dtype=torch.float64, requires_grad=True)
    h0 = {"h": torch.randn(2, 4, dtype=torch.float64, requires_grad=True)}
    whole, final = module(x, initial_state=h0, return_state=True)
    late, state = module(x[:, 4:], initial_state=h0, return_state=True)
    early, state = module(x[:, :4], initial_state=state, return_state=True)
    torch.testing.assert_close(torch.cat([early, late], 1), whole, rtol=0, atol=1e-10)
    torch.testing.assert_close(state["h"], final["h"], rtol=0, atol=1e-10)
    g_whole = torch.autograd.grad(whole.sum() + final["h"].sum(), [x, h0["h"]])
    g_parts = torch.autograd.grad(torch.cat([early, late], 1).sum() + state["h"].sum(), [x, h0["h"]])
    for a, b in zip(g_parts, g_whole):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


def test_repeated_layers_of_a_parallel_backend_carry_one_state_each():
    spec = """
axis T, D = 4
block Layer(x: [T, D]) -> [T, D] {
    param Wa, Wb: [D, D'] init normal(0, 0.5)
    return scan t over T carry (h: [D'] = 0) {
        h = sigmoid(x[t] @[D] Wa) * h + x[t] @[D] Wb
        emit h
    }[D' as D]
}
block Stack(x: [T, D]) -> [T, D] {
    use layers = Layer * 2
    return layers(x)
}
"""
    module = load(spec, "scan")
    assert list(module.state_spec()) == ["layers.0.h", "layers.1.h"]
    x = torch.randn(2, 6, 4, dtype=torch.float64, requires_grad=True)
    carry_equals_whole(module, [x], [3, 1, 2], random_state(module, [x]))


def test_initial_state_leaves_out_a_state_computed_from_the_inputs():
    spec = """
axis T, E = 3, D = 4
block R(x: [T, E]) -> [T, D] {
    param W: [E, D] init normal(0, 0.5)
    param h0: [D] init normal(0, 1)
    a = scan t over T carry (h: [D] = h0) {
        h = tanh(x[t] @[E] W + h)
        emit h
    }
    return scan t over T carry (g: [D] = a[T = 0]) {
        g = tanh(a[t] + g)
        emit g
    }
}
"""
    module = load(spec)
    assert list(module.state_spec()) == ["a.h", "scan1.g"]
    start = module.initial_state(2)
    assert list(start) == ["a.h"]
    torch.testing.assert_close(start["a.h"], module.h0.detach().expand(2, 4))
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    torch.testing.assert_close(module(x, initial_state=start), module(x))


def test_the_compiled_modules_own_names_are_reserved_in_a_spec():
    """A param named like a method of the module (initial_state, state_spec, entry) would stop
    the load (torch refuses to register it over the method): the checker refuses it at the name."""
    from torch import nn

    from ncd.backends.pytorch.module import CompiledModule
    from ncd.frontend.common import RESERVED

    own = {n for n in dir(CompiledModule) if not n.startswith("_")} - set(dir(nn.Module))
    assert own <= RESERVED
    for name in ("initial_state", "state_spec", "entry"):
        with pytest.raises(ncd.NcdError, match=f"{name} is a reserved name"):
            ncd.check(f"axis D = 2\nblock A(x: [D]) -> [D] {{\n    param {name}: [D] init zeros\n    return x + {name}\n}}\n")


# torch.compile traces the state keywords' plumbing (the session the scans read and write);
# the eager and aot_eager backends keep it fast. The cheapest backends run by default.
COMPILED = [("gru", "eager"), ("gla", "eager"), pytest.param("deltanet", "aot_eager", marks=pytest.mark.slow),
            pytest.param("paragru", "eager", marks=pytest.mark.slow),
            pytest.param("mamba_negeig", "eager", marks=pytest.mark.slow),
            pytest.param("lssl", "eager", marks=pytest.mark.slow),
            pytest.param("leaky_rnn", "eager", marks=pytest.mark.slow)]


@pytest.mark.parametrize("name, compiler", COMPILED)
def test_torch_compile_with_state_keywords_gives_the_same_outputs_states_and_gradients(name, compiler):
    module = load(name, **SIZES[name])
    x = inputs_for(module, 2, 4)[0].detach().requires_grad_()
    h0 = random_state(module, [x])
    compiled = torch.compile(module, backend=compiler)
    y, final = compiled(x, initial_state=h0, return_state=True)
    want, want_final = module(x, initial_state=h0, return_state=True)
    torch.testing.assert_close(y, want, rtol=1e-10, atol=1e-10)
    assert list(final) == list(want_final) == list(module.state_spec())
    for k in want_final:
        torch.testing.assert_close(final[k], want_final[k], rtol=1e-10, atol=1e-10)
    leaves = [x, *h0.values()]
    got = torch.autograd.grad(y.square().sum() + sum(v.sin().sum() for v in final.values()), leaves)
    ref = torch.autograd.grad(want.square().sum() + sum(v.sin().sum() for v in want_final.values()), leaves)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(compiled(x), module(x), rtol=1e-10, atol=1e-10)  # no keywords: the plain call
    assert all("_ncd_state_io" not in m.__dict__ for m in module.modules())  # every session closed

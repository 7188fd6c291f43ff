"""Packed variable-length batches through a compiled module: ``module(x, cu_seqlens=offsets,
initial_state=..., return_state=True)`` (docs/language.md, "Packed variable-length batches")
equals each sequence run alone from its own initial state — outputs, final states and every
gradient (inputs, initial states, parameters) — for every scan backend, with empty and length-1
sequences and a single sequence; library specs run as one call (``packed_path``), specs where
something besides a scan mixes positions run once per sequence, with the same equality; the
padding after the packed steps is never read; the outputs also equal a zero-padded batch run at
once (a different path: the batched scan), and bad offsets are NcdErrors."""
from __future__ import annotations

import random

import pytest
import torch

import ncd

SIZES = {"gru": dict(E=5, D=6), "lstm": dict(E=5, D=6), "paragru": dict(E=6, D=6, H=2),
         "mamba_negeig": dict(D=4, N=3), "lssl": dict(H=3, N=4), "gla": dict(D=8, K=4, V=4, H=2),
         "deltanet": dict(D=8, K=4, V=4, H=2), "bilstm": dict(E=5, D=6)}
BACKENDS = [("gru", "sequential"), ("gru", "fused_rnn"), ("lstm", "auto"), ("paragru", "newton"),
            ("mamba_negeig", "scan"), ("lssl", "fft"), ("gla", "gla"), ("deltanet", "delta"),
            ("bilstm", "sequential")]


def load(name: str, backend: str):
    torch.manual_seed(0)
    return ncd.load(name, scan_backend=backend, **SIZES[name]).double()


def random_lengths(rng: random.Random, empty: bool = False) -> list[int]:
    """A few sequences, one of length 1 (and with ``empty``, one of length 0)."""
    lens = [rng.randint(1, 7) for _ in range(rng.randint(3, 5))]
    picks = rng.sample(range(len(lens)), 2)
    lens[picks[0]] = 1
    if empty:
        lens[picks[1]] = 0
    return lens


def packed_input(module, total: int, batch: bool) -> torch.Tensor:
    ((_, _, axes, sizes),) = module._ncd_program.inputs
    shape = [total if a == "T" else n for a, n in zip(axes, sizes)]
    return torch.randn(*([1] if batch else []), *shape, dtype=torch.float64, requires_grad=True)


def per_sequence_states(module, x: torch.Tensor, n: int, batch: bool) -> dict[str, torch.Tensor]:
    """Random initial states, one per sequence: [N, *the shape one call's carry has]."""
    with torch.no_grad():
        _, final = module(x.narrow(-2, 0, 1), return_state=True)
    spec = module.state_spec()
    return {k: (torch.randn(n, *(v.shape[1:] if batch and v.dim() > len(spec[k].axes) else v.shape),
                            dtype=torch.float64) * 0.5).requires_grad_()
            for k, v in final.items()}


def offsets(lens: list[int]) -> torch.Tensor:
    return torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()])


def alone(module, x: torch.Tensor, h0: dict[str, torch.Tensor] | None, lens: list[int], batch: bool):
    """Each sequence through the plain module call, from its own initial state; joined by hand.
    An empty sequence has no output, and its final state is its initial state (fla's rule): the
    given one, else the spec's (``carry (h: [D] = 0)``: zeros; ``g: [D] = g0``: g0)."""
    ys, finals, start = [], [], 0
    for i, n in enumerate(lens):
        state = None if h0 is None else {k: (v[i:i + 1] if batch else v[i]) for k, v in h0.items()}
        if n == 0:
            finals.append(state)
            continue
        y, f = module(x.narrow(-2, start, n), initial_state=state, return_state=True)
        ys.append(y)
        finals.append(f)
        start += n
    like = next(f for f, n in zip(finals, lens) if n)
    own = module.initial_state(dtype=torch.float64)  # the spec's initial values (zeros, or a weight such as g0)
    finals = [f if f is not None else {k: torch.broadcast_to(own[k], v.shape) for k, v in like.items()}
              for f in finals]
    spec = module.state_spec()

    def join(k: str) -> torch.Tensor:  # a state that never met the batch has no batch of 1 to join along
        rows = [f[k] for f in finals]
        if not batch:
            return torch.stack(rows, 0)
        return torch.cat([r if r.dim() > len(spec[k].axes) else r[None] for r in rows], 0)

    return torch.cat(ys, -2), {k: join(k) for k in like}


def grads(module, y, final, leaves, seed: int = 3):
    gen = torch.Generator().manual_seed(seed)
    loss = (y * torch.randn(y.shape, generator=gen, dtype=y.dtype)).sum() + sum(
        (v * torch.randn(v.shape, generator=gen, dtype=v.dtype)).sum() for v in final.values())
    got = torch.autograd.grad(loss, leaves, allow_unused=True)
    return [torch.zeros_like(w) if g is None else g for g, w in zip(got, leaves)]


def check_packed(module, lens: list[int], batch: bool, with_state: bool, path: str = "one call") -> None:
    x = packed_input(module, sum(lens), batch)
    h0 = per_sequence_states(module, x, len(lens), batch) if with_state else None
    cu = offsets(lens)
    y, final = module(x, cu_seqlens=cu, initial_state=h0, return_state=True)
    assert module.packed_path.startswith(path), module.packed_path
    y_ref, final_ref = alone(module, x, h0, lens, batch)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-10)
    assert list(final) == list(final_ref) == list(module.state_spec())
    for k in final:
        assert final[k].shape[0] == len(lens)
        torch.testing.assert_close(final[k], final_ref[k], rtol=0, atol=1e-10)
    leaves = [x, *(h0 or {}).values(), *module.parameters()]
    for a, b in zip(grads(module, y, final, leaves), grads(module, y_ref, final_ref, leaves)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)
    torch.testing.assert_close(module(x, cu_seqlens=cu, initial_state=h0), y, rtol=0, atol=0)


@pytest.mark.parametrize("name,backend", BACKENDS, ids=[f"{n}-{b}" for n, b in BACKENDS])
def test_packed_equals_each_sequence_alone(name, backend):
    module = load(name, backend)
    rng = random.Random(name + backend)
    check_packed(module, random_lengths(rng), batch=True, with_state=True)
    check_packed(module, random_lengths(rng), batch=True, with_state=False)
    check_packed(module, random_lengths(rng, empty=True), batch=True, with_state=True)
    check_packed(module, random_lengths(rng, empty=True), batch=False, with_state=False)
    check_packed(module, [1], batch=True, with_state=True)                 # one sequence of one step
    check_packed(module, [rng.randint(2, 6)], batch=False, with_state=True)  # one sequence, no batch dim


@pytest.mark.parametrize("name,backend", [("gru", "sequential"), ("gla", "gla"), ("mamba_negeig", "scan")])
def test_packed_equals_a_padded_batch(name, backend):
    """Outputs of a causal scan at a sequence's own positions do not depend on what follows, so a
    zero-padded [N, T_max] batch (one batched call) must give the packed outputs there."""
    module = load(name, backend)
    lens = [3, 1, 6]
    x = packed_input(module, sum(lens), batch=True).detach()
    h0 = per_sequence_states(module, x, len(lens), batch=True)
    y = module(x, cu_seqlens=offsets(lens), initial_state=h0)
    padded = torch.zeros(len(lens), max(lens), x.shape[-1], dtype=torch.float64)
    start = 0
    for i, n in enumerate(lens):
        padded[i, :n] = x[0, start:start + n]
        start += n
    y_pad = module(padded, initial_state=h0)
    start = 0
    for i, n in enumerate(lens):
        torch.testing.assert_close(y[0, start:start + n], y_pad[i, :n], rtol=0, atol=1e-10)
        start += n


BAD = [(torch.tensor([0.0, 2.0, 5.0]), "integers"), ([0, 2, 5], "torch.Tensor"),
       (torch.tensor([1, 2, 5]), "start at 0"), (torch.tensor([0, 3, 2, 5]), "never decrease"),
       (torch.tensor([0, 2, 4]), "end at the packed length 5"), (torch.tensor([[0, 5]]), "1-D")]


@pytest.mark.parametrize("cu,msg", BAD, ids=[m for _, m in BAD])
def test_bad_offsets_are_ncd_errors(cu, msg):
    module = load("gru", "sequential")
    with pytest.raises(ncd.NcdError, match=msg) as info:
        module(torch.randn(1, 5, 5, dtype=torch.float64), cu_seqlens=cu)
    assert info.value.hint


def test_packed_shapes_are_ncd_errors():
    module = load("gru", "sequential")
    with pytest.raises(ncd.NcdError, match="every sequence of cu_seqlens is empty"):
        module(torch.randn(1, 0, 5, dtype=torch.float64), cu_seqlens=torch.tensor([0, 0, 0]))
    cu = torch.tensor([0, 2, 5])
    with pytest.raises(ncd.NcdError, match="batch of 1"):
        module(torch.randn(2, 5, 5, dtype=torch.float64), cu_seqlens=cu)
    with pytest.raises(ncd.NcdError, match=r"l1.h needs one state per sequence: shape \(2, 6\)"):
        module(torch.randn(1, 5, 5, dtype=torch.float64), cu_seqlens=cu,
               initial_state={"l1.h": torch.zeros(1, 6, dtype=torch.float64)})
    mlp = ncd.load("mlp_relu").double()
    ((_, _, axes, sizes),) = mlp._ncd_program.inputs
    with pytest.raises(ncd.NcdError, match="scanned axis"):
        mlp(torch.randn(1, *(n or 4 for n in sizes), dtype=torch.float64), cu_seqlens=torch.tensor([0, 1]))


# Specs where something besides the scan lets a position see another: each must run once per
# sequence (``packed_path`` names why) and still equal each sequence alone. And ones where only
# scans do (pointwise work and norms over other axes around two scans, one reversed): one call.
HEAD = "axis T, D = 3\n\nblock F(x: [T, D]) -> [T, D] {\n    param W: [D', D] init normal(0, 0.5)\n"
SCAN = "scan t over T carry (h: [D] = 0) {\n        h = tanh(x[t] + h[D as D'] @[D'] W)\n        emit h\n    }\n"
MIXING = {
    "reduction over T": HEAD + f"    y = {SCAN}    return y - mean(y, over = T)\n}}\n",
    "causal conv over T": HEAD + "    param w: [D, K] init normal(0, 0.5)\n"
    f"    y = {SCAN}    return conv(y, w, over = T, kernel = [K], groups = [D], padding = causal)\n}}\n",
    "attention over T": HEAD + f"    y = {SCAN}    s = softmax(y @[D] y[T as S], over = S)\n"
    "    return s @[S] y[T as S]\n}\n",
    "step computes with t": HEAD + "    return scan t over T carry (h: [D] = 0) {\n"
    "        h = tanh(x[t] * exp(-t / 4) + h[D as D'] @[D'] W)\n        emit h\n    }\n}\n",
    "step reads all of T": HEAD + "    return scan t over T carry (h: [D] = 0) {\n"
    "        h = tanh(x[t] + sum(x, over = T) + h[D as D'] @[D'] W)\n        emit h\n    }\n}\n",
}
NATIVE = HEAD + "    param W2: [D', D] init normal(0, 0.5)\n" + f"    y = {SCAN}" \
    "    z = rmsnorm(relu(y) + x, over = D, eps = 1e-5)\n" \
    "    return scan t over T reverse carry (c: [D] = 0) {\n" \
    "        c = sigmoid(z[t]) * c + z[t][D as D'] @[D'] W2\n        emit c * y[t]\n    }\n}\n"


# A carry driven by parameters only (g) never meets the batch: one call's final g is [D], not
# [1, D]; packed, each sequence's g is still one row of a [N, D] state.
BATCHLESS = HEAD + "    param g0: [D] init normal(0, 0.5)\n" \
    "    return scan t over T carry (h: [D] = 0, g: [D] = g0) {\n" \
    "        g = tanh(g[D as D'] @[D'] W)\n        h = tanh(x[t] + g + h)\n        emit h\n    }\n}\n"
BATCHLESS_MIXING = BATCHLESS.replace("    return scan", "    y = scan").replace(
    "        emit h\n    }\n}\n", "        emit h\n    }\n    return y - mean(y, over = T)\n}\n")


def text_module(text: str, backend: str = "sequential", **sizes):
    torch.manual_seed(0)
    return ncd.load(text.replace("axis T, D = 3", "axis T, D = 3, K = 2, S, D2 = 3"), scan_backend=backend,
                    **sizes).double()


@pytest.mark.parametrize("what", list(MIXING))
def test_packed_runs_each_sequence_where_more_than_scans_mix_positions(what):
    module = text_module(MIXING[what])
    rng = random.Random(what)
    check_packed(module, random_lengths(rng), batch=True, with_state=True, path="once per sequence")
    check_packed(module, random_lengths(rng, empty=True), batch=True, with_state=True, path="once per sequence")
    check_packed(module, [rng.randint(2, 5)], batch=False, with_state=False, path="once per sequence")


@pytest.mark.parametrize("backend", ["sequential", "newton", "auto"])
def test_packed_runs_as_one_call_where_only_scans_mix_positions(backend):
    module = text_module(NATIVE, backend)
    rng = random.Random(backend)
    check_packed(module, random_lengths(rng, empty=True), batch=True, with_state=True)
    check_packed(module, random_lengths(rng), batch=False, with_state=True)
    assert module.packed_path.startswith("one call")


@pytest.mark.parametrize("name,backend", [("gru", "fused_rnn"), ("gla", "gla"), ("mamba_negeig", "scan"),
                                          ("paragru", "newton"), ("lssl", "fft"), ("bilstm", "sequential")])
def test_packed_padding_is_never_read(name, backend):
    """The packed steps are a view of a longer buffer whose tail is NaN, and each sequence is
    followed by its neighbour: a read past a boundary or the end would turn outputs NaN or
    leak a neighbour's values; the tail gets no gradient."""
    module = load(name, backend)
    lens = [2, 0, 1, 4]
    x = packed_input(module, sum(lens), batch=True)
    buffer = torch.full((1, sum(lens) + 3, x.shape[-1]), float("nan"), dtype=torch.float64)
    buffer[:, :sum(lens)] = x.detach()
    buffer.requires_grad_()
    view = buffer[:, :sum(lens)]
    y, final = module(view, cu_seqlens=offsets(lens), return_state=True)
    y_ref, final_ref = alone(module, x, None, lens, batch=True)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-10)
    for k in final:
        torch.testing.assert_close(final[k], final_ref[k], rtol=0, atol=1e-10)
    (grad,) = torch.autograd.grad(y.sum() + sum(v.sum() for v in final.values()), buffer)
    assert torch.isfinite(grad[:, :sum(lens)]).all() and (grad[:, sum(lens):] == 0).all()


@pytest.mark.parametrize("name,backend", [("gla", "gla"), ("deltanet", "delta"), ("mamba_negeig", "scan")])
def test_packed_triton_kernels_float32(name, backend, monkeypatch):
    """The Triton kernels (under TRITON_INTERPRET=1 on a CPU) in float32: packed equals each
    sequence alone through the PyTorch twin, outputs and gradients, empty sequences included."""
    pytest.importorskip("triton")
    from ncd.backends.pytorch import implementations, parallel

    torch.manual_seed(0)
    module = ncd.load(name, scan_backend=backend, **SIZES[name])
    lens = [3, 0, 1, 5]
    x = torch.randn(1, sum(lens), module._ncd_program.inputs[0][3][-1], requires_grad=True)
    with torch.no_grad():
        _, one = module(x[:, :1], return_state=True)
    h0 = {k: torch.randn(len(lens), *v.shape[1:]).mul(0.5).requires_grad_() for k, v in one.items()}
    y_ref, final_ref = alone(module, x, h0, lens, batch=True)
    leaves = [x, *h0.values(), *module.parameters()]
    ref = grads(module, y_ref, final_ref, leaves)
    monkeypatch.setattr(parallel, "kernel_backend", lambda *_: "triton")
    monkeypatch.setattr(implementations, "kernel_backend", lambda *_: "triton")
    y, final = module(x, cu_seqlens=offsets(lens), initial_state=h0, return_state=True)
    ran = [s.implementation for sub in module.modules() for s in sub.parallel_scans()]
    assert ran and all("Triton" in r for r in ran), ran
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    for k in final:
        torch.testing.assert_close(final[k], final_ref[k], rtol=1e-4, atol=1e-4)
    for a, b in zip(grads(module, y, final, leaves), ref):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


def emitted(text_or_name: str, module, tmp_path, **sizes):
    """The emitted Python (needs no ncd) of a spec, holding ``module``'s weights."""
    import importlib.util

    from ncd.backends.pytorch.emit import emit_python

    text = emit_python(ncd.check(text_or_name, **sizes))
    assert "import ncd" not in text and "from ncd" not in text
    path = tmp_path / "packed_emitted.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("packed_emitted", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = getattr(mod, mod.__all__[0])().double()
    out.load_state_dict(module.state_dict())
    return out


@pytest.mark.parametrize("name", ["gru", "bilstm", "gla", "reduction over T"])
def test_emitted_python_takes_cu_seqlens(name, tmp_path):
    """The emitted module's forward(x, cu_seqlens=, initial_state=, return_state=) equals the
    in-process packed call (which here runs as one call, or once per sequence), outputs, final
    states and gradients, empty sequences included; bad offsets are ValueErrors there."""
    if name in MIXING:
        text = MIXING[name].replace("axis T, D = 3", "axis T, D = 3, K = 2, S, D2 = 3")
        module, out = text_module(MIXING[name]), None
        out = emitted(text, module, tmp_path)
    else:
        module = load(name, "auto")
        out = emitted(name, module, tmp_path, **SIZES[name])
    lens = [2, 0, 3, 1]
    x = packed_input(module, sum(lens), batch=True)
    h0 = per_sequence_states(module, x, len(lens), batch=True)
    y, final = module(x, cu_seqlens=offsets(lens), initial_state=h0, return_state=True)
    y2, final2 = out(x, cu_seqlens=offsets(lens), initial_state=h0, return_state=True)
    torch.testing.assert_close(y2, y, rtol=0, atol=1e-10)
    assert list(final2) == list(final)
    for k in final:
        torch.testing.assert_close(final2[k], final[k], rtol=0, atol=1e-10)
    leaves = [x, *h0.values(), *module.parameters()]
    mine = grads(module, y, final, leaves)
    theirs = grads(out, y2, final2, [x, *h0.values(), *out.parameters()])
    for a, b in zip(theirs, mine):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)
    torch.testing.assert_close(out(x, cu_seqlens=offsets(lens)), module(x, cu_seqlens=offsets(lens)), rtol=0, atol=1e-10)
    for cu, msg in BAD:
        with pytest.raises(ValueError, match=msg):
            out(x.narrow(-2, 0, 5), cu_seqlens=cu)


def test_emitted_python_without_a_packed_axis_refuses_cu_seqlens(tmp_path):
    module = ncd.load("mlp_relu").double()
    out = emitted("mlp_relu", module, tmp_path)
    ((_, _, axes, sizes),) = module._ncd_program.inputs
    with pytest.raises(ValueError, match="scanned axis"):
        out(torch.randn(1, *(n or 4 for n in sizes), dtype=torch.float64), cu_seqlens=torch.tensor([0, 1]))


GLA_REVERSE = """axis T, K = 3, V = 2
block G(q: [T, K], k: [T, K], v: [T, V], g: [T, K]) -> [T, V] {
    return scan t over T reverse via gla carry (S: [K, V] = 0) {
        S = exp(-softplus(g[t])) * S + k[t] * v[t]
        emit q[t] @[K] S
    }
}
"""


def test_packed_reverse_gla_takes_the_offsets_mirrored():
    """A reverse GLA scan in a packed call: one kernel call whose sequences arrive last first;
    each sequence alone, outputs, final states (the carry after its first position) and
    gradients, with an empty sequence between."""
    module = ncd.load(GLA_REVERSE).double()
    lens = [3, 0, 1, 4]
    xs = [torch.randn(1, sum(lens), n, dtype=torch.float64, requires_grad=True) for n in (3, 3, 2, 3)]
    h0 = {"S": torch.randn(len(lens), 3, 2, dtype=torch.float64, requires_grad=True)}
    y, final = module(*xs, cu_seqlens=offsets(lens), initial_state=h0, return_state=True)
    assert module.packed_path.startswith("one call")
    ys, finals, start = [], [], 0
    for i, n in enumerate(lens):
        if n == 0:
            finals.append(h0["S"][i:i + 1])
            continue
        yi, fi = module(*(x.narrow(1, start, n) for x in xs), initial_state={"S": h0["S"][i:i + 1]},
                        return_state=True)
        ys.append(yi)
        finals.append(fi["S"])
        start += n
    y_ref, f_ref = torch.cat(ys, 1), {"S": torch.cat(finals, 0)}
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(final["S"], f_ref["S"], rtol=0, atol=1e-10)
    leaves = [*xs, h0["S"]]
    for a, b in zip(grads(module, y, final, leaves), grads(module, y_ref, f_ref, leaves)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


@pytest.mark.parametrize("text,path", [(BATCHLESS, "one call"), (BATCHLESS_MIXING, "once per sequence")],
                         ids=["one call", "once per sequence"])
def test_packed_state_that_never_meets_the_batch_has_one_row_per_sequence(text, path, tmp_path):
    module = text_module(text)
    rng = random.Random(path)
    for with_state in (False, True):
        check_packed(module, random_lengths(rng, empty=True), batch=True, with_state=with_state, path=path)
    lens = [2, 0, 3]
    x = packed_input(module, sum(lens), batch=True)
    _, final = module(x, cu_seqlens=offsets(lens), return_state=True)
    assert final["g"].shape == (3, 3)
    out = emitted(text.replace("axis T, D = 3", "axis T, D = 3, K = 2, S, D2 = 3"), module, tmp_path)
    _, final2 = out(x, cu_seqlens=offsets(lens), return_state=True)
    for k in final:
        torch.testing.assert_close(final2[k], final[k], rtol=0, atol=1e-10)

"""Integer wires: lookups, one-hot, arg-max, against torch's own modules and functions (float64, random sizes)."""
from __future__ import annotations

import importlib.util
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import ncd
from ncd.analysis import analyze
from ncd.backends.pytorch.emit import emit_python


def load_emitted(source: str, tmp_path, name: str):
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

SEEDS = range(3)


def sizes(seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    return {"V": rng.randint(2, 30), "D": rng.randint(1, 9), "T": rng.randint(1, 7), "B": rng.randint(1, 4)}


EMBED = """
axis V, D, T
block Embed(ids: [T] int) -> [T, D] {
    param E: [V, D] init normal(0, 1)
    return E[V = ids]
}
"""


@pytest.mark.parametrize("seed", SEEDS)
def test_lookup_is_nn_embedding_forward_and_backward(seed):
    s = sizes(seed)
    torch.manual_seed(seed)
    ref = nn.Embedding(s["V"], s["D"]).double()
    m = ncd.load(EMBED, V=s["V"], D=s["D"], T=s["T"]).double()
    with torch.no_grad():
        m.E.copy_(ref.weight)
    ids = torch.randint(0, s["V"], (s["B"], s["T"]))
    out, want = m(ids), ref(ids)
    torch.testing.assert_close(out, want, rtol=0, atol=0)
    g = torch.randn_like(want)
    (out * g).sum().backward()
    (want * g).sum().backward()
    torch.testing.assert_close(m.E.grad, ref.weight.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_one_hot_is_f_one_hot(seed):
    s = sizes(seed)
    spec = "axis V, T\nblock OneHot(ids: [T] int) -> [T, V] { return one_hot(ids, over = V) }"
    m = ncd.load(spec, V=s["V"], T=s["T"]).double()
    ids = torch.randint(0, s["V"], (s["B"], s["T"]))
    out = m(ids)
    assert out.dtype == torch.float64  # follows the module's dtype: it is contracted with weights
    torch.testing.assert_close(out, F.one_hot(ids, s["V"]).double(), rtol=0, atol=0)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("fn", ["argmax", "argmin"])
def test_argmax_argmin_are_torch_with_first_index_on_ties(seed, fn):
    s = sizes(seed)
    spec = f"axis T, V\nblock Pick(x: [V, T]) -> [T] int {{ return {fn}(x, over = V) }}"
    m = ncd.load(spec, V=s["V"], T=s["T"])
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 3, (s["B"], s["V"], s["T"]), generator=gen).double()  # many ties
    out = m(x)
    assert out.dtype == torch.int64
    assert torch.equal(out, getattr(torch, fn)(x, dim=1))
    # ties: the first index (torch.argmax's documented behaviour), found here by a plain scan
    for b in range(s["B"]):
        for t in range(s["T"]):
            column = x[b, :, t].tolist()
            best = max(column) if fn == "argmax" else min(column)
            assert out[b, t].item() == column.index(best)


GATHER = """
axis T, V, D
block Gather(logits: [T, V], target: [T] int, x: [T, D], at: [] int) -> [T], [D] {
    return logits[V = target], x[T = at]
}
"""


@pytest.mark.parametrize("seed", SEEDS)
def test_lookup_along_a_computed_wire_is_a_gather_aligned_by_name(seed):
    s = sizes(seed)
    m = ncd.load(GATHER, T=s["T"], V=s["V"], D=s["D"])
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(s["B"], s["T"], s["V"], dtype=torch.float64, generator=gen, requires_grad=True)
    target = torch.randint(0, s["V"], (s["B"], s["T"]), generator=gen)
    x = torch.randn(s["B"], s["T"], s["D"], dtype=torch.float64, generator=gen)
    at = torch.randint(0, s["T"], (s["B"],), generator=gen)
    picked, row = m(logits, target, x, at)
    torch.testing.assert_close(picked, torch.gather(logits, -1, target[..., None])[..., 0], rtol=0, atol=0)
    torch.testing.assert_close(row, torch.stack([x[b, at[b]] for b in range(s["B"])]), rtol=0, atol=0)
    picked.sum().backward()  # the gradient of a gather is one-hot: the NLL pattern
    torch.testing.assert_close(logits.grad, F.one_hot(target, s["V"]).double())


def test_integer_arithmetic_stays_integer_and_feeds_lookups():
    spec = """
    axis V = 9, D = 3, T
    block Shift(ids: [T] int) -> [T, D], [T] bool {
        param E: [V, D] init normal(0, 1)
        return E[V = ids + 1] * as_float(ids), ids == 0
    }
    """
    ir = ncd.check(spec)
    assert [t.dtype for t in ir.entry_block.outputs] == ["float", "bool"]
    m = ncd.load(spec, T=4)
    ids = torch.tensor([[0, 3, 7, 2]])
    out, pad = m(ids)
    torch.testing.assert_close(out, m.E[ids + 1] * ids[..., None].float())
    assert torch.equal(pad, ids == 0)


MIXED = """
# embedding, read-out, picked logit, one-hot and the arg-max, in one block
axis T, V = 10, D = 4
block LM(ids: [T] int) -> [T, V], [T] int {
    param E: [V, D] init normal(0, 1)
    param W: [D, V'] init normal(0, 0.5)
    logits = (E[V = ids] @[D] W)[V' as V]
    return logits + one_hot(ids, over = V) + logits[V = ids] + as_float(ids), argmax(logits, over = V)
}
"""


def test_emitted_python_equals_the_module(tmp_path):
    ir = ncd.check(MIXED, T=5)
    module = load_emitted(emit_python(ir, class_name="Entry"), tmp_path, name="emitted_integer")
    torch.manual_seed(0)
    m = ncd.load(MIXED, T=5)
    e = module.Entry()
    e.load_state_dict(m.state_dict())
    ids = torch.randint(0, 10, (3, 5))
    for a, b in zip(m(ids), e(ids)):
        assert torch.equal(a, b)
    with pytest.raises(TypeError, match="must be an integer tensor"):
        e(ids.float())


def test_costs_match_flop_counter_and_saved_tensors():
    ir = ncd.check(MIXED, T=5)
    report = analyze(ir, {"B": 3})
    total = report.numbers(report.total)
    m = ncd.load(MIXED, T=5)
    ids = torch.randint(0, 10, (3, 5))
    params = {p.untyped_storage().data_ptr() for p in m.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in params:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with FlopCounterMode(display=False) as counter:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            logits, _ = m(ids)
        fwd = counter.get_total_flops()
        logits.sum().backward()
        both = counter.get_total_flops()
    assert total["matmul_flops_fwd"] == fwd
    assert total["matmul_flops_fwd"] + total["matmul_flops_bwd"] == both
    assert total["activation_bytes"] == sum(saved.values())


def test_an_int_only_block_follows_the_module_dtype_and_device():
    m = ncd.load("axis V = 4, T\nblock H(ids: [T] int) -> [T, V] { return one_hot(ids, over = V) * 0.5 }", T=2)
    assert m(torch.tensor([1, 3])).dtype == torch.get_default_dtype()
    assert m.double()(torch.tensor([1, 3])).dtype == torch.float64
    assert "_ncd_anchor" not in m.state_dict()


def test_a_float_tensor_into_an_int_port_is_a_located_error():
    m = ncd.load(EMBED, V=5, D=2, T=3)
    with pytest.raises(ncd.NcdError, match="must be an integer tensor") as info:
        m(torch.zeros(2, 3))
    assert info.value.line == 3


def test_the_nplm_library_spec_is_bengio_2003():
    m = ncd.load("nplm", V=20, L=3, M=4, H=5).double()
    for p in m.parameters():
        with torch.no_grad():
            p.copy_(torch.randn_like(p))
    ctx = torch.randint(0, 20, (6, 3))
    emb = nn.Embedding(20, 4).double()
    with torch.no_grad():
        emb.weight.copy_(m.C)
    x = emb(ctx).reshape(6, 12)  # (C(w_t-1), ..., C(w_t-n+1)) concatenated
    y = m.b + x @ m.W + torch.tanh(m.d + x @ m.Hw) @ m.U
    torch.testing.assert_close(m(ctx), torch.log_softmax(y, dim=-1), rtol=1e-12, atol=1e-12)

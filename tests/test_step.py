"""The step module (issue 16 item 3): one position at a time equals the whole sequence.

References: the full module run whole (itself checked against torch.nn and the papers' equations
in other test files), and torch.nn.GRUCell / LSTMCell for the standard cells, stepped by hand.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import torch

import ncd
from ncd.backends.pytorch.program import SizeTable

RECURRENT = ["gla", "deltanet", "gru", "lstm", "paragru", "paralstm", "mamba_negeig", "leaky_rnn", "rnn_tanh",
             "lssl", "sparse_gru"]


def inputs(module, batch: int, steps: int, dtype=torch.float64) -> list[torch.Tensor]:
    spec = module._ncd_spec
    sizes = SizeTable(spec)
    block = spec.blocks[module._ncd_block]
    return [torch.randn(batch, steps, *[sizes.bound(a) for a in p.type.axes[1:]], dtype=dtype) for p in block.inputs]


def stepped(step, xs: list[torch.Tensor], state=None):
    outs = []
    for t in range(xs[0].shape[1]):
        y, state = step(*[x[:, t] for x in xs], state=state)
        outs.append(y)
    return torch.stack(outs, 1), state


@pytest.mark.parametrize("name", RECURRENT)
def test_step_equals_the_whole_sequence_position_by_position(name):
    torch.manual_seed(0)
    full = ncd.load(name).double()  # the default backends: the parallel form where the pass chose one
    step = full.step_module()
    xs = inputs(full, 2, 6)
    got, state = stepped(step, xs)
    torch.testing.assert_close(got, full(*xs), rtol=1e-7, atol=1e-7)
    assert list(state) == list(step.state_spec())
    for name_, (axes, shape) in step.state_spec().items():
        assert state[name_].shape[-len(shape):] == shape and state[name_].shape[0] == 2, name_


@pytest.mark.parametrize("name", RECURRENT + ["bilstm_fwd"])
def test_prefill_with_the_full_module_then_continue_with_the_step_module(name):
    torch.manual_seed(8)
    spec = BIDIRECTIONAL_NAMED if name == "bilstm_fwd" else name
    full = ncd.load(spec).double()
    step = full.step_module()
    assert {k: v for k, v in step.state_spec().items()} == full.state_spec()  # the same names and shapes
    xs = inputs(full, 2, 7)
    _, state = full(*[x[:, :4] for x in xs], return_state=True)
    rest, _ = stepped(step, [x[:, 4:] for x in xs], state=state)
    torch.testing.assert_close(rest, full(*xs)[:, 4:], rtol=1e-7, atol=1e-7)


# two named forward scans in one block: states fwd.h and slow.h, as the full module names them
BIDIRECTIONAL_NAMED = """axis T, E = 3, D = 4, D2 = 8

block Two(x: [T, E]) -> [T, D2] {
    param W, W2: [E, D] init normal(0, 0.5)
    param U, U2: [D', D] init normal(0, 0.5)
    fwd = scan t over T carry (h: [D] = 0) {
        h = tanh(x[t] @[E] W + h[D as D'] @[D'] U)
        emit h
    }
    slow = scan t over T carry (h: [D] = 0) {
        h = 0.5 * h + 0.5 * tanh(x[t] @[E] W2 + h[D as D'] @[D'] U2)
        emit h
    }
    return concat(fwd, slow, over = D -> D2)
}
"""


def test_state_names_follow_the_module_path_and_the_carry():
    assert list(ncd.load(BIDIRECTIONAL_NAMED).step_module().state_spec()) == ["fwd.h", "slow.h"]
    assert list(ncd.load("gla").step_module().state_spec()) == ["recurrence.GLAHead.S"]
    assert list(ncd.load("lstm").step_module().state_spec()) == ["l1.h", "l1.c"]
    assert list(ncd.load("paragru").step_module().state_spec()) == ["h"]
    step = ncd.load("gla", D=8, H=2, K=2, V=4).step_module()
    assert step.state_spec()["recurrence.GLAHead.S"] == (("K", "V"), (2, 4))  # the carry's own axes
    assert step.initial_state(3)["recurrence.GLAHead.S"].shape == (3, 2, 2, 4)  # the heads it is lifted over lead


def test_the_step_module_shares_the_full_modules_weights():
    full = ncd.load("gru")
    step = full.step_module()
    assert {n: p.data_ptr() for n, p in full.named_parameters()} == {n: p.data_ptr() for n, p in step.named_parameters()}
    with torch.no_grad():
        full.l1.W_hh.add_(1.0)
    assert torch.equal(step.l1.W_hh, full.l1.W_hh)


def test_gru_step_is_torchs_gru_cell():
    torch.manual_seed(1)
    full = ncd.load("gru", E=3, D=4).double()
    cell = torch.nn.GRUCell(3, 4).double()
    layer = full.l1
    with torch.no_grad():  # spec layout [I, G, D] with gates r, z, n as torch's; torch's is [G*D, I]
        cell.weight_ih.copy_(layer.W_ih.permute(1, 2, 0).reshape(12, 3))
        cell.weight_hh.copy_(layer.W_hh.permute(1, 2, 0).reshape(12, 4))
        cell.bias_ih.copy_(layer.b_ih.reshape(12))
        cell.bias_hh.copy_(layer.b_hh.reshape(12))
    step = full.step_module()
    x = torch.randn(5, 7, 3, dtype=torch.float64)
    h = torch.zeros(5, 4, dtype=torch.float64)
    state = None
    for t in range(7):
        y, state = step(x[:, t], state=state)
        h = cell(x[:, t], h)
        torch.testing.assert_close(y, h, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(state["l1.h"], h, rtol=1e-10, atol=1e-10)


def test_lstm_step_is_torchs_lstm_cell():
    torch.manual_seed(2)
    full = ncd.load("lstm", E=3, D=4).double()
    cell = torch.nn.LSTMCell(3, 4).double()
    layer = full.l1
    with torch.no_grad():  # gates i, f, g, o as torch's
        cell.weight_ih.copy_(layer.W_ih.permute(1, 2, 0).reshape(16, 3))
        cell.weight_hh.copy_(layer.W_hh.permute(1, 2, 0).reshape(16, 4))
        cell.bias_ih.copy_(layer.b_ih.reshape(16))
        cell.bias_hh.copy_(layer.b_hh.reshape(16))
    step = full.step_module()
    x = torch.randn(3, 5, 3, dtype=torch.float64)
    h = c = torch.zeros(3, 4, dtype=torch.float64)
    state = step.initial_state(3, dtype=torch.float64)
    for t in range(5):
        y, state = step(x[:, t], state=state)
        h, c = cell(x[:, t], (h, c))
        torch.testing.assert_close(y, h, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(state["l1.c"], c, rtol=1e-10, atol=1e-10)


def test_gradients_flow_through_the_carried_state():
    torch.manual_seed(3)
    full = ncd.load("paragru", E=8, D=8, H=2).double()
    step = full.step_module()
    x = torch.randn(2, 4, 8, dtype=torch.float64)
    got, _ = stepped(step, [x])
    grads = torch.autograd.grad(got.square().sum(), list(full.parameters()))
    want = torch.autograd.grad(full(x).square().sum(), list(full.parameters()))
    for g, w in zip(grads, want):
        torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-10)


def test_initial_state_and_state_checks():
    step = ncd.load("gru", E=3, D=4).step_module()
    state = step.initial_state(2, 5)
    assert state["l1.h"].shape == (2, 5, 4) and not state["l1.h"].any()
    y, new = step(torch.randn(2, 5, 3), state=state)
    assert y.shape == (2, 5, 4) and new["l1.h"].shape == (2, 5, 4)
    with pytest.raises(ncd.NcdError, match="unknown state 'l1.hidden'"):
        step(torch.randn(2, 3), state={"l1.hidden": torch.zeros(2, 4)})
    with pytest.raises(ncd.NcdError, match=r"state l1.h has shape \(2, 5\).*\(4,\)"):
        step(torch.randn(2, 3), state={"l1.h": torch.zeros(2, 5)})


NON_CAUSAL = [
    ("bilstm", "reverse scan"),
    ("transformer_encoder", "T'"),
    ("pointer_net", "fixed position"),
]


@pytest.mark.parametrize("name, message", NON_CAUSAL)
def test_what_has_no_step_form_is_an_error_at_the_op(name, message):
    with pytest.raises(ncd.NcdError, match=message) as info:
        ncd.load(name).step_module()
    assert info.value.span is not None and info.value.hint


@pytest.mark.parametrize("body, message, marker", [
    ("return scan t over T carry (h: [D] = 0) { h = tanh(x[t] + h)\n emit h } + sum(x, over = T)",
     "sum acts along T", "sum(x"),
    ("return scan t over T reverse carry (h: [D] = 0) { h = tanh(x[t] + h)\n emit h }", "reverse scan", "scan"),
    ("y = scan t over T carry (h: [D] = 0) { h = tanh(x[t] + h)\n emit h }\n return y * y[T = 0]",
     "fixed position", "y[T = 0]"),
    ("return scan t over T carry (h: [D] = 0) { h = tanh(x[t] + h)\n emit h } * mean(x, over = T)",
     "mean acts along T", "mean("),
    ("return scan t over T carry (h: [D] = 0) { h = tanh(x[t] + h) * sqrt(t + 1)\n emit h }",
     "step index", "t + 1"),
])
def test_non_causal_ops_are_located_errors(body, message, marker):
    spec = f"axis T, D = 3\n\nblock F(x: [T, D]) -> [T, D] {{\n {body}\n}}\n"
    ncd.load(spec)(torch.randn(2, 4, 3))  # the full module runs
    with pytest.raises(ncd.NcdError, match=message) as info:
        ncd.load(spec).step_module()
    assert info.value.span.line == spec.count("\n", 0, spec.index(marker)) + 1
    assert info.value.hint


def test_emitted_step_module_needs_no_ncd_and_equals_the_in_process_one(tmp_path):
    out = tmp_path / "gla_step.py"
    run = subprocess.run([sys.executable, "-m", "ncd.cli", "compile", "gla", "--emit", "step", "-o", str(out),
                          "--set", "D=8", "H=2", "K=2", "V=4"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    text = out.read_text()
    assert "import ncd" not in text and "from ncd" not in text
    spec = importlib.util.spec_from_file_location("gla_step", out)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(4)
    full = ncd.load("gla", D=8, H=2, K=2, V=4).double()
    emitted = mod.GLAStep().double()
    emitted.load_state_dict(full.state_dict())  # the full module's state_dict loads into it
    assert emitted.state_spec() == full.step_module().state_spec()
    xs = inputs(full, 3, 5)
    got, state = stepped(emitted, xs)
    torch.testing.assert_close(got, full(*xs), rtol=1e-7, atol=1e-7)
    assert list(state) == ["recurrence.GLAHead.S"]


def test_cli_emit_step_error_is_located():
    run = subprocess.run([sys.executable, "-m", "ncd.cli", "compile", "bilstm", "--emit", "step"],
                         capture_output=True, text=True)
    assert run.returncode != 0
    assert "bilstm.ncd:" in run.stderr and "reverse scan" in run.stderr and "Traceback" not in run.stderr


CAUSAL_DECODER = """# A pre-LN decoder layer with causal self-attention
axis T, D = 8, H = 2, F = 16
axis K = D / H

block LayerNorm[A](x: [A]) -> [A] {
  param gamma: [A] init normal(1, 0.1)
  param beta: [A] init normal(0, 0.1)
  return layernorm(x, over = A) * gamma + beta
}

block CausalAttention(x: [T, D]) -> [T, D] {
  param Wq, Wk, Wv: [D, H, K] init normal(0, D^-0.5)
  param Wo: [H, K, D] init normal(0, D^-0.5)
  q = x @[D] Wq
  k = (x @[D] Wk)[T as T']
  v = (x @[D] Wv)[T as T']
  s = q @[K] k / sqrt(K)
  a = softmax(where(idx(T') <= idx(T), s, -inf), over = T')
  return (a @[T'] v) @[H, K] Wo
}

block FFN(x: [D]) -> [D] {
  param W1: [D, F] init normal(0, D^-0.5)
  param W2: [F, D] init normal(0, F^-0.5)
  return relu(x @[D] W1) @[F] W2
}

block Decoder(x: [T, D]) -> [T, D] {
  use attn = CausalAttention, ffn = FFN, n1 = LayerNorm[D], n2 = LayerNorm[D]
  y = x + attn(n1(x))
  return y + ffn(n2(y))
}
"""

HYBRID = CAUSAL_DECODER.replace("""block Decoder(x: [T, D]) -> [T, D] {
  use attn = CausalAttention, ffn = FFN, n1 = LayerNorm[D], n2 = LayerNorm[D]
  y = x + attn(n1(x))
  return y + ffn(n2(y))
}""", """block Recurrent(x: [T, D]) -> [T, D] {
  param A: [D, D'] init normal(0, D^-0.5)
  param h0: [D] init normal(0, 1)
  u = (x @[D] A)[D' as D]
  return scan t over T carry (h: [D] = h0) {
    h = tanh(u[t] + 0.5 * h)
    emit h
  }
}

block Hybrid(x: [T, D]) -> [T, D] {
  use attn = CausalAttention, rec = Recurrent, n1 = LayerNorm[D]
  y = x + attn(n1(x))
  return y + rec(y)
}""")


def test_causal_attention_steps_with_a_kv_cache_as_sdpa_is_causal():
    torch.manual_seed(5)
    full = ncd.load(CAUSAL_DECODER).double()
    step = full.step_module()
    assert step.state_spec() == {"attn.k": (("T'", "H", "K"), (None, 2, 4)), "attn.v": (("T'", "H", "K"), (None, 2, 4))}
    x = torch.randn(3, 7, 8, dtype=torch.float64)
    got, state = stepped(step, [x])
    torch.testing.assert_close(got, full(x), rtol=1e-9, atol=1e-9)
    assert state["attn.k"].shape == (3, 7, 2, 4)  # the cache holds every position so far
    # torch's own causal attention on the spec's weights, written plainly
    a = full.attn
    n1 = torch.nn.functional.layer_norm(x, (8,), full.n1.gamma, full.n1.beta)
    q, k, v = (torch.einsum("btd,dhk->bhtk", n1, w) for w in (a.Wq, a.Wk, a.Wv))
    o = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    y = x + torch.einsum("bhtk,hkd->btd", o, a.Wo)
    n2 = torch.nn.functional.layer_norm(y, (8,), full.n2.gamma, full.n2.beta)
    want = y + torch.relu(n2 @ full.ffn.W1) @ full.ffn.W2
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_attention_and_a_scan_in_one_spec_step_together():
    torch.manual_seed(6)
    full = ncd.load(HYBRID).double()
    step = full.step_module()
    assert list(step.state_spec()) == ["attn.k", "attn.v", "rec.h"]
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    got, state = stepped(step, [x])
    torch.testing.assert_close(got, full(x), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(step.initial_state(2)["rec.h"], full.rec.h0.expand(2, 8))


@pytest.mark.parametrize("scores, message", [
    ("softmax(s, over = T')", "softmax runs along T'"),
    ("softmax(where(idx(T') < idx(T), s, -inf), over = T')", r"idx\(T\), the position"),
    ("softmax(where(idx(T') >= idx(T), s, -inf), over = T')", r"idx\(T\), the position"),
    ("softmax(where(idx(T) >= idx(T'), s, -inf) + 0 * sum(s, over = T'), over = T')", "sum runs along T'"),
    ("softmax(where(idx(T') <= idx(T), s, 0), over = T')", "softmax runs along T'"),
])
def test_attention_that_sees_later_positions_has_no_step_form(scores, message):
    spec = CAUSAL_DECODER.replace("softmax(where(idx(T') <= idx(T), s, -inf), over = T')", scores)
    ncd.load(spec)(torch.randn(2, 3, 8))
    with pytest.raises(ncd.NcdError, match=message) as info:
        ncd.load(spec).step_module()
    assert info.value.span.line == spec.count("\n", 0, spec.index("a = softmax")) + 1
    assert "where(idx(T') <= idx(T)" in info.value.hint


def test_emitted_step_module_with_a_kv_cache(tmp_path):
    path = tmp_path / "decoder.ncd"
    path.write_text(CAUSAL_DECODER)
    out = tmp_path / "decoder_step.py"
    run = subprocess.run([sys.executable, "-m", "ncd.cli", "compile", str(path), "--emit", "step", "-o", str(out),
                          "--class-name", "DecoderStep"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    spec = importlib.util.spec_from_file_location("decoder_step", out)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(7)
    full = ncd.load(str(path)).double()
    emitted = mod.DecoderStep().double()
    emitted.load_state_dict(full.state_dict())
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    got, state = stepped(emitted, [x])
    torch.testing.assert_close(got, full(x), rtol=1e-9, atol=1e-9)
    assert state["attn.v"].shape == (2, 6, 2, 4)


SHORT_CONV = """# A short causal convolution (as Mamba's and fla's) before a scan
axis T, C = 4, K = 3, G = 2
block A(x: [T, C]) -> [T, C] {
  param w: [C, K] init normal(0, 0.5)
  param w2: [C, C', G] init normal(0, 0.5)
  y = conv(x, w, over = T, kernel = [K], groups = [C], padding = causal, dilation = 2)
  z = conv(silu(y), w2, over = T, kernel = [G], padding = causal)
  return scan t over T carry (h: [C'] = 0) {
    h = tanh(z[t] + 0.5 * h)
    emit h
  }[C' as C] + y
}
"""


def test_causal_convolutions_step_with_a_window_state():
    torch.manual_seed(9)
    full = ncd.load(SHORT_CONV).double()
    step = full.step_module()
    spec = step.state_spec()
    assert list(spec) == ["y.window", "z.window", "h"]
    assert spec["y.window"][1] == (4, 4) and spec["z.window"][1] == (1, 4)  # dilation·(k - 1) inputs held
    x = torch.randn(2, 7, 4, dtype=torch.float64)
    got, state = stepped(step, [x])
    torch.testing.assert_close(got, full(x), rtol=1e-10, atol=1e-10)
    # the window holds the last inputs of the conv: y's is x's last 4 positions
    torch.testing.assert_close(state["y.window"], x[:, -4:])
    # and it equals torch's Conv1d with left padding, stepped by hand
    conv = torch.nn.Conv1d(4, 4, 3, groups=4, dilation=2, bias=False).double()
    with torch.no_grad():
        conv.weight.copy_(full.w[:, None, :])
    want = conv(torch.nn.functional.pad(x.transpose(1, 2), (4, 0))).transpose(1, 2)
    y_only = ncd.load(SHORT_CONV.replace("}[C' as C] + y", "}[C' as C] * 0 + y")).double()
    y_only.load_state_dict(full.state_dict())
    torch.testing.assert_close(stepped(y_only.step_module(), [x])[0], want, rtol=1e-10, atol=1e-10)


def test_a_centred_convolution_has_no_step_form():
    spec = SHORT_CONV.replace("padding = causal, dilation = 2)", "padding = 2, dilation = 2)")
    ncd.load(spec)(torch.randn(2, 5, 4))
    with pytest.raises(ncd.NcdError, match="conv acts along T") as info:
        ncd.load(spec).step_module()
    assert info.value.span.line == spec.count("\n", 0, spec.index("y = conv")) + 1 and info.value.hint


STACK = """# Three recurrent layers as one repeated instance
axis T, D = 6
block Layer(x: [T, D]) -> [T, D] {
  param W: [D, D'] init normal(0, 0.4)
  param h0: [D] init normal(0, 1)
  u = (x @[D] W)[D' as D]
  return x + scan t over T carry (h: [D] = h0) {
    h = tanh(u[t] + 0.5 * h)
    emit h
  }
}
block Stack(x: [T, D]) -> [T, D] {
  use layers = Layer × 3
  return layers(x)
}
"""


def test_repeated_instances_step_each_layer_with_its_own_state(tmp_path):
    torch.manual_seed(10)
    full = ncd.load(STACK).double()
    step = full.step_module()
    assert list(step.state_spec()) == ["layers.0.h", "layers.1.h", "layers.2.h"] == list(full.state_spec())
    torch.testing.assert_close(step.initial_state(2)["layers.1.h"], full.layers[1].h0.expand(2, 6))
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    got, _ = stepped(step, [x])
    torch.testing.assert_close(got, full(x), rtol=1e-10, atol=1e-10)
    _, state = full(x[:, :2], return_state=True)
    rest, _ = stepped(step, [x[:, 2:]], state=state)
    torch.testing.assert_close(rest, full(x)[:, 2:], rtol=1e-10, atol=1e-10)
    path = tmp_path / "stack.ncd"
    path.write_text(STACK)
    out = tmp_path / "stack_step.py"
    run = subprocess.run([sys.executable, "-m", "ncd.cli", "compile", str(path), "--emit", "step", "-o", str(out)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    spec = importlib.util.spec_from_file_location("stack_step", out)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    emitted = mod.StackStep().double()
    emitted.load_state_dict(full.state_dict())
    torch.testing.assert_close(stepped(emitted, [x])[0], full(x), rtol=1e-10, atol=1e-10)


def test_a_stack_of_causal_decoder_layers_gets_a_cache_per_layer():
    torch.manual_seed(11)
    spec = CAUSAL_DECODER + """
block Decoders(x: [T, D]) -> [T, D] {
  use layers = Decoder × 2
  return layers(x)
}
"""
    full = ncd.load(spec).double()
    step = full.step_module()
    assert list(step.state_spec()) == ["layers.0.attn.k", "layers.0.attn.v", "layers.1.attn.k", "layers.1.attn.v"]
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    torch.testing.assert_close(stepped(step, [x])[0], full(x), rtol=1e-9, atol=1e-9)


DECODERS = CAUSAL_DECODER + """
block Decoders(x: [T, D]) -> [T, D] {
  use layers = Decoder × 2
  return layers(x)
}
"""


# a weight-free attention called directly: its caches are named after the block (Attend.kk)
DIRECT_ATTEND = """axis T, D = 4
block Attend(q: [T, D], k: [T, D], v: [T, D]) -> [T, D] {
  kk = k[T as T']
  vv = v[T as T']
  a = softmax(where(idx(T') <= idx(T), q @[D] kk, -inf), over = T')
  return a @[T'] vv
}
block Net(x: [T, D]) -> [T, D] {
  param Wq, Wk, Wv: [D, D'] init normal(0, 0.5)
  return Attend((x @[D] Wq)[D' as D], (x @[D] Wk)[D' as D], (x @[D] Wv)[D' as D])
}
"""


@pytest.mark.parametrize("spec, prompt", [
    (CAUSAL_DECODER, 1), (CAUSAL_DECODER, 4), (HYBRID, 3), (SHORT_CONV, 1), (SHORT_CONV, 3), (SHORT_CONV, 6),
    (DECODERS, 4), (STACK, 3), (DIRECT_ATTEND, 2),
], ids=["decoder-1", "decoder-4", "hybrid-3", "conv-1", "conv-3", "conv-6", "decoders-4", "stack-3", "direct-2"])
def test_prefill_in_parallel_then_step_equals_the_whole_sequence(spec, prompt):
    torch.manual_seed(12)
    full = ncd.load(spec).double()
    step = full.step_module()
    x, = inputs(full, 2, 8)
    want = full(x)
    head, state = step.prefill(x[:, :prompt])
    assert list(state) == list(step.state_spec())  # every state: scans', caches, windows
    if spec is DIRECT_ATTEND:
        assert list(state) == ["Attend.kk", "Attend.vv"]
    torch.testing.assert_close(head, want[:, :prompt], rtol=1e-9, atol=1e-9)
    rest, _ = stepped(step, [x[:, prompt:]], state=state)
    torch.testing.assert_close(rest, want[:, prompt:], rtol=1e-9, atol=1e-9)
    # the state the prompt leaves is the one stepping it leaves (a cache: every position so far)
    _, walked = stepped(step, [x[:, :prompt]])
    for name, value in walked.items():
        torch.testing.assert_close(state[name], value, rtol=1e-9, atol=1e-9, msg=name)


def test_prefill_window_of_a_prompt_shorter_than_it_is_zeros_then_the_prompt():
    full = ncd.load(SHORT_CONV).double()
    x = torch.randn(3, 2, 4, dtype=torch.float64)
    _, state = full.step_module().prefill(x)
    assert state["y.window"].shape == (3, 4, 4)  # dilation 2 · (K - 1): 4 inputs held
    torch.testing.assert_close(state["y.window"], torch.cat([torch.zeros(3, 2, 4, dtype=torch.float64), x], 1))


def test_prefill_gradients_equal_the_whole_sequences():
    torch.manual_seed(13)
    full = ncd.load(HYBRID).double()
    step = full.step_module()
    x = torch.randn(2, 6, 8, dtype=torch.float64, requires_grad=True)
    head, state = step.prefill(x[:, :4])
    rest, _ = stepped(step, [x[:, 4:]], state=state)
    got = torch.autograd.grad((torch.cat([head, rest], 1) ** 2).sum(), [x, *full.parameters()])
    want = torch.autograd.grad((full(x) ** 2).sum(), [x, *full.parameters()])
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-10)


def test_prefill_continues_scan_states_and_refuses_a_cache():
    torch.manual_seed(14)
    full = ncd.load(STACK).double()
    step = full.step_module()
    x = torch.randn(2, 7, 6, dtype=torch.float64)
    _, first = full(x[:, :2], return_state=True)
    mid, state = step.prefill(x[:, 2:5], state=first)  # a second chunk of prompt, from the first's state
    torch.testing.assert_close(mid, full(x)[:, 2:5], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(stepped(step, [x[:, 5:]], state=state)[0], full(x)[:, 5:], rtol=1e-10, atol=1e-10)
    decoder = ncd.load(CAUSAL_DECODER).step_module()
    with pytest.raises(ncd.NcdError, match="unknown state 'attn.q'"):
        decoder.prefill(torch.randn(1, 2, 8), state={"attn.q": torch.zeros(1)})


@pytest.mark.parametrize("spec, cut", [(CAUSAL_DECODER, 3), (CAUSAL_DECODER, 1), (SHORT_CONV, 2), (SHORT_CONV, 5),
                                       (HYBRID, 4), (DIRECT_ATTEND, 2)],
                         ids=["decoder-3", "decoder-1", "conv-2", "conv-5", "hybrid-4", "direct-2"])
def test_prefill_continues_from_a_kv_cache_and_a_window(spec, cut):
    """prefill(a) then prefill(b, state=) == prefill(a + b) == the full module: outputs, every
    state (caches hold every position so far, windows the last inputs) and every gradient."""
    torch.manual_seed(16)
    full = ncd.load(spec).double()
    step = full.step_module()
    x, = inputs(full, 2, 7)
    x.requires_grad_(True)
    head, first = step.prefill(x[:, :cut])
    assert any(s.kind != "carry" for s in step._ncd_step.states if s.name in first)  # a cache or window carried
    rest, after = step.prefill(x[:, cut:], state=first)
    whole, want_state = step.prefill(x)
    want = full(x)
    torch.testing.assert_close(torch.cat([head, rest], 1), want, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(whole, want, rtol=1e-9, atol=1e-9)
    assert list(after) == list(want_state)
    for name in want_state:
        torch.testing.assert_close(after[name], want_state[name], rtol=1e-9, atol=1e-9, msg=name)
    got = torch.autograd.grad((torch.cat([head, rest], 1) ** 2).sum(), [x, *full.parameters()])
    ref = torch.autograd.grad((want ** 2).sum(), [x, *full.parameters()])
    for g, w in zip(got, ref):
        torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-10)


def test_prefill_follows_the_full_modules_weights_and_dtype():
    full = ncd.load(SHORT_CONV)
    step = full.step_module()
    x = torch.randn(2, 5, 4)
    step.prefill(x)
    with torch.no_grad():
        full.w.mul_(2.0)  # training the full module changes what prefill computes
    torch.testing.assert_close(step.prefill(x)[0], full(x))
    full.double()
    head, state = step.prefill(x.double())
    assert head.dtype == state["y.window"].dtype == torch.float64
    torch.testing.assert_close(head, full(x.double()))


@pytest.mark.parametrize("spec", [HYBRID, SHORT_CONV, DIRECT_ATTEND], ids=["hybrid", "conv", "direct"])
def test_emitted_step_module_prefills_as_the_in_process_one(spec, tmp_path):
    path = tmp_path / "spec.ncd"
    path.write_text(spec)
    out = tmp_path / "spec_step.py"
    run = subprocess.run([sys.executable, "-m", "ncd.cli", "compile", str(path), "--emit", "step", "-o", str(out),
                          "--class-name", "Stepper"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "import ncd" not in out.read_text() and "from ncd" not in out.read_text()
    loaded = importlib.util.spec_from_file_location("spec_step", out)
    mod = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(mod)
    torch.manual_seed(15)
    full = ncd.load(str(path)).double()
    emitted = mod.Stepper().double()
    emitted.load_state_dict(full.state_dict())
    x, = inputs(full, 2, 7)
    head, state = emitted.prefill(x[:, :3])
    want_head, want_state = full.step_module().prefill(x[:, :3])
    assert list(state) == list(want_state) == list(emitted.state_spec())
    torch.testing.assert_close(head, want_head, rtol=1e-10, atol=1e-10)
    for name in want_state:
        torch.testing.assert_close(state[name], want_state[name], rtol=1e-10, atol=1e-10, msg=name)
    rest, _ = stepped(emitted, [x[:, 3:]], state=state)
    torch.testing.assert_close(rest, full(x)[:, 3:], rtol=1e-9, atol=1e-9)
    more, after = emitted.prefill(x[:, 3:], state=state)  # a continuation: from the caches and windows too
    torch.testing.assert_close(more, full(x)[:, 3:], rtol=1e-9, atol=1e-9)
    _, whole = full.step_module().prefill(x)
    for name in whole:
        torch.testing.assert_close(after[name], whole[name], rtol=1e-9, atol=1e-9, msg=name)
    assert not dict(emitted.named_children()).get("_ncd_prefill")  # its weights stay the step module's own
    assert emitted.state_dict().keys() == full.state_dict().keys()

"""What a call of a compiled standard cell (backend `fused_rnn`) sees of its weights: the spec's
parameters as they are at that call, whatever changed them in place since (an optimizer step,
a fused one that leaves the version counter alone, an edit under no_grad or through `.data`),
and gradients that equal torch.nn's. Also: `auto`'s run-time choice asks its cost model once
per call key. The references are torch.nn.LSTM / GRU / RNN with the same weights, the layout
relation written out as each spec's header states it (not through ncd.interop)."""
from __future__ import annotations

import pytest
import torch

import ncd

B, T, E, D = 2, 5, 3, 4
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1}
REFERENCE = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn_tanh": torch.nn.RNN}


def spec_layout(cell: str, name: str, flat: torch.Tensor) -> torch.Tensor:
    """torch's flat weight as the spec's parameter: W_ih[I, G, D] = weight_ih.view(G, D, I)
    .permute(2, 0, 1), b[G, D] = bias.view(G, D) (gru.ncd, lstm.ncd); rnn_tanh.ncd has no G:
    W_ih[I, D] = weight_ih.T, b = bias."""
    g = GATES[cell]
    if name.startswith("weight"):
        rows = flat.shape[1]
        return flat.t().contiguous() if g == 1 else flat.reshape(g, D, rows).permute(2, 0, 1).contiguous()
    return flat.clone() if g == 1 else flat.reshape(g, D).clone()


SPEC_NAME = {"weight_ih_l0": "l1.W_ih", "weight_hh_l0": "l1.W_hh", "bias_ih_l0": "l1.b_ih", "bias_hh_l0": "l1.b_hh"}


def pair(cell: str, dtype: torch.dtype = torch.float64) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    ref = REFERENCE[cell](E, D, batch_first=True).to(dtype)
    compiled = ncd.load(f"specs/{cell}.ncd", T=T, E=E, D=D).to(dtype)
    assert [s.scan.implementation for s in compiled.l1._ncd_run.steps if hasattr(s, "scan")] == \
        ["torch's fused RNN operator"]
    copy_into(compiled, ref, cell)
    return compiled, ref


def copy_into(compiled: torch.nn.Module, ref: torch.nn.Module, cell: str) -> None:
    params = dict(compiled.named_parameters())
    with torch.no_grad():
        for name, value in ref.named_parameters():
            params[SPEC_NAME[name]].copy_(spec_layout(cell, name, value))


@pytest.mark.parametrize("cell", list(GATES))
def test_outputs_and_gradients_equal_torch_nn(cell):
    compiled, ref = pair(cell)
    x = torch.randn(B, T, E, dtype=torch.float64, requires_grad=True)
    ours, theirs = compiled(x), ref(x)[0]
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
    seed = torch.randn_like(ours)
    grads = torch.autograd.grad(ours, [x, *compiled.parameters()], seed)
    ref_grads = torch.autograd.grad(theirs, [x, *ref.parameters()], seed)
    torch.testing.assert_close(grads[0], ref_grads[0], rtol=1e-10, atol=1e-10)
    ours_by_name = dict(zip([n for n, _ in compiled.named_parameters()], grads[1:]))
    for (name, _), grad in zip(ref.named_parameters(), ref_grads[1:]):
        torch.testing.assert_close(ours_by_name[SPEC_NAME[name]], spec_layout(cell, name, grad),
                                   rtol=1e-10, atol=1e-10)


def edit_sgd(compiled, ref, cell):
    """One SGD step on each, from the gradients of the same loss (equal: the test above)."""
    x = torch.randn(B, T, E, dtype=torch.float64)
    compiled(x).sum().backward()
    ref(x)[0].sum().backward()
    for module in (compiled, ref):
        torch.optim.SGD(module.parameters(), lr=0.5).step()


def edit_fused_adamw(compiled, ref, cell):
    """A fused optimizer writes the parameters in one kernel and leaves their `_version` as it
    was (what would make a copy kept by version stale); the reference takes the result."""
    compiled(torch.randn(B, T, E, dtype=torch.float64)).sum().backward()
    before = [p._version for p in compiled.parameters()]
    torch.optim.AdamW(compiled.parameters(), lr=0.5, fused=True).step()
    assert [p._version for p in compiled.parameters()] == before
    spec = dict(compiled.named_parameters())
    with torch.no_grad():
        for name, value in ref.named_parameters():
            value.copy_(from_spec(cell, name, spec[SPEC_NAME[name]], value.shape))


def from_spec(cell: str, name: str, spec: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """spec_layout's inverse."""
    if name.startswith("weight"):
        return spec.t() if GATES[cell] == 1 else spec.permute(1, 2, 0).reshape(shape)
    return spec.reshape(shape)


def edit_no_grad(compiled, ref, cell):
    with torch.no_grad():
        for module in (compiled, ref):
            for p in module.parameters():
                p.mul_(-1.5)


def edit_data(compiled, ref, cell):
    for module in (compiled, ref):
        for p in module.parameters():
            p.data.add_(0.25)


@pytest.mark.parametrize("edit", [edit_sgd, edit_fused_adamw, edit_no_grad, edit_data],
                         ids=["sgd_step", "fused_adamw_step", "no_grad_mul_", "data_add_"])
@pytest.mark.parametrize("cell", list(GATES))
@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
def test_a_call_sees_the_weights_after_an_in_place_update(cell, edit, grad):
    compiled, ref = pair(cell)
    x = torch.randn(B, T, E, dtype=torch.float64)
    with torch.set_grad_enabled(grad):
        first = compiled(x)
        torch.testing.assert_close(first, ref(x)[0], rtol=1e-10, atol=1e-10)
    edit(compiled, ref, cell)
    with torch.set_grad_enabled(grad):
        after = compiled(x)
        torch.testing.assert_close(after, ref(x)[0], rtol=1e-10, atol=1e-10)
    assert not torch.equal(first, after)


def test_the_emitted_python_sees_in_place_updates_too(tmp_path):
    import importlib.util

    from ncd.backends.pytorch.emit import emit_python

    compiled, ref = pair("lstm")
    path = tmp_path / "lstm_emitted.py"
    path.write_text(emit_python(ncd.check("specs/lstm.ncd", T=T, E=E, D=D), class_name="Entry"))
    spec = importlib.util.spec_from_file_location("lstm_emitted", path)
    emitted_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(emitted_module)  # our own generated code
    emitted = emitted_module.Entry().double()
    emitted.load_state_dict(compiled.state_dict())
    x = torch.randn(B, T, E, dtype=torch.float64)
    assert torch.equal(emitted(x), compiled(x))
    for module in (emitted, ref):
        for p in module.parameters():
            p.data.mul_(0.5)
    torch.testing.assert_close(emitted(x), ref(x)[0], rtol=1e-10, atol=1e-10)


def test_auto_asks_its_cost_model_once_per_call_key(monkeypatch):
    """paragru under auto: the loop-or-Newton prediction is made at a key's first call only; a
    new batch size, grad mode or dtype is a new key."""
    from ncd.backends.pytorch import scan_cost

    asked: list[tuple] = []
    real = scan_cost.choose  # auto's run-time choice (backends/pytorch/auto_scan.py)

    def counting(plan, device, dtype, call, backward):
        asked.append((dtype, call.rows, call.T, backward))
        return real(plan, device, dtype, call, backward)

    monkeypatch.setattr(scan_cost, "choose", counting)
    module = ncd.load("specs/paragru.ncd", T=8, E=8, D=8)
    x1, x2 = torch.randn(1, 8, 8), torch.randn(3, 8, 8)
    with torch.no_grad():
        for x in (x1, x1, x2, x1, x2):
            module(x)
    assert asked == [("float32", 1, 8, False), ("float32", 3, 8, False)]
    module(x1).sum().backward()
    module(x1).sum().backward()
    assert asked[2:] == [("float32", 1, 8, True)]
    with torch.no_grad():
        module.double()(x1.double())
    assert asked[3:] == [("float64", 1, 8, False)]
    for p in module.parameters():
        p.requires_grad_(False)
    module(x1.double())  # grad mode on but nothing to differentiate: a forward-only key
    assert asked[3:] == [("float64", 1, 8, False)]


def test_the_dtype_check_follows_a_conversion_after_the_first_call():
    module = ncd.load("specs/lstm.ncd", T=T, E=E, D=D)
    module(torch.randn(B, T, E))
    module.double()
    with pytest.raises(ncd.NcdError, match="input x is torch.float32 but the module's parameters are torch.float64"):
        module(torch.randn(B, T, E))
    assert module(torch.randn(B, T, E, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("cell", list(GATES))
def test_the_operator_reads_the_parameters_themselves_not_copies(cell, monkeypatch):
    """W_ih [I, G, D] permuted to torch's [G·D, I] is a strided view of the parameter: the
    operator gets views of the spec's tensors (same storage), so the forward copies no weight."""
    compiled, ref = pair(cell, torch.float32)
    seen: list[list[torch.Tensor]] = []
    real = getattr(torch, cell)  # torch.lstm / gru / rnn_tanh: the operator rt.fused_rnn calls

    def spy(x, hx, weights, *rest):
        seen.append(list(weights))
        return real(x, hx, weights, *rest)

    monkeypatch.setattr(torch, cell, spy)
    x = torch.randn(B, T, E)
    out = compiled(x)
    torch.testing.assert_close(out, ref(x)[0], rtol=1e-5, atol=1e-5)
    params = dict(compiled.named_parameters())
    storages = [params[SPEC_NAME[n]].untyped_storage().data_ptr()
                for n in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")]
    assert [w.untyped_storage().data_ptr() for w in seen[0]] == storages


def generic(cell: str) -> torch.nn.Module:
    """The same module with its short call path off: every call runs the block statements."""
    module = ncd.load(f"specs/{cell}.ncd", T=T, E=E, D=D).double()
    module._ncd_direct = None
    return module


@pytest.mark.parametrize("cell", list(GATES))
def test_the_short_call_path_equals_the_generic_one(cell):
    """An entry that is one fused scan of its input runs it straight (fused_rnn.OneScanCall):
    same outputs and gradients, bit for bit, as the block-by-block path."""
    compiled, _ = pair(cell)
    assert compiled._ncd_direct is not None
    slow = generic(cell)
    slow.load_state_dict(compiled.state_dict())
    x = torch.randn(B, T, E, dtype=torch.float64, requires_grad=True)
    for module in (compiled, slow):
        module.train()
    ran = []  # the sub-block's statements: what the short path does not run
    body = compiled.l1._ncd_run
    compiled.l1.__dict__["_ncd_run"] = lambda env, m: (ran.append(1), body(env, m))
    fast_out, slow_out = compiled(x), slow(x)
    assert ran == [] and torch.equal(fast_out, slow_out)
    seed = torch.randn_like(fast_out)
    fast_grads = torch.autograd.grad(fast_out, [x, *compiled.parameters()], seed)
    slow_grads = torch.autograd.grad(slow_out, [x, *slow.parameters()], seed)
    assert all(torch.equal(a, b) for a, b in zip(fast_grads, slow_grads))


def test_the_short_call_path_keeps_the_input_checks():
    module = ncd.load("specs/lstm.ncd", T=T, E=E, D=D)
    with pytest.raises(ncd.NcdError, match="axis E has size 5 but the spec binds it to 3") as caught:
        module(torch.randn(B, T, 5))
    assert "lstm.ncd:" in str(caught.value)
    with pytest.raises(ncd.NcdError, match="takes 1 inputs"):
        module(torch.randn(B, T, E), torch.randn(B, T, E))


def test_hooks_states_and_a_replaced_sub_block_take_the_generic_path():
    module = ncd.load("specs/lstm.ncd", T=T, E=E, D=D)
    x = torch.randn(B, T, E)
    seen = []
    handle = module.l1.register_forward_hook(lambda mod, args, out: seen.append(out.shape))
    out = module(x)
    assert seen == [out.shape]
    handle.remove()
    out2, state = module(x, return_state=True)
    assert torch.equal(out, out2) and set(state) == {"l1.h", "l1.c"}
    again = module(x, initial_state=state)
    assert not torch.equal(again, out)  # started from the final state, not from zero
    module.l1 = torch.nn.Identity()
    assert torch.equal(module(x), x)  # the block's statements ran: l1 is what the module holds now


def test_an_lstm_holds_its_weights_in_torch_layout():
    """FusedRNN.hold_weights: W_ih [I, G, D] is a permuted view of a contiguous [G·D, I] buffer
    (torch.nn.LSTM's weight_ih_l0 layout); names, shapes and values as the spec declares; the
    gradient lands in the parameter's own strides; a dtype change, load_state_dict and a
    safetensors round trip keep it; one SGD step on the visible parameters equals torch.nn's."""
    compiled, ref = pair("lstm", torch.float32)
    params = dict(compiled.named_parameters())
    for name, value in ref.named_parameters():
        mine = params[SPEC_NAME[name]]
        assert torch.equal(from_spec("lstm", name, mine, value.shape), value)
        if name.startswith("weight"):
            assert not mine.is_contiguous() and mine.permute(1, 2, 0).is_contiguous()
    assert {k: tuple(v.shape) for k, v in compiled.state_dict().items()} == \
        {"l1.W_ih": (E, 4, D), "l1.W_hh": (D, 4, D), "l1.b_ih": (4, D), "l1.b_hh": (4, D)}
    x = torch.randn(B, T, E)
    compiled(x).sum().backward()
    ref(x)[0].sum().backward()
    for p in compiled.parameters():
        assert p.grad.stride() == p.stride()
    for module in (compiled, ref):
        torch.optim.SGD(module.parameters(), lr=0.5).step()
    torch.testing.assert_close(compiled(x), ref(x)[0], rtol=1e-5, atol=1e-5)
    again = ncd.load("specs/lstm.ncd", T=T, E=E, D=D)
    again.load_state_dict(compiled.state_dict())
    assert again.l1.W_ih.permute(1, 2, 0).is_contiguous() and torch.equal(again(x), compiled(x))
    assert compiled.double().l1.W_hh.permute(1, 2, 0).is_contiguous()


def test_contiguous_parameters_releases_the_held_layout_with_the_same_results():
    """What a module built before init_process_group calls before FSDP2's fully_shard (which
    refuses parameters that are not contiguous): values, names and shapes kept, the forward and
    every gradient the same as with the held layout."""
    compiled = ncd.load("specs/lstm.ncd", T=T, E=E, D=D)
    x = torch.randn(B, T, E)
    held = [p for p in compiled.parameters() if not p.is_contiguous()]
    assert len(held) == 2  # W_ih and W_hh: the comparison below is not vacuous
    before_state = {k: v.clone() for k, v in compiled.state_dict().items()}
    before_out = compiled(x)
    before_grads = torch.autograd.grad(before_out.square().sum(), list(compiled.parameters()))
    assert compiled.contiguous_parameters() is compiled
    assert all(p.is_contiguous() for p in compiled.parameters())
    assert all(torch.equal(v, before_state[k]) and v.shape == before_state[k].shape
               for k, v in compiled.state_dict().items())
    out = compiled(x)
    torch.testing.assert_close(out, before_out, rtol=1e-6, atol=1e-6)
    grads = torch.autograd.grad(out.square().sum(), list(compiled.parameters()))
    for grad, before in zip(grads, before_grads):
        torch.testing.assert_close(grad, before, rtol=1e-5, atol=1e-6)


def test_a_saved_lstm_loads_back_equal(tmp_path):
    pytest.importorskip("safetensors")
    compiled = ncd.load("specs/lstm.ncd", T=T, E=E, D=D)
    ncd.save(compiled, tmp_path / "m", card=False)
    back = ncd.hub.load_pretrained(tmp_path / "m")
    x = torch.randn(B, T, E)
    assert torch.equal(back(x), compiled(x)) and back.l1.W_ih.permute(1, 2, 0).is_contiguous()

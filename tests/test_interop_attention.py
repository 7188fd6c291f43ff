"""The attention and transformer specs against torch.nn, through ncd.interop.load_torch.

attention ↔ nn.MultiheadAttention(batch_first=True); transformer_encoder / _preln ↔
nn.TransformerEncoderLayer(dropout=0, norm_first=False / True); transformer_single_layer ↔
TransformerEncoderLayer with both norms replaced by nn.Identity. The reference's weights are
randomised (biases and LayerNorm affine included), copied with load_torch, and both run in float64
on sizes drawn per seed. Outputs agree to 1e-10, and so does every gradient: the input's, and each
compiled parameter's against the reference parameter it came from, mapped back to torch's layout
here (in_proj_weight = [Wq; Wk; Wv] flattened and transposed, …), independently of load_torch.
Mismatched references are rejected with NcdError and leave the compiled weights untouched.
"""
from __future__ import annotations

import random

import pytest
import torch
from torch import nn

import ncd
from ncd.interop import load_torch

TOL = dict(rtol=1e-10, atol=1e-10)
SEEDS = [0, 1, 2]


def draw(seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    H = rng.randint(1, 3)
    return dict(B=rng.randint(1, 3), T=rng.randint(1, 6), H=H, D=H * rng.randint(1, 3), F=rng.randint(1, 7))


def randomise(module: nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.5)


def torch_layout(grads: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Compiled-spec tensors (by state-dict name) → the torch parameter names and layouts they map to."""
    g = {k[len(prefix):]: v for k, v in grads.items() if k.startswith(prefix)}
    D = g["Wq"].shape[0]
    out = {
        "in_proj_weight": torch.cat([g[n].reshape(D, D).t() for n in ("Wq", "Wk", "Wv")]),
        "in_proj_bias": torch.cat([g[n].reshape(D) for n in ("bq", "bk", "bv")]),
        "out_proj.weight": g["Wo"].reshape(D, D).t(),
        "out_proj.bias": g["bo"],
    }
    return out


def encoder_layout(grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {f"self_attn.{k}": v for k, v in torch_layout(grads, "attn.").items()}
    out |= {"linear1.weight": grads["ffn.W1"].t(), "linear1.bias": grads["ffn.b1"],
            "linear2.weight": grads["ffn.W2"].t(), "linear2.bias": grads["ffn.b2"]}
    for norm in ("norm1", "norm2"):
        if f"{norm}.gamma" in grads:
            out |= {f"{norm}.weight": grads[f"{norm}.gamma"], f"{norm}.bias": grads[f"{norm}.beta"]}
    return out


def check_outputs_and_grads(compiled, reference, run_ref, x, layout) -> None:
    xr = x.detach().clone().requires_grad_(True)
    out, want = compiled(x), run_ref(reference, xr)
    torch.testing.assert_close(out, want, **TOL)
    w = torch.randn_like(want)
    names, params = zip(*compiled.named_parameters())
    got = torch.autograd.grad((out * w).sum(), (x, *params))
    ref_names, ref_params = zip(*reference.named_parameters())
    exp = torch.autograd.grad((want * w).sum(), (xr, *ref_params))
    torch.testing.assert_close(got[0], exp[0], **TOL, msg=lambda m: f"gradient of the input: {m}")
    mapped = layout(dict(zip(names, got[1:])))
    assert set(mapped) == set(ref_names), "every reference parameter has a compiled counterpart"
    for name, g_ref in zip(ref_names, exp[1:]):
        torch.testing.assert_close(mapped[name], g_ref, **TOL, msg=lambda m, n=name: f"gradient of {n}: {m}")


# ---------------------------------------------------------------- MultiheadAttention
def mha_forward(ref, x):
    return ref(x, x, x, need_weights=False)[0]


@pytest.mark.parametrize("seed", SEEDS)
def test_attention_matches_multihead_attention(seed):
    n = draw(seed)
    torch.manual_seed(seed)
    ref = nn.MultiheadAttention(n["D"], n["H"], batch_first=True).double()
    randomise(ref)
    m = ncd.load("attention", D=n["D"], H=n["H"]).double()
    assert load_torch(m, ref) is m
    x = torch.randn(n["B"], n["T"], n["D"], dtype=torch.float64, requires_grad=True)
    check_outputs_and_grads(m, ref, mha_forward, x, torch_layout)


def test_attention_lifts_over_any_batch_shape():
    torch.manual_seed(3)
    ref = nn.MultiheadAttention(6, 2, batch_first=True).double()
    randomise(ref)
    m = load_torch(ncd.load("attention", D=6, H=2).double(), ref)
    x = torch.randn(2, 3, 4, 6, dtype=torch.float64)
    want = mha_forward(ref, x.reshape(6, 4, 6)).reshape(2, 3, 4, 6)
    torch.testing.assert_close(m(x), want, **TOL)
    torch.testing.assert_close(m(x[0, 0]), mha_forward(ref, x[0, 0]), **TOL)      # unbatched [T, D]


def test_attention_from_sequence_first_reference():
    """batch_first only changes how the reference is called, not its weights."""
    torch.manual_seed(4)
    ref = nn.MultiheadAttention(4, 2).double()
    randomise(ref)
    m = load_torch(ncd.load("attention", D=4, H=2).double(), ref)
    x = torch.randn(3, 5, 4, dtype=torch.float64)
    torch.testing.assert_close(m(x), mha_forward(ref, x.transpose(0, 1)).transpose(0, 1), **TOL)


def test_attention_default_init_has_torch_statistics():
    torch.manual_seed(0)
    m = ncd.load("attention", D=64, H=4)
    bound = (6 / (4 * 64)) ** 0.5
    for w in (m.Wq, m.Wk, m.Wv):
        assert w.abs().max() <= bound and w.std() > 0.9 * bound / 3**0.5
    for b in (m.bq, m.bk, m.bv, m.bo):
        assert torch.all(b == 0)


# ---------------------------------------------------------------- TransformerEncoderLayer
def encoder_forward(ref, x):
    return ref(x)


def make_encoder(n, norm_first=False, identity_norms=False, **kw):
    ref = nn.TransformerEncoderLayer(n["D"], n["H"], n["F"], dropout=0.0, batch_first=True,
                                     norm_first=norm_first, **kw).double()
    if identity_norms:
        ref.norm1, ref.norm2 = nn.Identity(), nn.Identity()
    randomise(ref)
    return ref.train()       # training mode, dropout 0: the eval fast path rejects Identity norms


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("spec, norm_first, identity", [("transformer_encoder", False, False),
                                                       ("transformer_encoder_preln", True, False),
                                                       ("transformer_single_layer", False, True)])
def test_encoder_layer_matches_torch(spec, norm_first, identity, seed):
    n = draw(seed)
    torch.manual_seed(seed)
    ref = make_encoder(n, norm_first, identity)
    m = ncd.load(spec, D=n["D"], H=n["H"], F=n["F"]).double()
    load_torch(m, ref)
    x = torch.randn(n["B"], n["T"], n["D"], dtype=torch.float64, requires_grad=True)
    check_outputs_and_grads(m, ref, encoder_forward, x, encoder_layout)


def test_multihead_attention_into_an_encoder_fills_its_attention_only():
    torch.manual_seed(5)
    n = dict(D=4, H=2, F=3)
    m = ncd.load("transformer_encoder", **n).double()
    ffn_before = m.ffn.W1.detach().clone()
    mha = nn.MultiheadAttention(4, 2, batch_first=True).double()
    randomise(mha)
    load_torch(m, mha)
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    torch.testing.assert_close(m.attn(x), mha_forward(mha, x), **TOL)
    assert torch.equal(m.ffn.W1, ffn_before)


# ---------------------------------------------------------------- mismatches are NcdErrors
N = dict(D=6, H=2, F=5)


def rejected(compiled: nn.Module, reference: nn.Module, *words: str) -> None:
    before = {k: v.clone() for k, v in compiled.state_dict().items()}
    with pytest.raises(ncd.NcdError) as info:
        load_torch(compiled, reference)
    text = str(info.value)
    for word in words:
        assert word in text, text
    after = compiled.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a rejected copy changed weights"


@pytest.mark.parametrize("reference, words", [
    (lambda: nn.MultiheadAttention(8, 2, batch_first=True), ("D = 6", "8")),
    (lambda: nn.MultiheadAttention(6, 3, batch_first=True), ("H = 2", "3")),
    (lambda: nn.MultiheadAttention(6, 2, bias=False, batch_first=True), ("in_proj_bias",)),
    (lambda: nn.MultiheadAttention(6, 2, kdim=4, vdim=4, batch_first=True), ("kdim",)),
    (lambda: nn.MultiheadAttention(6, 2, add_bias_kv=True, batch_first=True), ("add_bias_kv",)),
    (lambda: nn.MultiheadAttention(6, 2, add_zero_attn=True, batch_first=True), ("add_zero_attn",)),
], ids=["embed_dim", "num_heads", "no_bias", "kdim_vdim", "bias_kv", "zero_attn"])
def test_mismatched_multihead_attention_is_rejected(reference, words):
    m = ncd.load("attention", D=6, H=2)
    rejected(m, reference(), *words)


@pytest.mark.parametrize("spec, reference, words", [
    ("transformer_encoder", lambda: make_encoder(N, norm_first=True), ("norm_first=True",)),
    ("transformer_encoder_preln", lambda: make_encoder(N, norm_first=False), ("norm_first=False",)),
    ("transformer_encoder", lambda: make_encoder(N, activation="gelu"), ("activation=gelu",)),
    ("transformer_encoder", lambda: make_encoder(N, layer_norm_eps=1e-2), ("eps",)),
    ("transformer_encoder", lambda: make_encoder(dict(N, F=7)), ("F = 5", "7")),
    ("transformer_encoder", lambda: make_encoder(dict(N, D=4)), ("D = 6", "4")),
    ("transformer_encoder", lambda: make_encoder(N, bias=False), ("bias",)),
    ("transformer_encoder", lambda: make_encoder(N, identity_norms=True), ("nn.Identity",)),
    ("transformer_single_layer", lambda: make_encoder(N), ("LayerNorm norm1",)),
    ("attention", lambda: make_encoder(N), ("attn", "ffn")),
], ids=["post_vs_pre", "pre_vs_post", "gelu", "eps", "ffn_width", "embed_dim", "no_bias", "identity_norms",
        "norms_into_single_layer", "layer_into_attention"])
def test_mismatched_encoder_layer_is_rejected(spec, reference, words):
    torch.manual_seed(0)
    m = ncd.load(spec, **({k: v for k, v in N.items() if k != "F"} if spec == "attention" else N))
    rejected(m, reference(), *words)


def test_no_attention_parameters_and_unsupported_modules():
    rejected(ncd.load("mlp_relu", E=3, F=4, D=2), nn.MultiheadAttention(4, 2), "no attention parameters")
    rejected(ncd.load("attention", D=4, H=2), nn.Linear(4, 4), "no weight mapping for Linear")

"""Weights of torch's attention modules → the compiled attention / transformer specs.

Layouts (specs/attention.ncd, specs/transformer_*.ncd), with D = embed_dim, H = num_heads,
K = D / H and torch's head-major packing (row h·K + k of a projection belongs to head h):

    in_proj_weight [3D, D]  → Wq, Wk, Wv: [D, H, K]   (each third transposed, then split D → H K)
    in_proj_bias   [3D]     → bq, bk, bv: [H, K]
    out_proj.weight [D, D]  → Wo: [H, K, D]            (transposed, input side split D → H K)
    out_proj.bias  [D]      → bo: [D]
    linear1 / linear2       → ffn.W1: [D, F], ffn.b1: [F], ffn.W2: [F, D], ffn.b2: [D]
    norm1 / norm2           → norm1.gamma, norm1.beta, norm2.gamma, norm2.beta (absent when nn.Identity)

After copying, both modules run on one probe input (float64 copies, eval mode); if they disagree —
post-LN spec against a norm_first reference, another activation, another LayerNorm eps — the copy
is rejected with an NcdError. Dropout is a training-time detail and is not part of the mapping.
"""
from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from ncd.errors import NcdError

ATTENTION_PARAMS = ("Wq", "Wk", "Wv", "bq", "bk", "bv", "Wo", "bo")
FFN_PARAMS = ("W1", "b1", "W2", "b2")
NORM_PARAMS = ("gamma", "beta")


def _own_params(module: nn.Module) -> dict[str, nn.Parameter]:
    return dict(module.named_parameters(recurse=False))


def _attention_owner(compiled: nn.Module) -> tuple[str, nn.Module]:
    """The module (``compiled`` itself or one descendant) that holds Wq … bo directly."""
    found = [(path, m) for path, m in compiled.named_modules()
             if all(n in _own_params(m) for n in ATTENTION_PARAMS)]
    if not found:
        raise NcdError("the compiled module has no attention parameters (Wq, Wk, Wv, bq, bk, bv, Wo, bo)",
                       hint="load specs/attention.ncd, or a spec whose attention block declares these params")
    if len(found) > 1:
        paths = ", ".join(p or "<top>" for p, _ in found)
        raise NcdError(f"the compiled module holds several attention blocks ({paths}); which one is ambiguous",
                       hint="pass the submodule to load_torch, e.g. load_torch(compiled.layers[0].attn, mha)")
    return found[0]


def _copy(target: nn.Module, where: str, name: str, value: torch.Tensor | None, source: str) -> None:
    params = _own_params(target)
    full = f"{where}.{name}" if where else name
    if name not in params:
        raise NcdError(f"the compiled module has no parameter {full} to receive the reference's {source}")
    if value is None:
        raise NcdError(f"the reference has no {source} but the spec has {full}",
                       hint="the spec's layers carry biases (and LayerNorm affine); use bias=True")
    param = params[name]
    if tuple(param.shape) != tuple(value.shape):
        raise NcdError(f"{full} has shape {tuple(param.shape)} but the reference's {source} gives "
                       f"{tuple(value.shape)}",
                       hint="bind the spec's sizes to the reference's: ncd.load(spec, D=..., H=..., F=...)")
    with torch.no_grad():
        param.copy_(value.detach())


def _check_sizes(what: str, got: dict[str, int], want: dict[str, int]) -> None:
    bad = [f"{k} = {got[k]} (reference {want[k]})" for k in want if got.get(k) != want[k]]
    if bad:
        hint = "ncd.load(spec, " + ", ".join(f"{k}={v}" for k, v in want.items()) + ")"
        raise NcdError(f"{what} sizes differ from the reference: {', '.join(bad)}", hint=hint)


def _atomic(handler: Callable[[nn.Module, nn.Module], None]) -> Callable[[nn.Module, nn.Module], None]:
    """A rejected copy leaves the compiled module's weights as they were."""

    def run(compiled: nn.Module, reference: nn.Module) -> None:
        saved = {k: v.detach().clone() for k, v in compiled.state_dict().items()}
        try:
            handler(compiled, reference)
        except NcdError:
            compiled.load_state_dict(saved)
            raise

    run.__name__, run.__doc__ = handler.__name__, handler.__doc__
    return run


# ------------------------------------------------------------------------------ MultiheadAttention
def _mha_weights(mha: nn.MultiheadAttention) -> dict[str, torch.Tensor | None]:
    if not mha._qkv_same_embed_dim:
        raise NcdError(f"MultiheadAttention with kdim={mha.kdim}, vdim={mha.vdim} ≠ embed_dim={mha.embed_dim} "
                       "is not self-attention", hint="the spec is self-attention: construct it without kdim/vdim")
    if mha.bias_k is not None or mha.bias_v is not None:
        raise NcdError("MultiheadAttention with add_bias_kv=True has no counterpart in the spec")
    if mha.add_zero_attn:
        raise NcdError("MultiheadAttention with add_zero_attn=True has no counterpart in the spec")
    d, h = mha.embed_dim, mha.num_heads
    k = mha.head_dim
    w = mha.in_proj_weight.detach()
    b = None if mha.in_proj_bias is None else mha.in_proj_bias.detach()
    out = {}
    for i, n in enumerate("qkv"):
        out[f"W{n}"] = w[i * d:(i + 1) * d].t().reshape(d, h, k)
        out[f"b{n}"] = None if b is None else b[i * d:(i + 1) * d].reshape(h, k)
    out["Wo"] = mha.out_proj.weight.detach().t().reshape(h, k, d)
    out["bo"] = None if mha.out_proj.bias is None else mha.out_proj.bias.detach()
    return out


SOURCES = {"Wq": "in_proj_weight[:D]", "Wk": "in_proj_weight[D:2D]", "Wv": "in_proj_weight[2D:]",
           "bq": "in_proj_bias[:D]", "bk": "in_proj_bias[D:2D]", "bv": "in_proj_bias[2D:]",
           "Wo": "out_proj.weight", "bo": "out_proj.bias"}


def _load_mha_into(owner: nn.Module, where: str, mha: nn.MultiheadAttention) -> None:
    wq = _own_params(owner)["Wq"]
    if wq.dim() != 3:
        raise NcdError(f"{where + '.' if where else ''}Wq has shape {tuple(wq.shape)}; expected [D, H, K]")
    d, h, k = wq.shape
    _check_sizes("attention", {"D": d, "H": h, "K": k},
                 {"D": mha.embed_dim, "H": mha.num_heads, "K": mha.head_dim})
    for name, value in _mha_weights(mha).items():
        _copy(owner, where, name, value, SOURCES[name])


@_atomic
def load_multihead_attention(compiled: nn.Module, reference: nn.MultiheadAttention) -> None:
    """Self-attention weights into the one attention block of ``compiled`` (Wq … bo)."""
    where, owner = _attention_owner(compiled)
    _load_mha_into(owner, where, reference)
    _probe(owner, reference, lambda r, x: r(x, x, x, need_weights=False)[0],
           getattr(reference, "batch_first", False), reference.embed_dim, "MultiheadAttention")


# ------------------------------------------------------------------------ TransformerEncoderLayer
def _child(compiled: nn.Module, name: str, params: tuple[str, ...]) -> nn.Module | None:
    child = getattr(compiled, name, None)
    if isinstance(child, nn.Module) and all(p in _own_params(child) for p in params):
        return child
    return None


def _activation_name(layer: nn.TransformerEncoderLayer) -> str:
    act = layer.activation
    return getattr(act, "__name__", type(act).__name__)


@_atomic
def load_transformer_encoder_layer(compiled: nn.Module, reference: nn.TransformerEncoderLayer) -> None:
    """A whole encoder layer into a spec with instances attn, ffn and (unless Identity) norm1, norm2."""
    attn = _child(compiled, "attn", ATTENTION_PARAMS)
    ffn = _child(compiled, "ffn", FFN_PARAMS)
    if attn is None or ffn is None:
        missing = " and ".join(n for n, m in (("attn", attn), ("ffn", ffn)) if m is None)
        raise NcdError(f"the compiled module has no {missing} instance with the expected parameters",
                       hint="specs/transformer_encoder.ncd names its instances attn (Wq … bo), "
                            "ffn (W1, b1, W2, b2), norm1 and norm2 (gamma, beta)")
    _load_mha_into(attn, "attn", reference.self_attn)
    w1 = _own_params(ffn)["W1"]
    _check_sizes("feed-forward", {"D": w1.shape[0], "F": w1.shape[1]},
                 {"D": reference.linear1.in_features, "F": reference.linear1.out_features})
    lin1, lin2 = reference.linear1, reference.linear2
    _copy(ffn, "ffn", "W1", lin1.weight.detach().t(), "linear1.weight")
    _copy(ffn, "ffn", "b1", None if lin1.bias is None else lin1.bias.detach(), "linear1.bias")
    _copy(ffn, "ffn", "W2", lin2.weight.detach().t(), "linear2.weight")
    _copy(ffn, "ffn", "b2", None if lin2.bias is None else lin2.bias.detach(), "linear2.bias")
    for name in ("norm1", "norm2"):
        ref_norm = getattr(reference, name)
        ours = _child(compiled, name, NORM_PARAMS)
        if isinstance(ref_norm, nn.Identity):
            if ours is not None:
                raise NcdError(f"the reference's {name} is nn.Identity but the spec has a LayerNorm {name}",
                               hint="use specs/transformer_single_layer.ncd for a layer without norms")
            continue
        if not isinstance(ref_norm, nn.LayerNorm):
            raise NcdError(f"the reference's {name} is {type(ref_norm).__name__}; only nn.LayerNorm or "
                           "nn.Identity map onto the specs")
        if ours is None:
            raise NcdError(f"the reference has a LayerNorm {name} but the compiled module has no {name} "
                           "instance with gamma, beta",
                           hint="use specs/transformer_encoder.ncd (or _preln) for a layer with norms")
        _copy(ours, name, "gamma", ref_norm.weight, f"{name}.weight")
        _copy(ours, name, "beta", ref_norm.bias, f"{name}.bias")
    _probe(compiled, reference, lambda r, x: r(x), reference.self_attn.batch_first, reference.linear1.in_features,
           f"TransformerEncoderLayer(norm_first={reference.norm_first}, activation={_activation_name(reference)}, "
           f"norm eps={getattr(reference.norm1, 'eps', None)})")


# ------------------------------------------------------------------------------------------ probe
def _probe(compiled: nn.Module, reference: nn.Module, run_ref: Callable, batch_first: bool, d: int,
           what: str) -> None:
    """Both modules on one random input in float64: the weight copy must make them agree."""
    device = next(compiled.parameters()).device
    ours, theirs = copy.deepcopy(compiled).double().eval(), copy.deepcopy(reference).double()
    # Training mode with every dropout off: no sampling, and no eval-only fast path (which also
    # rejects nn.Identity norms).
    theirs.train()
    for module in theirs.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if isinstance(module, nn.MultiheadAttention):
            module.dropout = 0.0
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(2, 5, d, generator=gen, dtype=torch.float64).to(device)
    with torch.no_grad():
        got = ours(x)
        want = run_ref(theirs, x if batch_first else x.transpose(0, 1))
        want = want if batch_first else want.transpose(0, 1)
    if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-7, atol=1e-9):
        err = (got - want).abs().max().item() if got.shape == want.shape else float("nan")
        raise NcdError(f"after copying the weights the compiled spec does not compute what the reference "
                       f"{what} computes (max difference {err:.3g} on a probe input)",
                       hint="check the spec's structure against the reference: norm placement (norm_first), "
                            "activation, LayerNorm eps")


HANDLERS: dict = {
    nn.MultiheadAttention: load_multihead_attention,
    nn.TransformerEncoderLayer: load_transformer_encoder_layer,
}

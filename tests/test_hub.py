"""ncd.save / ncd.load_pretrained: spec, sizes, safetensors weights and a model card in a local
folder, in huggingface_hub's ModelHubMixin layout. No network: every test uses tmp_path."""
from __future__ import annotations

import json

import pytest
import torch

import ncd

st = pytest.importorskip("safetensors.torch", reason="the ncd[hub] extra (safetensors) is not installed")


def trained(spec: str, **sizes):
    torch.manual_seed(0)
    model = ncd.load(spec, **sizes)
    with torch.no_grad():
        for p in model.parameters():  # weights no fresh load could reproduce
            p.add_(torch.randn_like(p))
    return model


@pytest.mark.parametrize("spec, sizes, entry, x", [
    ("transformer_encoder", {"D": 32, "H": 4, "F": 64}, None, (2, 7, 32)),
    ("gru", {"D": 16}, "GRU2", (3, 5, 32)),
])
def test_save_and_load_round_trip(tmp_path, spec, sizes, entry, x):
    model = trained(spec, **sizes) if entry is None else None
    if model is None:
        torch.manual_seed(0)
        model = ncd.load(spec, block=entry, **sizes)
    ncd.save(model, tmp_path / "m")
    files = {p.name for p in (tmp_path / "m").iterdir()}
    assert {"spec.ncd", "config.json", "model.safetensors", "README.md"} <= files
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["sizes"] == sizes and config["entry"] == (entry or "EncoderLayer")
    saved = st.load_file(str(tmp_path / "m" / "model.safetensors"))
    assert saved.keys() == model.state_dict().keys()
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    torch.manual_seed(1)
    again = ncd.load_pretrained(tmp_path / "m")
    inp = torch.randn(*x)
    torch.testing.assert_close(again(inp), model(inp), rtol=0, atol=0)


def test_model_card_has_metadata_diagram_and_costs(tmp_path):
    hub = pytest.importorskip("huggingface_hub", reason="the ncd[hub] extra (huggingface_hub) is not installed")
    model = trained("transformer_encoder", D=32, H=4, F=64)
    ncd.save(model, tmp_path)
    card = hub.ModelCard.load(tmp_path / "README.md")
    assert card.data.library_name == "ncd" and "ncd" in card.data.tags
    text = card.text
    assert "## Diagram" in text and "## Cost" in text
    reference = sum(p.numel() for p in torch.nn.TransformerEncoderLayer(32, 4, 64).parameters())
    assert f"{reference:,} parameters" in text and "| total |" in text and "| D | 32 |" in text
    import shutil

    if shutil.which("dot"):
        assert "(diagram.svg)" in text and "</svg>" in (tmp_path / "diagram.svg").read_text()
    else:
        assert "```dot" in text


def test_model_card_costs_put_the_bound_sizes_in_and_keep_the_formula(tmp_path):
    """D = 32 bound, B and T free: the feed-forward's weight FLOPs 4·B·T·D·F read 8192·B·T on the
    card (4·32·64), beside the symbolic formula."""
    from ncd.card import card_text

    model = ncd.load("transformer_encoder", D=32, H=4, F=64)
    text = card_text(model, {"spec": "s", "entry": "e", "ncd_version": "0"}, None)
    ffn = next(line for line in text.splitlines() if line.startswith("| EncoderLayer/ffn |"))
    flops = ffn.split("|")[2]
    assert f"{4 * 32 * 64 + 2 * 64 + 32}·B·T" in flops and "(4·B·T·D·F" in flops, ffn


def test_model_hub_mixin_save_and_from_pretrained(tmp_path):
    pytest.importorskip("huggingface_hub", reason="the ncd[hub] extra (huggingface_hub) is not installed")
    from huggingface_hub import ModelHubMixin

    from ncd.hub import NcdPretrained

    assert issubclass(NcdPretrained, ModelHubMixin)
    model = trained("mlp_relu")
    NcdPretrained(model).save_pretrained(tmp_path)
    loaded = NcdPretrained.from_pretrained(str(tmp_path)).module
    x = torch.randn(4, model._ncd_program.inputs[0][3][-1])
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_load_pretrained_refuses_what_ncd_did_not_write(tmp_path):
    with pytest.raises(ncd.NcdError, match="no config.json"):
        ncd.load_pretrained(tmp_path)
    ncd.save(trained("mlp_relu"), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "sizes": {"D": "__import__('os')"}}))
    with pytest.raises(ncd.NcdError, match="integer sizes"):
        ncd.load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(config))
    weights = st.load_file(str(tmp_path / "model.safetensors"))
    first = next(iter(weights))
    weights[first] = torch.zeros(3, 3)
    st.save_file(weights, str(tmp_path / "model.safetensors"))
    with pytest.raises(ncd.NcdError, match="do not fit the spec"):
        ncd.load_pretrained(tmp_path)


def test_save_needs_a_whole_loaded_model():
    model = ncd.load("transformer_encoder", D=32, H=4, F=64)
    with pytest.raises(ncd.NcdError, match="whole model"):
        ncd.save(model.attn, "/nonexistent")

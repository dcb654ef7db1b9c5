"""Hugging Face exports: the ``config.json`` fields that change the forward but are not in the
weights (``layer_norm_eps``, ``hidden_act``, DINOv3's ``rope_theta``) are used to build the
network. Reference: ``transformers``' own forward on the same weights."""

import json
import warnings

import pytest
import torch

from dinoeval.errors import DinoevalError
from dinoeval.models import load_backbone
from tests.models import family_ckpts as fc

pytest.importorskip("transformers")
warnings.filterwarnings("ignore", module="transformers")
TOL = 1e-5


def _model(case: str, **cfg):
    if case == "vit":
        return fc.vit_hf_model(**cfg), (16, 16)
    if case.startswith("dinov2"):
        return fc.dinov2_hf_model(registers=2 if "registers" in case else 0,
                                  swiglu="swiglu" in case, **cfg), (16, 16)
    return fc.dinov3_hf_model(use_gated_mlp="gated" in case, **cfg), (32, 48)


def _diff(folder, model, size) -> float:
    bb = load_backbone(str(folder), img_size=size)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        ours, ref = bb.tokens(x)[0], model(pixel_values=x).last_hidden_state
    return float((ours - ref).abs().max())


@pytest.mark.parametrize("case", ["vit", "dinov2", "dinov2-registers", "dinov3"])
def test_layer_norm_eps_from_config_json(tmp_path, case):
    model, size = _model(case, layer_norm_eps=0.05)  # far from every default: it shows
    folder = fc.save_hf_export(tmp_path / "export", model, legacy=case != "dinov3")
    assert _diff(folder, model, size) < TOL
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["layer_norm_eps"]  # the eps ignored: the family default is used, and it differs
    (folder / "config.json").write_text(json.dumps(cfg))
    assert _diff(folder, model, size) > 1e-3


@pytest.mark.parametrize("case,cfg", [
    ("vit", {"hidden_act": "gelu_new"}), ("dinov2", {"hidden_act": "quick_gelu"}),
    ("dinov2-registers", {"hidden_act": "relu"}),
    ("dinov2-swiglu", {"hidden_act": "relu"}),  # transformers' SwiGLU is SiLU whatever it says
    ("dinov3", {"hidden_act": "silu"}), ("dinov3-gated", {"hidden_act": "silu"}),
    ("dinov3-gated", {"hidden_act": "gelu"}), ("dinov3", {"rope_theta": 37.0}),
])
def test_activation_and_rope_base_from_config_json(tmp_path, case, cfg):
    model, size = _model(case, **cfg)
    folder = fc.save_hf_export(tmp_path / "export", model, legacy=not case.startswith("dinov3"))
    assert _diff(folder, model, size) < TOL


def test_unknown_activation_is_named(tmp_path):
    model, _ = _model("dinov2")
    folder = fc.save_hf_export(tmp_path / "export", model, legacy=True)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["hidden_act"] = "mish"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(DinoevalError, match="hidden_act 'mish' is not supported"):
        load_backbone(str(folder))


def test_dinov3_swiglu_official_layout_equals_transformers(tmp_path):
    """DINOv3 ViT-H+/7B layout (SwiGLU ``w1``/``w2``/``w3``): was read as a packed SwiGLU."""
    model, size = _model("dinov3-gated", hidden_act="silu")
    sd = fc.dinov3_official(model)
    assert "blocks.0.mlp.w1.weight" in sd and "blocks.0.mlp.w3.weight" in sd
    torch.save(sd, tmp_path / "dinov3_vith16plus.pth")
    bb = load_backbone(str(tmp_path / "dinov3_vith16plus.pth"))
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        diff = float((bb.tokens(x)[0] - model(pixel_values=x).last_hidden_state).abs().max())
    assert diff < TOL, diff

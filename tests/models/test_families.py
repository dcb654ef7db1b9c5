"""Every checkpoint family, read exactly: features equal to an independent reference forward.

References: ``transformers`` (DINOv2 with/without registers and SwiGLU, DINOv3, DINO v1
``ViTModel``), timm (DINO v1 ViT, XCiT), torchvision (ResNet-50 layout). Tiny models (width 64,
depth 2) in each family's exact key layout, built in :mod:`tests.models.family_ckpts`.
"""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dinoeval.errors import DinoevalError
from dinoeval.features import extract_features
from dinoeval.models import load_backbone, read_checkpoint
from dinoeval.models.dinov3 import rope_periods
from dinoeval.models.registry import family_names
from tests.conftest import make_source
from tests.models import family_ckpts as fc

pytest.importorskip("transformers")
warnings.filterwarnings("ignore", module="transformers")

TOL = 1e-5


def _tokens(bb, x):
    with torch.no_grad():
        return bb.tokens(x)[0]


def _close(ours: torch.Tensor, ref: torch.Tensor) -> float:
    assert ours.shape == ref.shape
    diff = float((ours - ref).abs().max())
    assert diff < TOL, diff
    return diff


@pytest.mark.parametrize("registers,swiglu", [(0, False), (2, False), (0, True)],
                         ids=["dinov2", "dinov2-registers", "dinov2-giant-swiglu"])
def test_dinov2_official_layout_equals_transformers(tmp_path, registers, swiglu):
    m = fc.dinov2_hf_model(registers=registers, swiglu=swiglu)
    torch.save(fc.dinov2_official(m), tmp_path / "dinov2.pth")
    bb = load_backbone(str(tmp_path / "dinov2.pth"), img_size=16, num_heads=2)
    assert bb.family == "dinov2" and bb.num_prefix_tokens == 1 + registers
    x = torch.randn(2, 3, 16, 16)
    _close(_tokens(bb, x), fc.hf_reference(m)(x))


@pytest.mark.parametrize("case", ["vit", "dinov2", "dinov2-registers", "dinov2-swiglu",
                                  "dinov3", "dinov3-nobias"])
@pytest.mark.parametrize("legacy", [True, False], ids=["hub-names", "transformers5-names"])
def test_hugging_face_exports_equal_transformers_forward(tmp_path, case, legacy):
    if case == "vit":
        m, size = fc.vit_hf_model(), (16, 16)
    elif case.startswith("dinov2"):
        m = fc.dinov2_hf_model(registers=2 if "registers" in case else 0,
                               swiglu="swiglu" in case)
        size = (16, 16)
    else:
        m, size = fc.dinov3_hf_model(qkv_bias=case == "dinov3"), (32, 48)
        legacy = False  # the hub's DINOv3 export uses the transformers 5 names
    folder = fc.save_hf_export(tmp_path / "export", m, legacy=legacy)
    bb = load_backbone(str(folder), img_size=size)
    assert "hf-" in bb.meta["format"]
    assert bb.family == {"vit": "dino"}.get(case, case.split("-")[0])
    x = torch.randn(2, 3, *size)
    _close(_tokens(bb, x), fc.hf_reference(m)(x))


def test_dinov3_official_layout_equals_transformers_non_square(tmp_path):
    m = fc.dinov3_hf_model()
    sd = fc.dinov3_official(m)
    assert {"storage_tokens", "rope_embed.periods", "blocks.0.attn.qkv.bias_mask",
            "blocks.0.ls1.gamma"} <= set(sd) and "pos_embed" not in sd
    torch.save(sd, tmp_path / "dinov3_vits16.pth")
    bb = load_backbone(str(tmp_path / "dinov3_vits16.pth"))
    assert bb.img_size == (224, 224) and any("224" in n for n in bb.notes)  # evaluation size
    assert bb.family == "dinov3" and bb.num_prefix_tokens == 5
    for size in ((32, 48), (64, 32)):
        x = torch.randn(2, 3, *size)
        _close(_tokens(bb, x), fc.hf_reference(m)(x))
    # Attention with RoPE applied, storage tokens left out: transformers' eager attention row 0.
    m.config._attn_implementation = "eager"
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        ref = m(pixel_values=x, output_attentions=True).attentions[-1][:, :, 0, 5:]
    ours = bb.cls_attention(x, -1)
    assert ours.shape == (2, 2, 2, 3)
    _close(ours.flatten(2), ref)


def test_dinov3_refuses_foreign_rope_periods(tmp_path):
    sd = fc.dinov3_official(fc.dinov3_hf_model())
    sd["rope_embed.periods"] = sd["rope_embed.periods"] * 2
    torch.save(sd, tmp_path / "v3.pth")
    with pytest.raises(DinoevalError, match="periods"):
        load_backbone(str(tmp_path / "v3.pth"))
    assert torch.allclose(rope_periods(64)[:3].float(), torch.tensor([1.0, 100 ** 0.0625,
                                                                      100 ** 0.125]))


def test_timm_dinov3_name_builds():
    bb = load_backbone("timm:vit_small_patch16_dinov3", img_size=32)
    assert bb.family == "dinov3" and bb.name == "ViT-S/16-dinov3" and bb.num_prefix_tokens == 5
    x = torch.randn(1, 3, 32, 32)
    assert _tokens(bb, x).shape == (1, 5 + 4, 384)
    assert bb.cls_attention(x).shape == (1, 6, 2, 2)


def test_dinov2_training_checkpoint_teacher_student_head_center(tmp_path):
    teacher, student = fc.dinov2_hf_model(seed=0), fc.dinov2_hf_model(seed=1)
    model = {f"teacher.backbone.{k}": v for k, v in fc.dinov2_official(teacher).items()}
    model |= {f"student.backbone.{k}": v for k, v in fc.dinov2_official(student).items()}
    head = {"mlp.0.weight": torch.randn(32, 64), "mlp.0.bias": torch.zeros(32),
            "mlp.2.weight": torch.randn(32, 32), "mlp.2.bias": torch.zeros(32),
            "mlp.4.weight": torch.randn(16, 32), "mlp.4.bias": torch.zeros(16),
            "last_layer.weight_g": torch.ones(48, 1), "last_layer.weight_v": torch.randn(48, 16)}
    model |= {f"teacher.dino_head.{k}": v for k, v in head.items()}
    model |= {"teacher.ibot_head.mlp.0.weight": torch.randn(8, 64),
              "dino_loss.center": torch.full((1, 48), 0.25)}
    p = tmp_path / "model_final.rank_0.pth"
    torch.save({"model": model, "iteration": 1249, "optimizer": {"state": {}}}, p)
    x = torch.randn(2, 3, 16, 16)
    bb = load_backbone(str(p), img_size=16, num_heads=2)
    assert bb.meta["format"] == "dinov2-train" and bb.meta["iteration"] == 1249
    assert bb.meta["networks"] == ["student", "teacher"]
    assert bb.head is not None and bb.center.shape == (1, 48)
    assert any("ibot_head" in n for n in bb.notes)
    _close(_tokens(bb, x), fc.hf_reference(teacher)(x))
    st = load_backbone(str(p), img_size=16, num_heads=2, checkpoint_key="student")
    _close(_tokens(st, x), fc.hf_reference(student)(x))


def test_xcit_official_layout_equals_timm(tmp_path):
    m = fc.xcit_model()
    torch.save(fc.xcit_official(m), tmp_path / "dino_xcit.pth")
    bb = load_backbone(str(tmp_path / "dino_xcit.pth"), img_size=32)
    assert bb.family == "xcit" and bb.patch_size == 8
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        _close(_tokens(bb, x), m.forward_features(x))
    with pytest.raises(DinoevalError, match="last block only"):
        bb.tokens(x, 4)


def _timm_class_attention(m, x, block):
    """Reference: the softmax of timm's own ``ClassAttn`` caught at its ``attn_drop``."""
    attn = m.cls_attn_blocks[block].attn
    caught = []
    handle = attn.attn_drop.register_forward_hook(lambda _m, _i, out: caught.append(out))
    fused, attn.fused_attn = attn.fused_attn, False
    try:
        with torch.no_grad():
            m.forward_features(x)
    finally:
        handle.remove()
        attn.fused_attn = fused
    return caught[0][:, :, 0, 1:]  # (B, heads, patches): CLS row over the patch keys


@pytest.mark.parametrize("size", [(32, 32), (32, 48)])
def test_xcit_class_attention_maps_equal_timms_softmax(tmp_path, size):
    m = fc.xcit_model(cls_attn_layers=2)
    torch.save(fc.xcit_official(m), tmp_path / "dino_xcit.pth")
    bb = load_backbone(str(tmp_path / "dino_xcit.pth"))
    assert bb.depth == 2  # --block counts the class-attention blocks
    x = torch.randn(2, 3, *size)
    for block in (-1, 0):
        ours = bb.cls_attention(x, block)
        assert ours.shape == (2, 4, size[0] // 8, size[1] // 8)
        ref = _timm_class_attention(m, x, block)
        _close(ours.flatten(2), ref)
        assert float(ours.sum((-2, -1)).max()) < 1.0  # the CLS key's share is left out
    with pytest.raises(DinoevalError, match="2 class-attention blocks"):
        bb.cls_attention(x, 2)


def test_resnet50_layout_gives_pooled_2048_features(tmp_path):
    m = fc.resnet_model()
    sd = {**m.state_dict(), "fc.weight": torch.zeros(10, 2048), "fc.bias": torch.zeros(10)}
    torch.save(sd, tmp_path / "dino_resnet50_pretrain.pth")
    bb = load_backbone(str(tmp_path / "dino_resnet50_pretrain.pth"), img_size=64)
    assert bb.family == "resnet" and bb.arch.embed_dim == 2048
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        _close(_tokens(bb, x)[:, 0], m(x))
    with pytest.raises(DinoevalError, match="no self-attention"):
        bb.cls_attention(x)
    assert load_backbone(str(tmp_path / "dino_resnet50_pretrain.pth")).img_size == (224, 224)


def test_dino_v1_official_backbone_equals_timm(tmp_path):
    m = fc.timm_vit()
    torch.save(m.state_dict(), tmp_path / "dino_deitsmall4.pth")
    bb = load_backbone(str(tmp_path / "dino_deitsmall4.pth"))
    assert bb.family == "dino" and bb.img_size == (16, 16)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        _close(_tokens(bb, x), m.forward_features(x))


# --- position tables: each family's official rule ------------------------------------------

def _official_patch_pos(pos_1ND, G, g, *, offset, antialias):
    """The official ``interpolate_pos_encoding`` (DINO v1 / DINOv2), written out."""
    if g == (G, G):
        return pos_1ND
    grid = pos_1ND.reshape(1, G, G, -1).permute(0, 3, 1, 2)
    kw = ({"scale_factor": ((g[0] + offset) / G, (g[1] + offset) / G)} if offset
          else {"size": g})
    out = F.interpolate(grid, mode="bicubic", antialias=antialias, **kw)
    assert out.shape[-2:] == g
    return out.permute(0, 2, 3, 1).reshape(1, -1, pos_1ND.shape[-1])


def _input_tokens(bb, size):
    x = torch.randn(1, 3, *size)
    model = bb.model
    with torch.no_grad():
        return model._pos_embed(model.patch_embed(x)), model.patch_embed(x).flatten(1, 2)


@pytest.mark.parametrize("size", [(16, 16), (32, 32), (24, 40), (8, 12), (20, 16)])
@pytest.mark.parametrize("kind", ["dino", "dinov2", "dinov2-registers"])
def test_position_tables_follow_each_official_rule(tmp_path, size, kind):
    g, G = (size[0] // 4, size[1] // 4), 4
    if kind == "dino":
        m = fc.timm_vit()
        torch.save(m.state_dict(), tmp_path / "c.pth")
        pos_cls, patch_pos = m.pos_embed[:, :1], m.pos_embed[:, 1:]
        cls, regs = m.cls_token, None
    else:
        hf = fc.dinov2_hf_model(registers=2 if kind.endswith("registers") else 0)
        sd = fc.dinov2_official(hf)
        torch.save(sd, tmp_path / "c.pth")
        pos_cls, patch_pos = sd["pos_embed"][:, :1], sd["pos_embed"][:, 1:]
        cls, regs = sd["cls_token"], sd.get("register_tokens")
    bb = load_backbone(str(tmp_path / "c.pth"), img_size=size, num_heads=1)
    got, patches = _input_tokens(bb, size)
    rule = {"offset": 0.0, "antialias": True} if regs is not None else {"offset": 0.1,
                                                                        "antialias": False}
    want_patch = patches + _official_patch_pos(patch_pos, G, g, **rule)
    prefix = [cls + pos_cls] + ([regs] if regs is not None else [])
    want = torch.cat([*prefix, want_patch], dim=1)
    diff = float((got - want).abs().max())
    assert diff < 1e-6, diff
    if size != (16, 16):  # timm's default (anti-aliased, by size) would differ: the test can fail
        from timm.layers import resample_abs_pos_embed

        timm_pos = resample_abs_pos_embed(patch_pos, list(g), [G, G], num_prefix_tokens=0)
        if regs is None:
            assert not torch.allclose(timm_pos, _official_patch_pos(patch_pos, G, g, **rule),
                                      atol=1e-4)


def test_dinov2_defaults_to_224_and_img_size_overrides(tmp_path):
    torch.save(fc.dinov2_official(fc.dinov2_hf_model()), tmp_path / "v2.pth")
    bb = load_backbone(str(tmp_path / "v2.pth"), num_heads=2)
    assert bb.img_size == (224, 224)
    assert any("224x224" in n and "evaluation resolution" in n for n in bb.notes)
    assert load_backbone(str(tmp_path / "v2.pth"), img_size=(16, 24)).img_size == (16, 24)
    with pytest.raises(DinoevalError, match="multiple of the patch size"):
        load_backbone(str(tmp_path / "v2.pth"), img_size=18)


# --- broken files, the allow-list, odd heads and one channel -------------------------------

@pytest.mark.parametrize("content,match", [
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 88000000\n",
     r"Git LFS pointer \(\d+ bytes\), not the weights: run `git lfs pull`"),
    (b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head></html>",
     r"an HTML page .* download it again"),
])
def test_broken_downloads_are_named(tmp_path, content, match):
    p = tmp_path / "dinov2_vits14.pth"
    p.write_bytes(content)
    with pytest.raises(DinoevalError, match=match):
        load_backbone(str(p))


def test_truncated_zip_and_folder_without_checkpoint(tmp_path, tiny_vit):
    p = tmp_path / "full.pth"
    torch.save(tiny_vit.state_dict(), p)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(DinoevalError, match=r"truncated zip .* download or copy it again"):
        load_backbone(str(cut))
    (tmp_path / "run").mkdir()
    with pytest.raises(DinoevalError, match="directory without a checkpoint"):
        load_backbone(str(tmp_path / "run"))


def test_numpy_scalars_are_allowed_and_arrays_still_refused(tmp_path, tiny_vit):
    from dinoeval.models import UnsafeCheckpointError

    p = tmp_path / "ok.pth"
    torch.save({"model": tiny_vit.state_dict(), "best_acc": np.float64(77.3),
                "epoch": np.int64(99), "dtype": np.dtype("float32")}, p)
    assert load_backbone(str(p)).family == "dino"
    bad = tmp_path / "array.pth"
    torch.save({"model": tiny_vit.state_dict(), "acc_curve": np.zeros(3)}, bad)
    with pytest.raises(UnsafeCheckpointError, match="could run code"):
        read_checkpoint(bad)


def test_head_with_one_layer_and_a_broken_head(tmp_path, tiny_vit):
    sd = {f"backbone.{k}": v for k, v in tiny_vit.state_dict().items()}
    one = {"head.mlp.weight": torch.randn(16, 192), "head.mlp.bias": torch.zeros(16),
           "head.last_layer.weight_g": torch.ones(32, 1),
           "head.last_layer.weight_v": torch.randn(32, 16)}
    torch.save({"teacher": {**sd, **one}, "student": {**sd, **one}}, tmp_path / "one.pth")
    bb = load_backbone(str(tmp_path / "one.pth"))
    assert bb.head is not None and bb.head(torch.randn(2, 192)).shape == (2, 32)
    junk = {"head.mlp.weight": torch.randn(16, 192)}  # no last layer: not rebuildable
    torch.save({"teacher": {**sd, **junk}}, tmp_path / "junk.pth")
    bb = load_backbone(str(tmp_path / "junk.pth"))
    assert bb.head is None and any("head could not be rebuilt" in n for n in bb.notes)


def test_one_channel_vit_extracts_from_gray_and_rgb_sources(tmp_path):
    m = fc.timm_vit(in_chans=1)
    torch.save(m.state_dict(), tmp_path / "gray.pth")
    bb = load_backbone(str(tmp_path / "gray.pth"))
    assert bb.in_chans == 1
    for rgb in (False, True):
        src = make_source(n=4, size=16, rgb=rgb)
        fs = extract_features(bb, src, kind="cls")
        raw = torch.from_numpy(src.images.astype(np.float32) / 255.0)
        gray = raw if raw.ndim == 3 else raw.mean(-1)
        x = (gray[:, None] - sum(bb.mean) / 3) / (sum(bb.std) / 3)
        with torch.no_grad():
            ref = m.forward_features(x)[:, 0].numpy()
        np.testing.assert_allclose(fs.features, ref, atol=1e-5)


def test_errors_name_the_registered_families(tmp_path):
    torch.save({"conv_w": torch.zeros(3, 3)}, tmp_path / "odd.pth")
    with pytest.raises(DinoevalError, match="readable families: dinov3, dinoeval, dinov2"):
        load_backbone(str(tmp_path / "odd.pth"))
    assert "resnet" in family_names() and "xcit" in family_names()

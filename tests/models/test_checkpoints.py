"""Every supported checkpoint format loads back to identical features."""

import argparse
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from dinoeval.errors import DinoevalError
from dinoeval.features import extract_features
from dinoeval.models import DINOHead, UnsafeCheckpointError, load_backbone, read_checkpoint
from dinoeval.models.vit import ViTArch, build_vit, infer_arch
from tests.conftest import make_source


def cls_of(model, x):
    with torch.no_grad():
        return model.forward_features(x)[:, 0]


@pytest.fixture
def images():
    return torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def _check_same(path, reference, images, **kw):
    bb = load_backbone(str(path), **kw)
    torch.testing.assert_close(cls_of(bb.model, images), cls_of(reference, images))
    return bb


def test_official_backbone_state_dict(tmp_path, tiny_vit, images):
    p = tmp_path / "dino_deittiny4_pretrain.pth"
    torch.save(tiny_vit.state_dict(), p)
    bb = _check_same(p, tiny_vit, images)
    assert (bb.arch.embed_dim, bb.arch.num_heads, bb.arch.depth, bb.arch.patch_size) == (192, 3, 2, 4)
    assert bb.arch.img_size == (16, 16) and bb.meta["format"] == "state_dict"


def test_full_training_checkpoint_reads_teacher_by_default(tmp_path, tiny_vit, tiny_arch, images):
    student = build_vit(tiny_arch).eval()
    head = DINOHead(192, 32, hidden_dim=48, bottleneck_dim=16)
    ckpt = {
        "student": {**{f"module.backbone.{k}": v for k, v in student.state_dict().items()},
                    **{f"module.head.{k}": v for k, v in head.state_dict().items()}},
        "teacher": {**{f"backbone.{k}": v for k, v in tiny_vit.state_dict().items()},
                    **{f"head.{k}": v for k, v in head.state_dict().items()}},
        "optimizer": {"state": {}, "param_groups": []},
        "epoch": 7,
        "dino_loss": {"center": torch.full((1, 32), 0.5)},
        "args": argparse.Namespace(arch="vit_tiny", patch_size=4, out_dim=32, lr=0.0005),
    }
    p = tmp_path / "checkpoint.pth"
    torch.save(ckpt, p)
    bb = _check_same(p, tiny_vit, images)
    assert bb.meta["epoch"] == 7 and bb.meta["format"] == "dino-train"
    assert bb.head is not None and bb.center.shape == (1, 32)
    assert any("ignored" in n for n in bb.notes)
    x = torch.randn(2, 192)
    torch.testing.assert_close(bb.head(x), head(x))
    _check_same(p, student, images, checkpoint_key="student")
    with pytest.raises(DinoevalError, match="no 'ema'"):
        load_backbone(str(p), checkpoint_key="ema")


def test_timm_wrapped_and_safetensors(tmp_path, tiny_vit, images):
    p = tmp_path / "timm.pth"
    torch.save({"model": {f"module.{k}": v for k, v in tiny_vit.state_dict().items()}}, p)
    _check_same(p, tiny_vit, images)
    s = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_vit.state_dict().items()}, str(s))
    bb = _check_same(s, tiny_vit, images)
    assert bb.meta["format"] == "safetensors"


def test_dinov2_with_registers_layerscale_and_chunks(tmp_path, images):
    # The reference is timm's own DINOv2 layout (no class position, registers without position).
    arch = ViTArch(embed_dim=64, depth=4, num_heads=1, patch_size=4, img_size=(16, 16),
                   reg_tokens=2, layer_scale=True, pos_embed_has_cls=False)
    torch.manual_seed(0)
    ref = build_vit(arch).eval()
    with torch.no_grad():
        for blk in ref.blocks:
            blk.ls1.gamma.normal_(0, 0.3)
            blk.ls2.gamma.normal_(0, 0.3)
        ref.reg_token.normal_()
        ref.pos_embed.normal_(0, 0.5)
    sd = ref.state_dict()
    # Write it the way the official DINOv2 code does: pos_embed includes the class position,
    # register_tokens, mask_token, blocks chunked as blocks.<chunk>.<i>.
    p0 = torch.randn(1, 1, 64) * 0.1
    official = {}
    for k, v in sd.items():
        if k.startswith("blocks."):
            i = int(k.split(".")[1])
            k = f"blocks.{i // 2}.{i}." + k.split(".", 2)[2]
        official[k] = v
    official["pos_embed"] = torch.cat([p0, sd["pos_embed"]], 1)
    official["cls_token"] = sd["cls_token"] - p0
    official["register_tokens"] = official.pop("reg_token")
    official["mask_token"] = torch.zeros(1, 64)
    p = tmp_path / "dinov2_vits4_reg.pth"
    torch.save(official, p)
    bb = _check_same(p, ref, images)
    assert bb.arch.reg_tokens == 2 and bb.arch.layer_scale and bb.num_prefix_tokens == 3


def test_pos_embed_is_interpolated_for_other_input_sizes(tmp_path, tiny_vit):
    p = tmp_path / "b.pth"
    torch.save(tiny_vit.state_dict(), p)
    bb = load_backbone(str(p), img_size=32)
    # The native table is kept and resampled per input by the family's rule.
    assert bb.model.pos_embed.shape == (1, 1 + 16, 192) and bb.img_size == (32, 32)
    fs = extract_features(bb, make_source(n=4, size=32))
    assert fs.features.shape == (4, 192)


def test_missing_keys_are_listed(tmp_path, tiny_vit):
    sd = tiny_vit.state_dict()
    sd.pop("blocks.1.mlp.fc2.weight")
    p = tmp_path / "broken.pth"
    torch.save(sd, p)
    with pytest.raises(DinoevalError, match=r"lacks 1 backbone keys: blocks\.1\.mlp\.fc2\.weight"):
        load_backbone(str(p))


def test_unexpected_keys_are_noted(tmp_path, tiny_vit):
    sd = {**tiny_vit.state_dict(), "fc_norm.weight": torch.ones(192), "classifier.weight":
          torch.ones(10, 192)}
    p = tmp_path / "extra.pth"
    torch.save(sd, p)
    bb = load_backbone(str(p))
    assert any("classifier.weight" in n for n in bb.notes)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED_MARKER",))


def test_pickle_that_runs_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "evil.pth"
    torch.save({"cls_token": torch.zeros(1), "payload": _Evil()}, p)
    with pytest.raises(UnsafeCheckpointError, match="could run code"):
        read_checkpoint(p)
    assert not (tmp_path / "PWNED_MARKER").exists()


def test_not_a_checkpoint_and_missing_file(tmp_path):
    with pytest.raises(DinoevalError, match="not found"):
        load_backbone(str(tmp_path / "nope.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a zip")
    with pytest.raises(DinoevalError, match="cannot be read"):
        load_backbone(str(junk))
    torch.save({"weights": [1, 2, 3]}, tmp_path / "list.pth")
    with pytest.raises(DinoevalError, match="could not find a tensor state dict"):
        load_backbone(str(tmp_path / "list.pth"))


def test_heads_come_from_width_table_and_can_be_overridden():
    sd = build_vit(ViTArch(embed_dim=384, depth=1, num_heads=6, patch_size=16,
                           img_size=(32, 32))).state_dict()
    assert infer_arch(sd).num_heads == 6
    assert infer_arch(sd, num_heads=12).num_heads == 12


def test_random_and_pixel_backbones(tiny_vit, tmp_path):
    a = load_backbone("random:vit_tiny_p4_28", seed=0)
    b = load_backbone("random:vit_tiny_p4_28", seed=0)
    x = torch.randn(1, 3, 28, 28)
    torch.testing.assert_close(cls_of(a.model, x), cls_of(b.model, x))
    p = tmp_path / "b.pth"
    torch.save(tiny_vit.state_dict(), p)
    r = load_backbone(f"random:{p}")
    assert r.arch.embed_dim == 192 and r.content_hash.startswith("random-")
    src = make_source(n=3, size=8, rgb=False)
    px = extract_features(load_backbone("pixels"), src)
    assert px.features.shape == (3, 64)  # a grayscale source: one channel
    expected = src.images.reshape(3, -1) / 255.0
    np.testing.assert_allclose(px.features, expected, rtol=1e-6)
    with pytest.raises(DinoevalError, match="unknown architecture"):
        load_backbone("random:resnet50")

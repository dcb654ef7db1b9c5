"""The feature-cache key comes from the network that was built, not from option names."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from dinoeval.features import FeatureCache, cache_key, extract_features
from dinoeval.features.identity import network_identity, weights_hash
from dinoeval.models import ViTArch, build_vit, load_backbone
from tests.conftest import make_source


@pytest.fixture
def train_ckpt(tmp_path):
    """A DINO training checkpoint whose teacher and student differ (width 48, depth 1)."""
    arch = ViTArch(embed_dim=48, depth=1, num_heads=3, patch_size=4, img_size=(16, 16))
    torch.manual_seed(0)
    teacher, student = build_vit(arch), build_vit(arch)
    ckpt = {"teacher": {f"backbone.{k}": v for k, v in teacher.state_dict().items()},
            "student": {f"module.backbone.{k}": v for k, v in student.state_dict().items()},
            "epoch": 1, "args": argparse.Namespace(arch="vit_tiny", patch_size=4)}
    p = tmp_path / "checkpoint.pth"
    torch.save(ckpt, p)
    return str(p)


def _key(backbone, src, **kw) -> str:
    return cache_key(extract_features(backbone, src, **kw).meta)


def test_teacher_and_student_of_one_file_get_different_keys_and_features(train_ckpt, tmp_path):
    src = make_source(n=8, size=16)
    teacher = load_backbone(train_ckpt, checkpoint_key="teacher")
    student = load_backbone(train_ckpt, checkpoint_key="student")
    assert teacher.content_hash == student.content_hash  # the same file...
    assert network_identity(teacher)["weights"] != network_identity(student)["weights"]
    cache = str(tmp_path / "cache")
    ft = extract_features(teacher, src, cache_dir=cache)
    fs = extract_features(student, src, cache_dir=cache)  # ...not the teacher's cached features
    assert not fs.meta.get("cached") and cache_key(ft.meta) != cache_key(fs.meta)
    assert not np.allclose(ft.features, fs.features)
    again = extract_features(load_backbone(train_ckpt, checkpoint_key="student"), src,
                             cache_dir=cache)
    assert again.meta.get("cached")
    np.testing.assert_array_equal(again.features, fs.features)
    assert len(list(FeatureCache(cache).root.iterdir())) == 2


def test_build_settings_change_the_key_and_run_settings_do_not(train_ckpt):
    src = make_source(n=8, size=16)
    base = load_backbone(train_ckpt)
    k0 = _key(base, src)
    assert _key(load_backbone(train_ckpt, num_heads=1), src) != k0  # same weights, 1 head
    assert _key(load_backbone(train_ckpt, img_size=24), src) != k0  # interpolated positions
    assert _key(base, src, kind="cls+avgpool") != k0
    assert _key(base, src, precision="bf16") != k0
    assert _key(base, make_source(n=8, size=16, seed=3), ) != k0
    assert _key(base, src, batch_size=3) == k0
    assert _key(base, src, num_workers=0, skip_bad_images=True) == k0
    assert _key(load_backbone(train_ckpt), src) == k0  # rebuilt: same key


def test_weights_hash_sees_every_tensor():
    m = torch.nn.Linear(3, 2)
    h = weights_hash(m)
    with torch.no_grad():
        m.bias[1] += 1e-6
    assert weights_hash(m) != h
    assert weights_hash(torch.nn.Linear(3, 2).to(torch.bfloat16))  # any dtype hashes

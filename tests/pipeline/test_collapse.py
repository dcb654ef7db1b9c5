"""The collapse-stats runner: head views of a DINO training checkpoint, augmented pairs."""

from __future__ import annotations

import numpy as np
import pytest

from dinoeval.data import get_source
from dinoeval.models import load_backbone
from dinoeval.pipeline.collapse import (
    CollapseConfig,
    augmented_pair_features,
    run_collapse_stats,
)
from tests.conftest import DINO_K as K
from tests.conftest import dino_train_checkpoint


def test_identical_teacher_and_student_have_zero_kl(tmp_path, tiny_vit):
    ckpt = dino_train_checkpoint(tmp_path / "same.pth", tiny_vit, center_scale=0.0,
                                 same_student=True)
    cfg = CollapseConfig(teacher_temp=0.1, student_temp=0.1, align_pairs=0,
                         neural_collapse=False)
    run = run_collapse_stats(ckpt, "digits:train[:40]", config=cfg)
    head = run.results["dino_head"]
    assert head.kl == pytest.approx(0.0, abs=1e-9)
    assert head.n == 40 and head.num_prototypes == K


def test_augmented_pairs_are_seeded_views_of_the_same_images():
    src, bb = get_source("digits:test[:16]"), load_backbone("pixels")
    a1, a2 = augmented_pair_features(bb, src, np.arange(16), "cls", seed=0, batch_size=5)
    b1, _ = augmented_pair_features(bb, src, np.arange(16), "cls", seed=0, batch_size=5)
    assert a1.shape == a2.shape == (16, 8 * 8)  # digits are grayscale: one channel
    np.testing.assert_array_equal(a1, b1)  # seeded
    assert not np.allclose(a1, a2)
    z1, z2 = (v / np.linalg.norm(v, axis=1, keepdims=True) for v in (a1, a2))
    sims = z1 @ z2.T
    assert np.diag(sims).mean() > sims[~np.eye(16, dtype=bool)].mean()  # pairs stay related

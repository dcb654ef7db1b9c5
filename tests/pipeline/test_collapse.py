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


def _labelled_features(n=120, d=8, c=3, seed=0):
    from dinoeval.features import FeatureSet

    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    x = (rng.standard_normal((c, d))[y] * 3 + rng.standard_normal((n, d))).astype(np.float32)
    return FeatureSet(features=x, labels=y, indices=np.arange(n))


def test_evaluate_functions_equal_the_cores_they_wrap():
    from dinoeval.eval.collapse import collapse_stats
    from dinoeval.eval.linear import LinearProbeConfig, linear_probe
    from dinoeval.eval.neural_collapse import neural_collapse
    from dinoeval.pipeline import evaluate_collapse, evaluate_neural_collapse

    fs = _labelled_features()
    cfg = CollapseConfig(seed=3, uniformity_samples=50)
    got = evaluate_collapse(fs, cfg)
    want = collapse_stats(fs.features, seed=3, uniformity_samples=50)
    assert got.to_rows() == want.to_rows()
    probe = linear_probe(fs.features, fs.labels, fs.features, fs.labels,
                         config=LinearProbeConfig(epochs=2, learning_rates=(0.1,),
                                                  weight_decays=(0.0,)))
    nc = evaluate_neural_collapse(fs, cfg, probe=probe)
    ref = neural_collapse(fs.features, fs.labels, weight=probe.weight, bias=probe.bias)
    assert nc.to_rows() == ref.to_rows()
    assert nc.nc3 is not None and nc.nc4 is not None


@pytest.mark.parametrize(("kw", "msg"), [({"align_pairs": -1}, "--align-pairs"),
                                         ({"teacher_temp": 0.0}, "--teacher-temp"),
                                         ({"student_temp": -1.0}, "student_temp"),
                                         ({"seed": -1}, "--seed")])
def test_collapse_config_refuses_what_the_cli_refuses(kw, msg):
    # teacher_temp=0.0 used to become the checkpoint's default silently
    from dinoeval.errors import DinoevalError

    with pytest.raises(DinoevalError, match=msg):
        CollapseConfig(**kw)

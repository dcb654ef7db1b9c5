"""Mass-threshold masks and Jaccard of attention maps: known answers and invariances.

The maps themselves (explicit CLS attention of a ViT block): tests/models/test_cls_attention.py."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dinoeval.eval.attention import (
    JaccardResult,
    attention_masks,
    jaccard_score,
    mass_threshold_mask,
    prepare_image,
    score_masks,
    upsample_mask,
)

# ------------------------------------------------------------------ masks against known answers


def test_mass_threshold_keeps_hand_computed_patches():
    attn = np.array([0.1, 0.4, 0.05, 0.3, 0.15])
    # ranked 0.4, 0.3, 0.15, 0.1, 0.05: mass above each is 0, .4, .7, .85, .95
    np.testing.assert_array_equal(mass_threshold_mask(attn, 0.6), [0, 1, 0, 1, 0])
    np.testing.assert_array_equal(mass_threshold_mask(attn, 0.75), [0, 1, 0, 1, 1])
    np.testing.assert_array_equal(mass_threshold_mask(attn, 0.4), [0, 1, 0, 0, 0])
    np.testing.assert_array_equal(mass_threshold_mask(attn, 1.0), [1, 1, 1, 1, 1])
    # Unnormalised input (registers take some mass) is normalised first.
    np.testing.assert_array_equal(mass_threshold_mask(attn * 0.37, 0.6), [0, 1, 0, 1, 0])


def test_mass_threshold_works_per_row_of_a_batch():
    attn = np.array([[0.1, 0.4, 0.05, 0.3, 0.15], [0.5, 0.1, 0.1, 0.2, 0.1]])
    np.testing.assert_array_equal(mass_threshold_mask(attn, 0.6),
                                  [[0, 1, 0, 1, 0], [1, 0, 0, 1, 0]])


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, st.integers(1, 60), elements=st.floats(0.001, 1.0)),
       st.floats(0.05, 1.0))
def test_mass_kept_is_at_least_x_and_minimal(attn, mass):
    keep = mass_threshold_mask(attn, mass)
    p = attn / attn.sum()
    kept = p[keep].sum()
    assert kept >= mass - 1e-9
    # Minimal: without its weakest patch the mask holds less than X.
    assert kept - p[keep].min() < mass + 1e-9
    # The kept patches are the strongest ones.
    if (~keep).any():
        assert p[keep].min() >= p[~keep].max()


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, st.integers(2, 50), elements=st.floats(0.001, 1.0), unique=True),
       st.floats(0.1, 0.95))
def test_mass_threshold_equals_the_official_ascending_cumsum_rule(attn, mass):
    # visualize_attention.py: sort ascending, cumsum of normalised values > 1 - threshold.
    p = attn / attn.sum()
    idx = np.argsort(p)
    official = np.zeros_like(p, dtype=bool)
    official[idx] = np.cumsum(p[idx]) > 1 - mass
    np.testing.assert_array_equal(mass_threshold_mask(attn, mass), official)


def test_mass_threshold_rejects_bad_input():
    with pytest.raises(ValueError, match="mass"):
        mass_threshold_mask(np.ones(4), 0.0)
    with pytest.raises(ValueError, match="non-negative"):
        mass_threshold_mask(np.array([0.5, -0.1]), 0.6)


def test_upsample_mask_repeats_each_patch():
    m = np.array([[True, False], [False, True]])
    up = upsample_mask(m, 3)
    assert up.shape == (6, 6)
    assert up[:3, :3].all() and not up[:3, 3:].any() and up[3:, 3:].all()


def test_attention_masks_threshold_heads_and_their_mean():
    attn = np.zeros((2, 2, 2), dtype=np.float32)
    attn[0] = [[0.7, 0.1], [0.1, 0.1]]
    attn[1] = [[0.1, 0.1], [0.1, 0.7]]
    m = attention_masks(attn, patch_size=2, mass=0.6)
    assert m.head_masks.shape == (2, 4, 4) and m.mean_mask.shape == (4, 4)
    assert m.head_masks[0, :2, :2].all() and m.head_masks[0].sum() == 4
    assert m.head_masks[1, 2:, 2:].all() and m.head_masks[1].sum() == 4
    # Mean: 0.4, 0.1, 0.1, 0.4 -> both corners (mass 0.8 >= 0.6; one alone is 0.4).
    assert m.mean_mask[:2, :2].all() and m.mean_mask[2:, 2:].all() and m.mean_mask.sum() == 8


# ------------------------------------------------------------------------------------ Jaccard


def test_jaccard_known_answers():
    a = np.array([[1, 1, 0], [0, 0, 0]], dtype=bool)
    b = np.array([[1, 0, 0], [1, 0, 0]], dtype=bool)
    assert jaccard_score(a, b) == pytest.approx(1 / 3)
    assert jaccard_score(a, a) == 1.0
    assert jaccard_score(a, ~a) == 0.0
    assert jaccard_score(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0
    with pytest.raises(ValueError, match="shapes differ"):
        jaccard_score(a, b.T)


def test_jaccard_result_rows_best_and_mean_of_heads():
    res = JaccardResult(per_head=np.array([[0.5, 1.0], [0.1, 0.0]]),
                        mean_heads=np.array([0.2, 0.4]), mass=0.6, block=1)
    rows = {(r.metric, r.param): r.value for r in res.to_rows()}
    assert rows[("jaccard", "head=0")] == pytest.approx(0.3)
    assert rows[("jaccard", "head=1")] == pytest.approx(0.5)
    assert rows[("jaccard", "head=best")] == pytest.approx(0.5)
    assert rows[("jaccard", "head=mean")] == pytest.approx(0.3)
    assert rows[("best_head", "")] == 1
    assert all(r.n == 2 and r.eval == "attention" for r in res.to_rows())


def test_score_masks_against_targets():
    attn = np.zeros((1, 2, 2), dtype=np.float32)
    attn[0] = [[0.9, 0.04], [0.03, 0.03]]
    m = attention_masks(attn, 2, mass=0.6)
    target = np.zeros((4, 4), dtype=bool)
    target[:2, :4] = True  # top half: the mask (top-left patch) covers half of it
    res = score_masks([m], [target], mass=0.6, block=0)
    assert res.per_head[0, 0] == pytest.approx(0.5)
    assert res.mean_heads[0] == pytest.approx(0.5)


def test_prepare_image_crops_centre_or_pads():
    img = np.arange(30 * 45 * 3, dtype=np.int64).reshape(30, 45, 3)
    crop = prepare_image(img, 8, fit="crop")
    assert crop.shape == (24, 40, 3)
    np.testing.assert_array_equal(crop, img[3:27, 2:42])
    pad = prepare_image(img, 8, fit="pad")
    assert pad.shape == (32, 48, 3)
    np.testing.assert_array_equal(pad[:30, :45], img)
    assert not pad[30:].any() and not pad[:, 45:].any()
    with pytest.raises(ValueError, match="smaller than one"):
        prepare_image(img[:5], 8)

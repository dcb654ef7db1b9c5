"""Dense evaluations: patch targets, k-NN retrieval and the linear probe on small known cases."""

import numpy as np
import pytest

from dinoeval.errors import DinoevalError
from dinoeval.eval.dense import (
    dense_knn,
    linear_segmentation,
    majority,
    patch_targets,
    score_images,
)


def test_patch_targets_area_fractions_and_majority():
    m = np.array([[0, 0, 1, 1],
                  [0, 1, 1, 1],
                  [2, 2, 255, 255],
                  [2, 0, 255, 255]])
    t = patch_targets([m], (2, 2), 3)[0]
    np.testing.assert_allclose(t[0, 0], [3 / 4, 1 / 4, 0])
    np.testing.assert_allclose(t[0, 1], [0, 1, 0])
    np.testing.assert_allclose(t[1, 0], [1 / 4, 0, 3 / 4])
    np.testing.assert_allclose(t[1, 1], [0, 0, 0])  # all ignored
    hard = majority(t[None])[0]
    np.testing.assert_array_equal(hard.argmax(-1), [[0, 1], [2, 0]])
    assert hard[1, 1].sum() == 0
    with pytest.raises(DinoevalError, match="label 5 outside"):
        patch_targets([m * 0 + 5], (2, 2), 3)


def test_score_images_bilinear_upsampling():
    # one image, 1x2 patches: left patch class 0, right class 1 -> split in the middle
    scores = np.zeros((1, 1, 2, 2), np.float32)
    scores[0, 0, 0] = [1, 0]
    scores[0, 0, 1] = [0, 1]
    gt = np.zeros((2, 8), np.int64)
    gt[:, 5:] = 1  # the truth's boundary is one pixel right of the prediction's
    cm = score_images(scores, [gt], 2)
    np.testing.assert_array_equal(cm, [[8, 2], [0, 6]])


_PROTOS = np.random.default_rng(9).standard_normal((3, 16)).astype(np.float32)


def _toy(n, rng, d=16, size=8, grid=4):
    """Images whose left half is class 1 or 2, right half 0; patch features encode the class."""
    protos = _PROTOS
    masks, feats = [], np.zeros((n, grid, grid, d), np.float32)
    for i in range(n):
        c = 1 + i % 2
        m = np.zeros((size, size), np.int64)
        m[:, : size // 2] = c
        masks.append(m)
        lab = np.zeros((grid, grid), int)
        lab[:, : grid // 2] = c
        feats[i] = protos[lab] + 0.3 * rng.standard_normal((grid, grid, d))
    return feats, masks


def test_dense_knn_perfect_on_separable_features_and_bank_limit():
    rng = np.random.default_rng(0)
    tr_x, tr_m = _toy(20, rng)
    te_x, te_m = _toy(6, rng)
    res = dense_knn(tr_x, tr_m, te_x, te_m, 3, k=5)
    assert res.miou == pytest.approx(1.0) and res.pixel_acc == pytest.approx(1.0)
    small = dense_knn(tr_x, tr_m, te_x, te_m, 3, k=50, max_bank=10)
    assert small.n_train_patches == 10 and small.param.startswith("k=10")
    rows = {r.metric: r.value for r in res.to_rows(["bg", "a", "b"])}
    assert rows["mIoU"] == pytest.approx(1.0) and "IoU[bg]" in rows


def test_dense_knn_hand_vote():
    # bank: 2 train patches (class 0 feature [1,0], class 1 feature [0.8,0.6]); query [1,0]
    tr_x = np.array([[[[1.0, 0.0], [0.8, 0.6]]]], np.float32)  # (1, 1, 2, 2)
    tr_m = [np.array([[0, 1]])]
    te_x = np.array([[[[0.0, 1.0], [1.0, 0.0]]]], np.float32)
    te_m = [np.array([[1, 0]])]
    # query [0,1]: sims 0 (class 0) and 0.6 (class 1) -> class 1; query [1,0]: 1 vs 0.8 -> class 0
    res = dense_knn(tr_x, tr_m, te_x, te_m, 2, k=2, temperature=0.07)
    assert res.miou == pytest.approx(1.0)
    np.testing.assert_array_equal(res.confusion, [[1, 0], [0, 1]])


def test_linear_segmentation_learns_and_random_features_do_not():
    rng = np.random.default_rng(1)
    tr_x, tr_m = _toy(20, rng)
    te_x, te_m = _toy(6, rng)
    for targets in ("majority", "soft"):
        res = linear_segmentation(tr_x, tr_m, te_x, te_m, 3, targets=targets, max_iter=50)
        assert res.miou == pytest.approx(1.0), targets
    noise = linear_segmentation(rng.standard_normal(tr_x.shape).astype(np.float32), tr_m,
                                rng.standard_normal(te_x.shape).astype(np.float32), te_m, 3,
                                max_iter=50)
    assert noise.miou < 0.7
    with pytest.raises(DinoevalError, match="targets"):
        linear_segmentation(tr_x, tr_m, te_x, te_m, 3, targets="mode")
    with pytest.raises(DinoevalError, match="one mask per image"):
        dense_knn(tr_x, tr_m[:3], te_x, te_m, 3)

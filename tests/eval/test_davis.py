"""DAVIS J/F and mIoU against hand-computed values (see the comments for each derivation)."""

import math

import numpy as np
import pytest

from dinoeval.eval.davis import (
    boundary_f,
    boundary_radius,
    confusion_matrix,
    db_statistics,
    evaluate_video,
    iou_from_confusion,
    region_jaccard,
    seg2bmap,
    summarize,
)


def _box(shape, r0, r1, c0, c1):
    m = np.zeros(shape, dtype=bool)
    m[r0:r1, c0:c1] = True
    return m


def test_jaccard_hand_values():
    gt = _box((4, 4), 0, 2, 0, 2)
    pred = _box((4, 4), 0, 2, 1, 3)
    assert region_jaccard(gt, pred) == pytest.approx(2 / 6)  # 2 shared of 6 covered
    empty = np.zeros((4, 4), bool)
    assert region_jaccard(gt, empty) == 0.0  # empty prediction
    assert region_jaccard(empty, empty) == 1.0  # DAVIS: empty vs empty is 1
    void = _box((4, 4), 0, 2, 2, 3)  # hides the one predicted-only column
    assert region_jaccard(gt, pred, void) == pytest.approx(2 / 4)
    with pytest.raises(ValueError, match="shapes differ"):
        region_jaccard(gt, np.zeros((3, 4)))


def test_seg2bmap_square_is_outline_shifted_to_origin():
    m = _box((5, 5), 1, 3, 1, 3)
    expected = np.array([[1, 1, 1, 0, 0],
                         [1, 0, 1, 0, 0],
                         [1, 1, 1, 0, 0],
                         [0, 0, 0, 0, 0],
                         [0, 0, 0, 0, 0]], bool)
    np.testing.assert_array_equal(seg2bmap(m), expected)


def test_seg2bmap_image_edge_is_not_a_boundary():
    right = _box((4, 4), 0, 4, 2, 4)  # touches top, bottom and right edges
    left = _box((4, 4), 0, 4, 0, 2)   # touches top, bottom and left edges
    col1 = np.zeros((4, 4), bool)
    col1[:, 1] = True
    np.testing.assert_array_equal(seg2bmap(right), col1)
    np.testing.assert_array_equal(seg2bmap(left), col1)
    assert not seg2bmap(np.ones((4, 4))).any()


def test_boundary_radius_from_diagonal():
    assert boundary_radius((480, 854)) == 8  # ceil(0.008 * 979.7)
    assert boundary_radius((30, 40)) == 1    # ceil(0.008 * 50) = ceil(0.4)
    assert boundary_radius((30, 40), bound_th=3) == 3


def test_boundary_f_hand_values_with_edges():
    shape = (30, 40)  # tolerance 1 pixel
    gt = _box(shape, 0, 30, 20, 40)  # boundary: column 19, 30 pixels
    assert boundary_f(gt, _box(shape, 0, 30, 21, 40)) == 1.0  # boundary 1 px away
    assert boundary_f(gt, _box(shape, 0, 30, 22, 40)) == 0.0  # 2 px away
    pred = _box(shape, 0, 15, 21, 40) | _box(shape, 15, 30, 23, 40)
    # pred boundary: col 20 rows 0-13 (14), row 14 cols 20-22 (3), col 22 rows 15-29 (15) = 32;
    # matched (within 1 px of col 19): col 20 rows 0-14 = 15 -> precision 15/32;
    # gt rows 0-14 have a pred pixel at col 20 -> recall 15/30; F = 15/31.
    assert boundary_f(gt, pred) == pytest.approx(15 / 31)
    empty = np.zeros(shape, bool)
    assert boundary_f(gt, empty) == 0.0
    assert boundary_f(empty, gt) == 0.0
    assert boundary_f(empty, empty) == 1.0
    assert boundary_f(np.ones(shape), np.ones(shape)) == 1.0  # no boundary at all


def test_db_statistics_decay_bins():
    # T = 4: edges round(linspace(1, 4, 5)) - 1 = [0, 1, 2, 2, 3]; first bin v0..v1, last v2..v3
    m, r, d = db_statistics(np.array([1.0, 1.0, 0.0, 1.0]))
    assert (m, r, d) == pytest.approx((0.75, 0.75, 0.5))
    m, r, d = db_statistics(np.array([0.9, 0.8, 0.6, 0.5, 0.4, 0.2, 0.1, 0.1]))
    # T = 8: linspace(1, 8, 5) = 1, 2.75, 4.5, 6.25, 8 -> [0, 2, 4, 5, 7]: bins v0..v2, v5..v7
    assert d == pytest.approx(np.mean([0.9, 0.8, 0.6]) - np.mean([0.2, 0.1, 0.1]))
    assert r == pytest.approx(3 / 8)
    assert all(math.isnan(x) for x in db_statistics(np.array([])))


def test_video_with_disappearing_object():
    t, shape = 6, (30, 40)
    gt = np.zeros((t, *shape), np.uint8)
    gt[:, 20:, 20:] = 2                  # object 2 on every frame
    gt[:3, 2:10, 2:10] = 1               # object 1 leaves after frame 2
    pred = gt.copy()
    pred[3, 2:10, 2:10] = 1              # still predicted on frame 3: J = F = 0 there
    pred[5] = 0                          # last frame is not scored
    scores = evaluate_video(gt, pred, name="v")
    np.testing.assert_array_equal(scores.frames, [1, 2, 3, 4])
    np.testing.assert_allclose(scores.j, [[1, 1, 0, 1], [1, 1, 1, 1]])
    np.testing.assert_allclose(scores.f, [[1, 1, 0, 1], [1, 1, 1, 1]])
    res = summarize([scores])
    assert res.j_mean == pytest.approx(0.875) and res.f_mean == pytest.approx(0.875)
    assert res.jf_mean == pytest.approx(0.875)
    assert res.j_decay == pytest.approx(0.25)   # (0.5 + 0) / 2
    assert res.j_recall == pytest.approx(0.875)  # (3/4 + 1) / 2
    assert res.per_video["v"]["JF_mean"] == pytest.approx(0.875)
    metrics = {(r.metric, r.param): r.value for r in res.to_rows()}
    assert metrics[("J&F-mean", "")] == pytest.approx(0.875)


def test_video_empty_prediction_and_bad_labels():
    gt = np.zeros((4, 30, 40), np.uint8)
    gt[:, 5:15, 5:15] = 1
    scores = evaluate_video(gt, np.zeros_like(gt))
    assert scores.j.tolist() == [[0, 0]] and scores.f.tolist() == [[0, 0]]
    bad = gt.copy()
    bad[1, 0, 0] = 3
    with pytest.raises(ValueError, match="label 3 but the video has 1"):
        evaluate_video(gt, bad)
    with pytest.raises(ValueError, match="need at least 3"):
        evaluate_video(gt[:2], gt[:2])


def test_confusion_and_miou_hand_values():
    gt = np.array([0, 0, 1, 1, 2, 2, 255])
    pred = np.array([0, 1, 1, 1, 2, 0, 2])
    cm = confusion_matrix(gt, pred, 4)
    np.testing.assert_array_equal(cm[:3, :3], [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    miou, iou = iou_from_confusion(cm)
    # IoU0 = 1/(2+2-1), IoU1 = 2/(2+3-2), IoU2 = 1/(2+1-1); class 3 absent -> NaN, left out
    np.testing.assert_allclose(iou[:3], [1 / 3, 2 / 3, 1 / 2])
    assert math.isnan(iou[3])
    assert miou == pytest.approx(0.5)
    with pytest.raises(ValueError, match="out of range"):
        confusion_matrix(gt, pred, 2)


def test_distance_dilation_equals_disk_dilation():
    from scipy import ndimage

    from dinoeval.eval.davis import _within

    rng = np.random.default_rng(0)
    b = rng.random((40, 50)) < 0.02
    for r in (1, 2, 5):
        ax = np.arange(-r, r + 1)
        disk = ax[:, None] ** 2 + ax[None, :] ** 2 <= r * r  # skimage.morphology.disk(r)
        np.testing.assert_array_equal(_within(b, r), ndimage.binary_dilation(b, structure=disk))

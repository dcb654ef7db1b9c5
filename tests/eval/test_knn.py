import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dinoeval.errors import DinoevalError
from dinoeval.eval.knn import knn_classify, rank_predictions, weighted_vote


def reference_knn(train_x, train_y, test_x, k, T, C):
    """Straightforward reference: full similarity matrix, argsort, loop vote."""
    a = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
    b = test_x / np.linalg.norm(test_x, axis=1, keepdims=True)
    sims = b @ a.T
    preds = []
    for row in sims:
        nn = np.argsort(-row, kind="stable")[:k]
        votes = np.zeros(C)
        for j in nn:
            votes[train_y[j]] += np.exp(row[j] / T)
        preds.append(int(np.argmax(votes)))
    return np.array(preds)


def test_hand_computed_five_point_vote():
    # Train points on the unit circle at angles 0, 30, 60, 90, 180 degrees; query at 0 degrees.
    ang = np.deg2rad([0, 30, 60, 90, 180])
    train_x = np.stack([np.cos(ang), np.sin(ang)], 1).astype(np.float32)
    train_y = np.array([0, 1, 1, 1, 0])
    test_x = np.array([[1.0, 0.0]], dtype=np.float32)
    T = 0.5
    # k=3 neighbours: cos 0 = 1 (class 0), cos 30 = .866 (1), cos 60 = .5 (1).
    v0 = np.exp(1 / T)
    v1 = np.exp(np.cos(np.deg2rad(30)) / T) + np.exp(0.5 / T)
    votes = weighted_vote(np.array([[1.0, np.cos(np.deg2rad(30)), 0.5]]), np.array([[0, 1, 1]]),
                          2, T)
    np.testing.assert_allclose(votes, [[v0, v1]], rtol=1e-6)
    assert v1 > v0  # the two weaker neighbours outvote the nearest
    res = knn_classify(train_x, train_y, test_x, np.array([1]), ks=(1, 3), temperature=T)
    assert res.top1 == {1: 0.0, 3: 1.0}
    assert res.predictions[1].tolist() == [0] and res.predictions[3].tolist() == [1]


def test_separated_classes_give_perfect_accuracy():
    rng = np.random.default_rng(0)
    centers = np.eye(5, 16) * 10
    y = np.repeat(np.arange(5), 30)
    x = centers[y] + rng.normal(0, 0.1, (150, 16))
    res = knn_classify(x, y, x[::3], y[::3], ks=(10, 20))
    assert res.top1 == {10: 1.0, 20: 1.0}
    assert res.top5 == {10: 1.0, 20: 1.0}


def test_matches_reference_implementation():
    rng = np.random.default_rng(1)
    tx, ty = rng.normal(size=(300, 12)).astype(np.float32), rng.integers(0, 6, 300)
    qx, qy = rng.normal(size=(77, 12)).astype(np.float32), rng.integers(0, 6, 77)
    res = knn_classify(tx, ty, qx, qy, ks=(1, 5, 20, 50), temperature=0.07)
    for k in (1, 5, 20, 50):
        np.testing.assert_array_equal(res.predictions[k], reference_knn(tx, ty, qx, k, 0.07, 6))
        assert res.top1[k] == pytest.approx(np.mean(res.predictions[k] == qy))


def test_top5_counts_only_voted_classes_when_k_is_small():
    # k=1: one class gets a vote; top-5 must not count unvoted classes as "predicted".
    tx = np.array([[1.0, 0], [0, 1.0]], dtype=np.float32)
    ty = np.array([0, 1])
    qx = np.array([[1.0, 0.1]], dtype=np.float32)
    res = knn_classify(tx, ty, qx, np.array([1]), ks=(1,), num_classes=10)
    assert res.top1[1] == 0.0 and res.top5[1] == 0.0
    res2 = knn_classify(tx, ty, qx, np.array([1]), ks=(2,), num_classes=10)
    assert res2.top5[2] == 1.0
    ranked = rank_predictions(np.array([[0.0, 2.0, 1.0]]), top=5)
    assert ranked.tolist() == [[1, 2, -1]]


def test_single_test_sample_works():
    rng = np.random.default_rng(2)
    tx, ty = rng.normal(size=(20, 4)), rng.integers(0, 3, 20)
    res = knn_classify(tx, ty, tx[:1], ty[:1], ks=(1,))
    assert res.top1[1] == 1.0 and res.n_test == 1


def test_k_larger_than_train_set_is_a_clear_error():
    x = np.ones((5, 3), dtype=np.float32)
    with pytest.raises(DinoevalError, match="larger than the train set"):
        knn_classify(x, np.zeros(5, int), x, np.zeros(5, int), ks=(10,))


@pytest.mark.parametrize("bad", ["nan", "dims", "unlabelled"])
def test_bad_inputs_raise(bad):
    x = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    y = np.zeros(10, int)
    q, qy = x.copy(), y.copy()
    if bad == "nan":
        q[0, 0] = np.nan
    elif bad == "dims":
        q = q[:, :2]
    else:
        qy[0] = -1
    with pytest.raises(DinoevalError):
        knn_classify(x, y, q, qy, ks=(3,))


def test_raw_inner_products_neither_overflow_nor_underflow():
    # normalize=False: sims of 100 and -100 at T=0.07 are exp(±1429) without the row shift.
    tx = np.array([[9.0, 0], [10.0, 0]])
    ty = np.array([0, 1])
    # +q: sims 90 (class 0) and 100 (class 1): both exp overflow to inf and tie without the
    # shift. -q: sims -90 and -100 both underflow to 0, and no class would have a vote.
    for q, want in (([10.0, 0], 1), ([-10.0, 0], 0)):
        r = knn_classify(tx, ty, np.array([q]), np.array([want]), ks=(2,), normalize=False)
        assert r.predictions[2].tolist() == [want] and r.top1[2] == 1.0


def test_a_test_class_absent_from_the_train_set_is_an_error():
    x = np.eye(4, dtype=np.float32)
    with pytest.raises(DinoevalError, match="test class 2 has no train samples"):
        knn_classify(x, np.array([0, 0, 1, 1]), x[:3], np.array([0, 1, 2]), ks=(1,))
    # A train class that the test set lacks is fine (it only receives no queries).
    r = knn_classify(x, np.array([0, 1, 2, 2]), x[:2], np.array([0, 1]), ks=(1,))
    assert r.top1[1] == 1.0


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.01, 100.0))
def test_invariant_to_label_permutation_sample_order_and_scale(seed, scale):
    rng = np.random.default_rng(seed)
    # Continuous Gaussian features: exact ties have probability zero.
    tx = rng.normal(size=(60, 8)).astype(np.float32)
    ty = rng.integers(0, 4, 60)
    qx = rng.normal(size=(15, 8)).astype(np.float32)
    qy = rng.integers(0, 4, 15)
    base = knn_classify(tx, ty, qx, qy, ks=(5, 10))
    perm_classes = rng.permutation(4)
    relabelled = knn_classify(tx, perm_classes[ty], qx, perm_classes[qy], ks=(5, 10))
    assert relabelled.top1 == base.top1
    order = rng.permutation(60)
    shuffled = knn_classify(tx[order] * np.float32(scale), ty[order], qx, qy, ks=(5, 10))
    assert shuffled.top1 == pytest.approx(base.top1)
    qorder = rng.permutation(15)
    qshuffled = knn_classify(tx, ty, qx[qorder], qy[qorder], ks=(5, 10))
    np.testing.assert_array_equal(qshuffled.predictions[5], base.predictions[5][qorder])


def test_rows_are_long_format():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(30, 4)), np.arange(30) % 3
    rows = knn_classify(x, y, x, y, ks=(1, 5)).to_rows(per_class=True, class_names=["a", "b", "c"])
    assert {(r.metric, r.param) for r in rows} >= {("top1", "k=1"), ("top5", "k=5"),
                                                   ("recall[a]", "k=1")}

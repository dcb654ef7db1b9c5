"""Clustering scores against hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dinoeval.errors import DinoevalError
from dinoeval.eval.clusters import cluster_agreement, cluster_scores, kmeans


def separated(n_per: int, c: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = 20 * np.eye(c, d)
    y = np.repeat(np.arange(c), n_per)
    return (centers[y] + 0.1 * rng.normal(size=(len(y), d))).astype(np.float32), y


def test_partition_equal_to_labels_up_to_renaming_scores_one():
    a = cluster_agreement(np.array([0, 0, 1, 1, 2, 2]), np.array([7, 7, 3, 3, 5, 5]))
    assert (a.nmi, a.ari, a.accuracy, a.purity) == pytest.approx((1, 1, 1, 1))
    assert a.clusters_used == 3


def test_accuracy_and_purity_by_hand():
    # cluster 0 = {0, 0, 1}, cluster 1 = {1}: matching 0->0, 1->1 gets 3 of 4; purity 3/4.
    a = cluster_agreement(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1]))
    assert a.accuracy == pytest.approx(0.75) and a.purity == pytest.approx(0.75)
    # one big cluster: purity = majority share, Hungarian matches only one class
    b = cluster_agreement(np.array([0, 0, 0, 1]), np.zeros(4, dtype=int))
    assert b.purity == pytest.approx(0.75) and b.accuracy == pytest.approx(0.75)
    assert b.nmi == pytest.approx(0.0) and b.ari == pytest.approx(0.0)


def test_more_clusters_than_classes_leaves_unmatched_clusters_wrong():
    a = cluster_agreement(np.array([0, 0, 1, 1]), np.array([0, 1, 2, 3]))
    assert a.accuracy == pytest.approx(0.5) and a.purity == pytest.approx(1.0)


def test_agreement_is_invariant_to_relabelling(seed):
    rng = np.random.default_rng(seed)
    y, p = rng.integers(0, 4, 200), rng.integers(0, 5, 200)
    a = cluster_agreement(y, p)
    b = cluster_agreement(np.array([3, 1, 0, 2])[y], np.array([4, 2, 0, 1, 3])[p])
    assert (a.nmi, a.ari, a.accuracy, a.purity) == pytest.approx((b.nmi, b.ari, b.accuracy,
                                                                   b.purity))


def test_kmeans_on_separated_clusters_is_perfect_for_every_seed(seed):
    x, y = separated(50, 4, 6, seed)
    r = cluster_scores(x, y, seeds=(0, 1, 2))
    assert r.k == 4 and r.n == 200 and len(r.per_seed) == 3
    for name in ("nmi", "ari", "accuracy", "purity"):
        assert r.mean(name) == pytest.approx(1.0) and r.std(name) == pytest.approx(0.0)
    assert r.silhouette > 0.9 and r.silhouette_n == 200
    metrics = {row.metric for row in r.to_rows()}
    assert {"nmi", "ari", "accuracy", "purity", "silhouette", "nmi_std"} <= metrics


def test_spherical_kmeans_ignores_the_norm(seed):
    x, y = separated(40, 3, 3, seed)
    scale = np.random.default_rng(seed).uniform(0.05, 20, size=(len(x), 1)).astype(np.float32)
    r = cluster_scores(x * scale, y, spherical=True, seeds=(0,))
    assert r.mean("accuracy") == pytest.approx(1.0)
    assert r.to_rows()[0].eval == "kmeans-spherical"


def test_spherical_objective_is_squared_distance_to_unit_centroids():
    # Two clusters of unit vectors at ±10° from the x and y axes: each unit centroid is the axis
    # itself, so every row is at ‖x - c‖² = 2 - 2 cos 10°.
    a = np.deg2rad(10.0)
    x = np.array([[np.cos(a), np.sin(a)], [np.cos(a), -np.sin(a)],
                  [np.sin(a), np.cos(a)], [-np.sin(a), np.cos(a)]], dtype=np.float32)
    assign, obj = kmeans(3 * x, 2, spherical=True)
    assert assign[0] == assign[1] != assign[2] == assign[3]
    assert obj == pytest.approx(4 * (2 - 2 * np.cos(a)), rel=1e-4)


def test_default_k_counts_the_classes_present_not_the_largest_id(seed):
    x, y = separated(30, 3, 4, seed)
    r = cluster_scores(x, np.array([0, 2, 5])[y], seeds=(0,))  # labels skip ids 1, 3, 4
    assert r.k == 3 and r.mean("accuracy") == pytest.approx(1.0)


def test_kmeans_trains_on_every_sample(seed):
    # faiss's default would train on 256 points per centroid; here all 3000 are used, so the
    # final centroids are the exact means of their clusters (the Lloyd fixed point).
    x, _ = separated(1500, 2, 4, seed)
    assign, obj = kmeans(x, 2, seed=seed)
    direct = sum(((x[assign == c] - x[assign == c].mean(0)) ** 2).sum() for c in (0, 1))
    assert obj == pytest.approx(direct, rel=1e-3)


def test_bad_input_raises_a_clear_error(seed):
    x, y = separated(5, 2, 3, seed)
    with pytest.raises(DinoevalError, match="single class"):
        cluster_scores(x, np.zeros_like(y))
    x[0, 0] = np.nan
    with pytest.raises(DinoevalError, match="NaN"):
        cluster_scores(x, y)
    with pytest.raises(DinoevalError, match="k-means needs"):
        kmeans(np.ones((3, 2), dtype=np.float32), 5)
    with pytest.raises(DinoevalError, match="equal-length"):
        cluster_agreement(np.zeros(3), np.zeros(4))


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 5), st.integers(2, 6), st.integers(0, 2**32 - 1))
def test_agreement_is_invariant_to_any_relabelling_and_sample_order(c, k, seed):
    rng = np.random.default_rng(seed)
    y, p = rng.integers(0, c, 60), rng.integers(0, k, 60)
    order = rng.permutation(60)
    a = cluster_agreement(y, p)
    b = cluster_agreement(rng.permutation(c)[y][order], (rng.permutation(k) + 7)[p][order])
    assert (a.nmi, a.ari, a.accuracy, a.purity) == pytest.approx((b.nmi, b.ari, b.accuracy,
                                                                   b.purity))

"""Retrieval metrics against hand-computed rankings and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from dinoeval.errors import DinoevalError
from dinoeval.eval.retrieval import (
    QueryGroundTruth,
    average_precision,
    precision_recall_at,
    protocol_groundtruth,
    rank_gallery,
    relevance_from_groundtruth,
    relevance_from_labels,
    retrieval_metrics,
)

P, N, J = 1, 0, -1


def _ap(rel, n_rel, kind="trapezoid"):
    return float(average_precision(np.array([rel], np.int8), np.array([n_rel]), kind=kind)[0])


def test_trapezoid_ap_matches_hand_computation():
    # positives at ranks 0 and 2: (1+1)/2 and (1/2 + 2/3)/2, each times recall step 1/2
    assert _ap([P, N, P, N, N], 2) == pytest.approx((1 + (0.5 + 2 / 3) / 2) / 2)
    assert _ap([P, N, P, N, N], 2) == pytest.approx(0.7916666667)
    # the step rule: (1/1 + 2/3) / 2
    assert _ap([P, N, P, N, N], 2, "step") == pytest.approx(5 / 6)


def test_junk_in_the_middle_is_removed_from_the_ranking():
    # junk-free list is [N, P, P]: (0/1 + 1/2)/2 and (1/2 + 2/3)/2, over 2 positives
    expected = ((0 + 0.5) / 2 + (0.5 + 2 / 3) / 2) / 2
    assert _ap([N, J, P, J, P], 2) == pytest.approx(expected)
    assert _ap([N, J, P, J, P], 2) == pytest.approx(_ap([N, P, P], 2))
    # junk before the first positive lifts it to rank 0
    assert _ap([J, J, P], 1) == pytest.approx(1.0)


def test_query_without_positives_is_nan_and_left_out_of_the_mean():
    rel = np.array([[P, N, N], [N, N, N]], np.int8)
    res = retrieval_metrics(rel, np.array([1, 0]), ks=(1,))
    assert np.isnan(res.ap[1])
    assert res.mean_ap == pytest.approx(1.0)
    assert res.n_queries == 1 and res.n_empty == 1
    assert res.precision_at[1] == pytest.approx(1.0)


def test_positives_beyond_a_truncated_ranking_count_zero():
    assert _ap([P, N], 3) == pytest.approx(1 / 3)


def test_ties_are_ranked_by_gallery_index():
    scores = np.array([[0.5, 0.9, 0.5, 0.1]])
    ranked = rank_gallery(scores)
    np.testing.assert_array_equal(ranked, [[1, 0, 2, 3]])
    rel, n_rel = relevance_from_groundtruth(ranked, [QueryGroundTruth(ok=np.array([0, 3]))])
    np.testing.assert_array_equal(rel, [[N, P, N, P]])
    # (0/1 + 1/2)/2 + (1/3 + 2/4)/2, over 2 positives
    assert average_precision(rel, n_rel)[0] == pytest.approx((0.25 + (1 / 3 + 0.5) / 2) / 2)


def test_step_ap_equals_sklearn_on_distinct_scores():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(5, 40))
        y = rng.random(n) < 0.3
        y[rng.integers(n)] = True
        scores = rng.permutation(n).astype(np.float64)  # distinct
        ranked = rank_gallery(scores[None])
        rel = y[ranked].astype(np.int8)
        ours = average_precision(rel, np.array([y.sum()]), kind="step")[0]
        assert ours == pytest.approx(average_precision_score(y, scores))
        # the trapezoid rule never exceeds the step rule (j/r <= (j+1)/(r+1))
        assert average_precision(rel, np.array([y.sum()]))[0] <= ours + 1e-12


def _reference_trapezoid(ranked_ids, ok, junk):
    """A plain loop over the ranking, written from the protocol's description."""
    ap, found, seen = 0.0, 0, 0
    for item in ranked_ids:
        if item in junk and item not in ok:
            continue
        if item in ok:
            p0 = 1.0 if seen == 0 else found / seen
            p1 = (found + 1) / (seen + 1)
            ap += (p0 + p1) / 2 / len(ok)
            found += 1
        seen += 1
    return ap


def test_vectorised_ap_matches_a_plain_loop_with_junk():
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = 30
        ranked = rng.permutation(n)[None]
        ids = rng.permutation(n)
        ok, junk = set(ids[:5].tolist()), set(ids[5:9].tolist())
        gt = [QueryGroundTruth(ok=np.array(sorted(ok)), junk=np.array(sorted(junk)))]
        rel, n_rel = relevance_from_groundtruth(ranked, gt)
        assert average_precision(rel, n_rel)[0] == pytest.approx(
            _reference_trapezoid(ranked[0].tolist(), ok, junk))


def test_precision_at_k_uses_the_revisited_cutoff_and_recall_is_the_ir_one():
    rel = np.array([[N, P, N, J, N, P, N, N, N, N, N]], np.int8)  # positives at 2 and 5 (no junk)
    prec, rec = precision_recall_at(rel, np.array([2]), ks=(1, 5, 10))
    # k=1: kq=1 -> 0; k=5: kq=5 -> 2/5; k=10: kq=min(last positive 5, 10)=5 -> 2/5
    np.testing.assert_allclose(prec[0], [0.0, 0.4, 0.4])
    np.testing.assert_allclose(rec[0], [0.0, 1.0, 1.0])
    prec, rec = precision_recall_at(np.array([[P, N, N]], np.int8), np.array([4]), ks=(1, 3))
    np.testing.assert_allclose(prec[0], [1.0, 1.0])  # the last positive found is at rank 1
    np.testing.assert_allclose(rec[0], [0.25, 0.25])


def test_revisited_protocols():
    easy, hard, junk = np.array([0, 1]), np.array([2]), np.array([3])
    e = protocol_groundtruth(easy, hard, junk, "easy")
    m = protocol_groundtruth(easy, hard, junk, "medium")
    h = protocol_groundtruth(easy, hard, junk, "hard")
    assert set(e.ok) == {0, 1} and set(e.junk) == {2, 3}
    assert set(m.ok) == {0, 1, 2} and set(m.junk) == {3}
    assert set(h.ok) == {2} and set(h.junk) == {0, 1, 3}
    with pytest.raises(DinoevalError, match="protocol"):
        protocol_groundtruth(easy, hard, junk, "medum")
    ranked = np.array([[3, 0, 4, 2, 1]])
    rel, n_rel = relevance_from_groundtruth(ranked, [h])
    # hard: junk 3, 0, 1 removed -> [4, 2]: the only positive at rank 1
    assert average_precision(rel, n_rel)[0] == pytest.approx((0 + 0.5) / 2)


def test_label_relevance_excludes_the_query_itself():
    gallery = np.array([0, 0, 1, 1, 0])
    ranked = rank_gallery(np.array([[1.0, 0.2, 0.9, 0.1, 0.5]]))  # [0, 2, 4, 1, 3]
    rel, n_rel = relevance_from_labels(ranked, np.array([0]), gallery, query_ids=np.array([0]))
    np.testing.assert_array_equal(rel, [[J, N, P, P, N]])
    assert n_rel.tolist() == [2]
    # without self-exclusion the query is its own first hit
    rel2, n_rel2 = relevance_from_labels(ranked, np.array([0]), gallery)
    assert n_rel2.tolist() == [3] and rel2[0, 0] == P
    # junk-free [2(N), 4(P), 1(P)]: (0 + 1/2)/2 and (1/2 + 2/3)/2 over 2
    assert average_precision(rel, n_rel)[0] == pytest.approx((0.25 + (0.5 + 2 / 3) / 2) / 2)


def test_bad_inputs_are_refused():
    with pytest.raises(DinoevalError, match="AP kind"):
        average_precision(np.zeros((1, 2), np.int8), np.array([1]), kind="area")
    with pytest.raises(DinoevalError, match="no label"):
        relevance_from_labels(np.zeros((1, 2), np.int64), np.array([-1]), np.array([0, 1]))
    with pytest.raises(DinoevalError, match="more relevant"):
        average_precision(np.array([[P, P]], np.int8), np.array([1]))
    with pytest.raises(DinoevalError, match="integer"):
        relevance_from_labels(np.zeros((1, 2)), np.array([0]), np.array([0, 1]))


def test_perfect_ranking_scores_one_everywhere():
    rel = np.array([[P, P, P, N, N, N, N, N, N, N, N]], np.int8)
    res = retrieval_metrics(rel, np.array([3]))
    assert res.mean_ap == pytest.approx(1.0)
    assert res.precision_at == {1: 1.0, 5: 1.0, 10: 1.0}
    assert res.recall_at[1] == pytest.approx(1 / 3) and res.recall_at[5] == 1.0
    rows = res.to_rows()
    assert rows[0].metric == "mAP" and rows[0].param == "protocol=labels" and rows[0].n == 1

"""Ranked-retrieval metrics: the revisited Oxford/Paris protocol's AP, mAP, mP@k and recall@k.

A ranking is turned into a *relevance matrix*: for every query, one entry per ranked gallery item,
``1`` relevant (an "ok" image), ``0`` irrelevant, ``-1`` junk. Junk items are removed from the
ranking before anything is counted, as the revisited protocol's ``compute_map`` does (Radenović
et al., "Revisiting Oxford and Paris", CVPR 2018; ``revisitop/python/evaluate.py``), so a junk
image in the middle of the list moves every later item one place up.

Average precision (:func:`average_precision`) is that code's *trapezoid* rule: the j-th positive
(0-based) at junk-free rank r (0-based) adds ``recall_step * (j/r + (j+1)/(r+1)) / 2`` (``j/r`` is
taken as 1 when ``r = 0``), with ``recall_step = 1 / n_relevant``. It is also the Holidays/Copydays
``score_ap_from_ranks_1`` DINO's ``eval_copy_detection.py`` uses. ``kind="step"`` gives the usual
non-interpolated AP (``sum (j+1)/(r+1) / n_relevant``), which equals
``sklearn.metrics.average_precision_score`` on a full ranking of distinct scores; the trapezoid value
is never larger. Relevant items the ranking does not reach (a truncated ranking) add nothing.

mP@k is the revisited code's definition: precision over the first ``min(k, rank of the last
positive)`` junk-free items, so a query with fewer than k positives that finds them all scores 1.
recall@k is the information-retrieval one: the fraction of the query's positives among its first k
junk-free items. Queries without positives are left out of every mean (their AP is NaN), as in
``compute_map``.

The protocols of the revisited benchmarks (``protocol_groundtruth``): Easy (ok = easy, junk = junk +
hard), Medium (ok = easy + hard, junk = junk) and Hard (ok = hard, junk = junk + easy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from dinoeval.errors import DinoevalError
from dinoeval.results import Row

PROTOCOLS = ("easy", "medium", "hard")
DEFAULT_RETRIEVAL_KS = (1, 5, 10)
AP_KINDS = ("trapezoid", "step")
RELEVANT, IRRELEVANT, JUNK = 1, 0, -1


@dataclass(frozen=True)
class QueryGroundTruth:
    """Gallery indices that count as relevant (``ok``) and ignored (``junk``) for one query."""

    ok: np.ndarray
    junk: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def protocol_groundtruth(easy: np.ndarray, hard: np.ndarray, junk: np.ndarray,
                         protocol: str) -> QueryGroundTruth:
    """One revisited query's ok/junk sets under ``protocol`` (easy, medium or hard)."""
    e, h, j = (np.asarray(a, dtype=np.int64).reshape(-1) for a in (easy, hard, junk))
    if protocol == "easy":
        return QueryGroundTruth(ok=e, junk=np.concatenate([j, h]))
    if protocol == "medium":
        return QueryGroundTruth(ok=np.concatenate([e, h]), junk=j)
    if protocol == "hard":
        return QueryGroundTruth(ok=h, junk=np.concatenate([j, e]))
    raise DinoevalError(f"unknown retrieval protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")


# ---------------------------------------------------------------------------------------------
# Relevance of a ranking


def relevance_from_groundtruth(ranked: np.ndarray, groundtruth: Sequence[QueryGroundTruth]
                               ) -> tuple[np.ndarray, np.ndarray]:
    """Relevance of ranked gallery items from explicit per-query ok/junk index sets.

    Args:
        ranked: ``(Q, L)`` int gallery indices, best first; ``-1`` pads a short list.
        groundtruth: ``Q`` entries of ok/junk gallery indices.

    Returns:
        ``relevance (Q, L) int8`` in {1, 0, -1} (padding counts as irrelevant, never reached by
        a metric because it sorts last) and ``n_relevant (Q,) int64`` = the size of each ok set.
    """
    ranked = _check_ranked(ranked)
    if len(groundtruth) != len(ranked):
        raise DinoevalError(f"{len(ranked)} rankings but {len(groundtruth)} ground-truth entries")
    rel = np.zeros(ranked.shape, np.int8)
    n_rel = np.zeros(len(ranked), np.int64)
    for i, g in enumerate(groundtruth):
        ok = np.unique(np.asarray(g.ok, np.int64))
        junk = np.setdiff1d(np.asarray(g.junk, np.int64), ok)  # ok wins if listed twice
        rel[i, np.isin(ranked[i], ok)] = RELEVANT
        rel[i, np.isin(ranked[i], junk)] = JUNK
        n_rel[i] = len(ok)
    rel[ranked < 0] = IRRELEVANT
    return rel, n_rel


def relevance_from_labels(ranked: np.ndarray, query_labels: np.ndarray,
                          gallery_labels: np.ndarray, *,
                          query_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Label-defined relevance: a gallery item is relevant when it has the query's class.

    Args:
        ranked: ``(Q, L)`` int gallery indices, best first; ``-1`` pads a short list.
        query_labels: ``(Q,)`` int class of each query (``>= 0``).
        gallery_labels: ``(N,)`` int class of each gallery item (``-1``: unlabelled, never
            relevant).
        query_ids: ``(Q,)`` gallery index of each query when queries and gallery are the same
            set (``-1`` where a query is not in the gallery). That item is junk for its own
            query: ignored in the ranking and not counted as a positive.

    Returns:
        ``relevance (Q, L) int8`` and ``n_relevant (Q,) int64`` (every same-class gallery item,
        reached by the ranking or not, minus the query itself).
    """
    ranked = _check_ranked(ranked)
    q = np.asarray(query_labels, np.int64).reshape(-1)
    g = np.asarray(gallery_labels, np.int64).reshape(-1)
    if len(q) != len(ranked):
        raise DinoevalError(f"{len(ranked)} rankings but {len(q)} query labels")
    if (q < 0).any():
        raise DinoevalError("label-defined retrieval needs labelled queries; some have no label "
                            "(-1); give a ground-truth file or labelled query data")
    if ranked.size and ranked.max() >= len(g):
        raise DinoevalError(f"ranked index {int(ranked.max())} is outside the gallery "
                            f"({len(g)} items)")
    safe = np.where(ranked < 0, 0, ranked)
    rel = ((g[safe] == q[:, None]) & (ranked >= 0)).astype(np.int8)
    counts = np.bincount(g[g >= 0], minlength=int(max(q.max(initial=0), g.max(initial=0))) + 1)
    n_rel = counts[q].astype(np.int64)
    if query_ids is not None:
        ids = np.asarray(query_ids, np.int64).reshape(-1)
        if len(ids) != len(q):
            raise DinoevalError(f"{len(q)} queries but {len(ids)} query ids")
        rel[(ranked == ids[:, None]) & (ids[:, None] >= 0)] = JUNK
        inside = ids >= 0
        n_rel[inside] -= (g[ids[inside]] == q[inside]).astype(np.int64)
    return rel, n_rel


def _check_ranked(ranked: np.ndarray) -> np.ndarray:
    ranked = np.asarray(ranked)
    if ranked.ndim != 2 or not np.issubdtype(ranked.dtype, np.integer):
        raise DinoevalError(f"a ranking must be a (queries, depth) integer array, got "
                            f"{ranked.dtype} {ranked.shape}")
    return ranked.astype(np.int64, copy=False)


# ---------------------------------------------------------------------------------------------
# Metrics on a relevance matrix


def _positions(relevance: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per entry: 0-based rank among junk-free items, 0-based positive count, positive mask."""
    rel = np.asarray(relevance)
    if rel.ndim != 2:
        raise DinoevalError(f"relevance must be (queries, depth), got shape {rel.shape}")
    keep = rel != JUNK
    pos = rel == RELEVANT
    rank = np.cumsum(keep, axis=1) - 1
    j = np.cumsum(pos, axis=1) - 1
    return rank, j, pos


def average_precision(relevance: np.ndarray, n_relevant: np.ndarray, *,
                      kind: str = "trapezoid") -> np.ndarray:
    """Per-query AP of ranked lists (see the module docstring for the formulas).

    Args:
        relevance: ``(Q, L)`` in {1 relevant, 0 irrelevant, -1 junk}, best first.
        n_relevant: ``(Q,)`` positives each query has in the whole gallery (``>=`` those in the
            list; the missing ones add zero precision).
        kind: ``trapezoid`` (revisited Oxford/Paris, Holidays/Copydays) or ``step``
            (non-interpolated, as scikit-learn).

    Returns:
        ``(Q,) float64`` AP in [0, 1]; NaN for a query without positives.
    """
    if kind not in AP_KINDS:
        raise DinoevalError(f"unknown AP kind {kind!r}; use one of {', '.join(AP_KINDS)}")
    n_rel = np.asarray(n_relevant, np.float64).reshape(-1)
    rank, j, pos = _positions(relevance)
    if len(n_rel) != len(rank):
        raise DinoevalError(f"{len(rank)} rankings but {len(n_rel)} positive counts")
    found = pos.sum(axis=1)
    if (found > n_rel).any():
        raise DinoevalError("a ranking lists more relevant items than its query's positive count")
    # entries that are not positives (junk at the head has rank -1) are masked out below
    r, jj = np.maximum(rank, 0).astype(np.float64), j.astype(np.float64)
    p1 = (jj + 1) / (r + 1)
    if kind == "trapezoid":
        p0 = np.where(r > 0, jj / np.where(r > 0, r, 1), 1.0)
        gain = (p0 + p1) / 2
    else:
        gain = p1
    total = np.where(pos, gain, 0.0).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n_rel > 0, total / np.where(n_rel > 0, n_rel, 1), np.nan)


def precision_recall_at(relevance: np.ndarray, n_relevant: np.ndarray,
                        ks: Sequence[int] = DEFAULT_RETRIEVAL_KS
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Per-query mP@k (the revisited definition) and recall@k over junk-free ranks.

    Args:
        relevance: ``(Q, L)`` in {1, 0, -1}; ``n_relevant``: ``(Q,)``.
        ks: cut-offs (each ``>= 1``).

    Returns:
        ``precision (Q, len(ks))`` and ``recall (Q, len(ks))`` in [0, 1]; NaN rows for queries
        without positives. Precision at k uses the first ``min(k, rank of the last positive found)``
        junk-free items (zero when the list holds no positive).
    """
    n_rel = np.asarray(n_relevant, np.float64).reshape(-1)
    rank, _, pos = _positions(relevance)
    ks = [int(k) for k in ks]
    if any(k < 1 for k in ks):
        raise DinoevalError(f"retrieval k must be >= 1, got {min(ks)}")
    # 1-based junk-free rank of every positive; non-positives sort past every k
    pos_rank = np.where(pos, rank + 1, np.iinfo(np.int64).max)
    last = np.where(pos.any(axis=1), np.where(pos, rank + 1, 0).max(axis=1), 0)
    prec = np.empty((len(rank), len(ks)))
    rec = np.empty((len(rank), len(ks)))
    for c, k in enumerate(ks):
        within = (pos_rank <= k).sum(axis=1).astype(np.float64)
        kq = np.minimum(last, k)
        hits_kq = (pos_rank <= kq[:, None]).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            prec[:, c] = np.where(kq > 0, hits_kq / np.where(kq > 0, kq, 1), 0.0)
            rec[:, c] = within / np.where(n_rel > 0, n_rel, 1)
    empty = n_rel == 0
    prec[empty], rec[empty] = np.nan, np.nan
    return prec, rec


@dataclass(frozen=True)
class RetrievalResult:
    """Retrieval metrics of one protocol.

    Attributes:
        protocol: ``labels`` (label-defined relevance), ``easy``/``medium``/``hard`` (revisited
            ground truth) or ``copies`` (copy detection).
        mean_ap: mAP in [0, 1] over the queries with positives (NaN when none has).
        ap: ``(Q,)`` per-query AP (NaN: no positives).
        ks: the cut-offs.
        precision_at, recall_at: mean mP@k and recall@k per k.
        n_queries: queries with at least one positive (the ones averaged).
        n_empty: queries left out for having no positive.
        ap_kind: ``trapezoid`` or ``step``.
        depth: ranked items per query (the gallery size for a full ranking).
    """

    protocol: str
    mean_ap: float
    ap: np.ndarray = field(repr=False)
    ks: tuple[int, ...]
    precision_at: dict[int, float]
    recall_at: dict[int, float]
    n_queries: int
    n_empty: int
    ap_kind: str = "trapezoid"
    depth: int = 0

    def to_rows(self, eval_name: str = "retrieval") -> list[Row]:
        p = f"protocol={self.protocol}"
        rows = [Row(eval_name, "mAP", self.mean_ap, p, self.n_queries)]
        for k in self.ks:
            rows.append(Row(eval_name, "mP@k", self.precision_at[k], f"{p} k={k}", self.n_queries))
            rows.append(Row(eval_name, "recall@k", self.recall_at[k], f"{p} k={k}",
                            self.n_queries))
        return rows


def summarize(protocol: str, ap: np.ndarray, precision: np.ndarray, recall: np.ndarray,
              ks: Sequence[int], *, ap_kind: str = "trapezoid", depth: int = 0
              ) -> RetrievalResult:
    """Means over the queries with positives of per-query ``ap (Q,)``, ``precision (Q, K)`` and
    ``recall (Q, K)`` (the outputs of :func:`average_precision` and :func:`precision_recall_at`,
    possibly concatenated over query blocks)."""
    ap = np.asarray(ap, np.float64)
    valid = ~np.isnan(ap)
    n = int(valid.sum())
    mean = lambda a: float(np.mean(a[valid])) if n else float("nan")  # noqa: E731
    ks = tuple(int(k) for k in ks)
    return RetrievalResult(
        protocol=protocol, mean_ap=mean(ap), ap=ap, ks=ks,
        precision_at={k: mean(precision[:, c]) for c, k in enumerate(ks)},
        recall_at={k: mean(recall[:, c]) for c, k in enumerate(ks)},
        n_queries=n, n_empty=int(len(ap) - n), ap_kind=ap_kind, depth=depth)


def retrieval_metrics(relevance: np.ndarray, n_relevant: np.ndarray, *, protocol: str = "labels",
                      ks: Sequence[int] = DEFAULT_RETRIEVAL_KS, ap_kind: str = "trapezoid"
                      ) -> RetrievalResult:
    """mAP, mP@k and recall@k of ranked lists in one call.

    Args:
        relevance: ``(Q, L)`` in {1 relevant, 0 irrelevant, -1 junk}, best first.
        n_relevant: ``(Q,)`` positives per query in the whole gallery.
        protocol: the name recorded with the numbers.
    """
    ap = average_precision(relevance, n_relevant, kind=ap_kind)
    prec, rec = precision_recall_at(relevance, n_relevant, ks)
    return summarize(protocol, ap, prec, rec, ks, ap_kind=ap_kind,
                     depth=int(np.asarray(relevance).shape[1]))


def rank_gallery(scores: np.ndarray, depth: int | None = None) -> np.ndarray:
    """``(Q, N)`` similarities -> ``(Q, depth)`` gallery indices, best first.

    Ties go to the lower gallery index (a stable sort), the order the out-of-core search
    (:func:`dinoeval.eval.knn_ooc.knn_search_ooc`) also gives; this reference ranking is for small
    inputs and tests.
    """
    s = np.asarray(scores, np.float64)
    order = np.argsort(-s, axis=1, kind="stable")
    return order if depth is None else order[:, :depth]


def groundtruth_by_protocol(gnd: Sequence[Mapping[str, np.ndarray]], protocol: str
                            ) -> list[QueryGroundTruth]:
    """Revisited per-query dicts (``easy``, ``hard``, ``junk``) -> ok/junk sets of ``protocol``."""
    return [protocol_groundtruth(g["easy"], g["hard"], g["junk"], protocol) for g in gnd]

"""Does the representation cluster by class? k-means (faiss) scored against the labels.

* :func:`cluster_agreement` — NMI, ARI, Hungarian-matched accuracy and purity of any partition
  against the labels (also used for the DINO teacher's argmax-prototype assignment);
* :func:`kmeans` — k-means++ seeding, then faiss Lloyd iterations on **every** sample (faiss's
  default silently trains on at most 256 points per centroid; that cap is lifted here),
  optionally spherical;
* :func:`cluster_scores` — k-means with k = number of classes by default over several seeds
  (mean and std of each score across seeds), plus a silhouette on a seeded sample.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from dinoeval.errors import DinoevalError
from dinoeval.eval._validation import check_features, check_finite, check_labels
from dinoeval.results import Row

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterAgreement:
    """How well a partition matches the labels (all in [0, 1] except ARI in [-0.5, 1]).

    Attributes:
        nmi: normalised mutual information (arithmetic-mean normalisation, scikit-learn's).
        ari: adjusted Rand index.
        accuracy: fraction correct after the best one-to-one cluster→class matching (Hungarian,
            scipy); with more clusters than classes the unmatched clusters count as wrong.
        purity: ``Σ_clusters max_class count / N`` (each cluster votes for its majority class).
        clusters_used: distinct cluster ids in the partition.
    """

    nmi: float
    ari: float
    accuracy: float
    purity: float
    clusters_used: int


def cluster_agreement(labels: np.ndarray, clusters: np.ndarray) -> ClusterAgreement:
    """Score a partition ``clusters (N,)`` (any integer ids) against ``labels (N,)``.

    Invariant to relabelling clusters or classes; a partition equal to the labels up to a
    relabelling scores 1 on every measure.
    """
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    y = np.asarray(labels)
    p = np.asarray(clusters)
    if y.shape != p.shape or y.ndim != 1 or len(y) == 0:
        raise DinoevalError(f"labels {y.shape} and cluster ids {p.shape} must be equal-length, "
                            "non-empty (N,) arrays")
    _, yi = np.unique(y, return_inverse=True)
    _, pi = np.unique(p, return_inverse=True)
    table = np.zeros((pi.max() + 1, yi.max() + 1), dtype=np.int64)
    np.add.at(table, (pi, yi), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    n = len(y)
    return ClusterAgreement(
        nmi=float(normalized_mutual_info_score(yi, pi)), ari=float(adjusted_rand_score(yi, pi)),
        accuracy=float(table[rows, cols].sum() / n), purity=float(table.max(axis=1).sum() / n),
        clusters_used=int(table.shape[0]))


def kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``(k, D)`` k-means++ initial centroids (Arthur & Vassilvitskii): each next centroid is a
    row drawn with probability proportional to its squared distance to the nearest chosen one."""
    x_sq = np.einsum("nd,nd->n", x, x)
    centers = np.empty((k, x.shape[1]), dtype=x.dtype)
    centers[0] = x[rng.integers(len(x))]
    d2 = np.maximum(x_sq - 2 * x @ centers[0] + centers[0] @ centers[0], 0)
    for j in range(1, k):
        total = float(d2.sum())
        i = int(rng.choice(len(x), p=d2 / total)) if total > 0 else int(rng.integers(len(x)))
        centers[j] = x[i]
        d2 = np.minimum(d2, np.maximum(x_sq - 2 * x @ centers[j] + centers[j] @ centers[j], 0))
    return centers


def kmeans(features: np.ndarray, k: int, *, seed: int = 0, spherical: bool = False,
           niter: int = 50) -> tuple[np.ndarray, float]:
    """k-means++ seeding, then faiss k-means trained on all N rows.

    Args:
        features: ``(N, D)``; L2-normalised first when ``spherical`` (centroids re-normalised
            each iteration, i.e. cosine k-means).
        k: clusters (``2 ≤ k ≤ N``).

    Returns:
        ``(assignments (N,) int64, objective)`` — the objective is the sum of squared distances
        to the assigned centroid (of the normalised rows to the unit centroids when
        ``spherical``).
    """
    import faiss

    x = np.array(features, dtype=np.float32, order="C", copy=True)
    if spherical:
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n, d = x.shape
    if not 2 <= k <= n:
        raise DinoevalError(f"k-means needs 2 <= k <= N, got k={k} for N={n}")
    km = faiss.Kmeans(d, k, niter=niter, seed=int(seed), spherical=spherical, verbose=False,
                      max_points_per_centroid=n // k + 1, min_points_per_centroid=1)
    km.train(x, init_centroids=kmeans_plus_plus(x, k, np.random.default_rng(seed)))
    score, assign = km.index.search(x, 1)
    if spherical:  # faiss searched an inner-product index of unit centroids: turn it into ‖x-c‖²
        score = np.einsum("ij,ij->i", x, x)[:, None] + 1.0 - 2.0 * score
    return assign[:, 0].astype(np.int64), float(np.maximum(score, 0.0).sum())


@dataclass(frozen=True)
class ClusterResult:
    """k-means clustering scores over several seeds.

    Attributes:
        k: clusters; spherical: cosine k-means.
        seeds: the k-means seeds.
        per_seed: one :class:`ClusterAgreement` per seed.
        silhouette: silhouette score of the first seed's clustering on a seeded sample
            (Euclidean, or cosine when spherical); ``None`` when it could not be computed.
        silhouette_n: rows in that sample.
        assignments: ``(N,)`` cluster ids of the first seed.
        n: samples clustered (all of them).
    """

    k: int
    spherical: bool
    seeds: tuple[int, ...]
    per_seed: tuple[ClusterAgreement, ...]
    silhouette: float | None
    silhouette_n: int
    assignments: np.ndarray = field(repr=False)
    n: int

    def mean(self, name: str) -> float:
        return float(np.mean([getattr(a, name) for a in self.per_seed]))

    def std(self, name: str) -> float:
        return float(np.std([getattr(a, name) for a in self.per_seed]))

    def to_rows(self) -> list[Row]:
        e = "kmeans-spherical" if self.spherical else "kmeans"
        p = f"k={self.k},seeds={len(self.seeds)}"
        rows = []
        for name in ("nmi", "ari", "accuracy", "purity"):
            rows.append(Row(e, name, self.mean(name), p, self.n))
            rows.append(Row(e, f"{name}_std", self.std(name), p, self.n))
        if self.silhouette is not None:
            rows.append(Row(e, "silhouette", self.silhouette, f"k={self.k}", self.silhouette_n))
        return rows


def cluster_scores(features: np.ndarray, labels: np.ndarray, *, k: int | None = None,
                   seeds: Sequence[int] = (0, 1, 2), spherical: bool = False, niter: int = 50,
                   silhouette_samples: int = 10000, seed: int = 0,
                   on_step: Callable[[int], None] | None = None) -> ClusterResult:
    """k-means on every sample, scored against the labels, for each seed.

    Args:
        features: ``(N, D)``.
        labels: ``(N,)`` class ids in ``[0, C)``.
        k: clusters (default: the number of distinct labels present).
        seeds: one k-means run per seed.
        spherical: cosine k-means on L2-normalised features.
        silhouette_samples: rows (seeded by ``seed``) behind the silhouette score; 0 skips it.
        on_step: progress callback, called with the number of steps done after each seed's
            k-means and after the silhouette (``len(seeds) + 1`` steps).
    """
    from sklearn.metrics import silhouette_score

    x = check_features(features)
    y, _ = check_labels(labels, len(x), need_all_classes=False)
    check_finite(x)
    if not seeds:
        raise DinoevalError("give at least one k-means seed")
    k = int(k) if k is not None else len(np.unique(y))
    runs = []
    for i, s in enumerate(seeds, 1):
        runs.append(kmeans(x, k, seed=s, spherical=spherical, niter=niter))
        if on_step is not None:
            on_step(i)
    per_seed = tuple(cluster_agreement(y, a) for a, _ in runs)
    first = runs[0][0]
    sil, sil_n = None, 0
    if silhouette_samples:
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(len(x), min(len(x), silhouette_samples), replace=False))
        if 2 <= len(np.unique(first[idx])) < len(idx):
            sil = float(silhouette_score(np.asarray(x[idx], dtype=np.float32), first[idx],
                                         metric="cosine" if spherical else "euclidean"))
            sil_n = len(idx)
        else:
            log.info("silhouette skipped: the sample holds a single cluster")
    if on_step is not None:
        on_step(len(seeds) + 1)
    return ClusterResult(k=k, spherical=spherical, seeds=tuple(int(s) for s in seeds),
                         per_seed=per_seed, silhouette=sil, silhouette_n=sil_n,
                         assignments=first, n=len(x))

"""2-D maps of features for pictures: t-SNE (scikit-learn) or UMAP (``umap-learn``, optional).

A map is for looking, not a metric: distances in it mean little beyond "these points are
neighbours". The subsample is seeded and stratified by class so every class shows.
"""

from __future__ import annotations

import logging

import numpy as np

from dinoeval.errors import DinoevalError

log = logging.getLogger(__name__)


def subsample(labels: np.ndarray, max_points: int, *, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``max_points`` samples, about equally many per class."""
    labels = np.asarray(labels)
    if len(labels) <= max_points:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per = max(1, max_points // len(classes))
    picks = [rng.permutation(np.flatnonzero(labels == c))[:per] for c in classes]
    return np.sort(np.concatenate(picks))[:max_points]


def embed_2d(features: np.ndarray, *, method: str = "tsne", seed: int = 0,
             perplexity: float = 30.0) -> np.ndarray:
    """``(N, 2)`` coordinates of ``(N, D)`` features.

    Args:
        method: ``tsne`` (scikit-learn's ``TSNE``, PCA initialisation, cosine metric on
            L2-normalised rows as the k-NN sees them), ``umap`` (needs ``umap-learn``) or
            ``auto`` (UMAP when installed, else t-SNE).
        perplexity: t-SNE's, capped at ``(N - 1) / 3``.

    Raises:
        DinoevalError: fewer than 5 rows, an unknown method, or ``umap`` without umap-learn.
    """
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or len(x) < 5:
        raise DinoevalError(f"a 2-D map needs (N >= 5, D) features, got shape {x.shape}")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if method == "auto":
        import importlib.util

        method = "umap" if importlib.util.find_spec("umap") else "tsne"
    if method == "umap":
        try:
            import umap
        except ImportError as err:
            raise DinoevalError("method 'umap' needs umap-learn (pip install umap-learn); "
                                "or use 'tsne'") from err
        return np.asarray(umap.UMAP(n_components=2, random_state=seed, metric="cosine")
                          .fit_transform(x), dtype=np.float32)
    if method != "tsne":
        raise DinoevalError(f"2-D map method must be tsne, umap or auto, got {method!r}")
    from sklearn.manifold import TSNE

    p = float(min(perplexity, max(1.0, (len(x) - 1) / 3)))
    return TSNE(n_components=2, init="pca", perplexity=p, metric="cosine", random_state=seed
                ).fit_transform(x).astype(np.float32)

"""The one-pass float64 moment accumulator behind the representation statistics.

:class:`MomentAccumulator` streams over ``(B, D)`` blocks of a feature matrix (an array, a
memory-map, or any iterable of blocks) and keeps only ``O(C·D + D²)`` numbers: the sample count,
the feature sum, the Gram matrix of shifted features, per-class counts and sums, and the per-dim
sums of the L2-normalised features. Every statistic of :mod:`~dinoeval.eval.collapse` and
:mod:`~dinoeval.eval.neural_collapse` is a function of these :class:`Moments`.

Shifting: the Gram matrix is accumulated over ``h - r`` with ``r`` the mean of the first block,
so centred quantities (covariances, scatter matrices) do not lose precision to cancellation when
features have a large common offset (LayerNorm outputs often do).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from dinoeval.errors import DinoevalError
from dinoeval.eval._validation import check_features, check_finite, check_labels

DEFAULT_BLOCK_ROWS = 16384


def iter_blocks(x: np.ndarray, block_rows: int = DEFAULT_BLOCK_ROWS
                ) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, float64 block)`` row blocks of an ``(N, D)`` array or memory-map."""
    for s in range(0, len(x), block_rows):
        yield s, np.asarray(x[s : s + block_rows], dtype=np.float64)


@dataclass(frozen=True, eq=False)
class Moments:
    """First and second moments of ``N`` feature rows ``h_i`` (all float64).

    Attributes:
        n: sample count N.
        mean: ``(D,)`` sample mean.
        gram: ``(D, D)`` uncentred second moment ``Σ_i h_i h_iᵀ``.
        scatter: ``(D, D)`` centred scatter ``Σ_i (h_i - mean)(h_i - mean)ᵀ``.
        normed_sum, normed_sumsq: ``(D,)`` sums of ``z_i`` and ``z_i²`` with ``z = h / ‖h‖``.
        class_counts: ``(C,)`` samples per class (``None`` without labels).
        class_means: ``(C, D)`` per-class means (rows of empty classes are NaN).
        within_scatter: ``(D, D)`` ``Σ_i (h_i - μ_{y_i})(h_i - μ_{y_i})ᵀ`` (``None`` without labels).
    """

    n: int
    mean: np.ndarray
    gram: np.ndarray = field(repr=False)
    scatter: np.ndarray = field(repr=False)
    normed_sum: np.ndarray = field(repr=False)
    normed_sumsq: np.ndarray = field(repr=False)
    class_counts: np.ndarray | None = None
    class_means: np.ndarray | None = field(default=None, repr=False)
    within_scatter: np.ndarray | None = field(default=None, repr=False)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])


class MomentAccumulator:
    """One pass over feature blocks -> :class:`Moments`, in float64, ``O(C·D + D²)`` memory.

    Args:
        dim: D.
        num_classes: C when labels will be given (then class sums are kept), else ``None``.
    """

    def __init__(self, dim: int, num_classes: int | None = None) -> None:
        self.dim, self.num_classes = int(dim), num_classes
        self.n = 0
        self.shift: np.ndarray | None = None
        self.sum = np.zeros(dim)            # Σ (h - r)
        self.gram = np.zeros((dim, dim))    # Σ (h - r)(h - r)ᵀ
        self.normed_sum = np.zeros(dim)
        self.normed_sumsq = np.zeros(dim)
        if num_classes is not None:
            self.class_counts = np.zeros(num_classes, dtype=np.int64)
            self.class_sums = np.zeros((num_classes, dim))  # Σ_{y_i = c} (h_i - r)

    def update(self, block: np.ndarray, labels: np.ndarray | None = None) -> None:
        """Add ``(B, D)`` rows (and their ``(B,)`` labels when the accumulator has classes)."""
        h = np.asarray(block, dtype=np.float64)
        if h.ndim != 2 or h.shape[1] != self.dim:
            raise DinoevalError(f"feature block has shape {h.shape}, expected (B, {self.dim})")
        if len(h) == 0:
            return
        check_finite(h)
        if self.shift is None:
            self.shift = h.mean(axis=0)
        norms = np.linalg.norm(h, axis=1, keepdims=True)
        z = h / np.maximum(norms, 1e-12)
        self.normed_sum += z.sum(axis=0)
        self.normed_sumsq += np.einsum("nd,nd->d", z, z)
        hs = h - self.shift
        self.sum += hs.sum(axis=0)
        self.gram += hs.T @ hs
        self.n += len(h)
        if self.num_classes is not None:
            if labels is None or len(labels) != len(h):
                raise DinoevalError("this accumulator tracks classes: pass one label per row")
            y = np.asarray(labels, dtype=np.int64)
            if (y < 0).any() or (y >= self.num_classes).any():
                raise DinoevalError(f"labels must lie in [0, {self.num_classes})")
            self.class_counts += np.bincount(y, minlength=self.num_classes)
            self.class_sums += _class_sums(hs, y, self.num_classes)

    def result(self) -> Moments:
        """The accumulated :class:`Moments` (raises when nothing was added)."""
        if self.n == 0 or self.shift is None:
            raise DinoevalError("no feature rows were accumulated")
        r, n = self.shift, self.n
        mean_s = self.sum / n
        scatter = self.gram - n * np.outer(mean_s, mean_s)
        mean = mean_s + r
        gram = self.gram + np.outer(r, self.sum) + np.outer(self.sum, r) + n * np.outer(r, r)
        counts = means = within = None
        if self.num_classes is not None:
            counts = self.class_counts.copy()
            with np.errstate(invalid="ignore", divide="ignore"):
                means_s = self.class_sums / counts[:, None]
            present = counts > 0
            within = self.gram - (means_s[present].T * counts[present]) @ means_s[present]
            means = means_s + r
        return Moments(n=n, mean=mean, gram=_sym(gram), scatter=_sym(scatter),
                       normed_sum=self.normed_sum.copy(), normed_sumsq=self.normed_sumsq.copy(),
                       class_counts=counts, class_means=means,
                       within_scatter=None if within is None else _sym(within))


def _class_sums(h: np.ndarray, y: np.ndarray, c: int) -> np.ndarray:
    """``(C, D)`` per-class row sums as a sparse one-hot product (O(B·D), unlike ``np.add.at``)."""
    from scipy.sparse import csr_matrix

    onehot = csr_matrix((np.ones(len(y)), (y, np.arange(len(y)))), shape=(c, len(y)))
    return np.asarray(onehot @ h)


def _sym(a: np.ndarray) -> np.ndarray:
    return (a + a.T) / 2


def accumulate(features: np.ndarray | Iterable[np.ndarray], labels: np.ndarray | None = None, *,
               num_classes: int | None = None, block_rows: int = DEFAULT_BLOCK_ROWS) -> Moments:
    """:class:`Moments` of an ``(N, D)`` array or memory-map, read in ``block_rows`` blocks.

    Args:
        features: ``(N, D)`` features.
        labels: ``(N,)`` class ids (validated: every class in ``[0, C)`` must have a sample).
        num_classes: C (default ``max(labels) + 1``).
    """
    x = check_features(features)
    if labels is not None:
        labels, num_classes = check_labels(labels, len(x), num_classes)
    else:
        num_classes = None
    acc = MomentAccumulator(x.shape[1], num_classes)
    for s, block in iter_blocks(x, block_rows):
        acc.update(block, None if labels is None else labels[s : s + len(block)])
    return acc.result()

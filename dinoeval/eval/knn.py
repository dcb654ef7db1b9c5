"""Weighted k-NN classification on L2-normalised features (DINO's protocol).

One exact inner-product search (faiss ``IndexFlatIP``) at the largest k serves every k: the
neighbours of a smaller k are a prefix of the larger list. Each of the k nearest train samples
votes for its class with weight ``exp(sim / T)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from dinoeval.errors import DinoevalError
from dinoeval.eval._validation import check_finite, check_same_dim
from dinoeval.results import Row

DEFAULT_KS = (10, 20, 100, 200)


@dataclass(frozen=True)
class KnnResult:
    """k-NN accuracies for each k.

    Attributes:
        ks: the k values, ascending.
        top1, top5: accuracy in [0, 1] per k. Top-5 counts only classes that received a vote:
            with k=1 it equals top-1. (DINO's eval_knn.py also ranks zero-score classes, in the
            sort's tie order, so with few classes and small k its top-5 can be higher; top-1 is
            the same.)
        predictions: ``(N_test,)`` int64 top-1 class per k.
        per_class: ``(C,)`` top-1 recall per class per k (NaN for classes absent from the test set).
        temperature: the vote temperature T.
        n_train, n_test: sample counts.
        confusion: ``(C, C)`` counts per k, row = true class, column = prediction.
    """

    ks: tuple[int, ...]
    top1: dict[int, float]
    top5: dict[int, float]
    predictions: dict[int, np.ndarray] = field(repr=False)
    per_class: dict[int, np.ndarray] = field(repr=False)
    temperature: float
    n_train: int
    n_test: int
    confusion: dict[int, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def to_rows(self, *, per_class: bool = False, class_names: Sequence[str] = ()) -> list[Row]:
        rows = []
        for k in self.ks:
            rows.append(Row("knn", "top1", self.top1[k], f"k={k}", self.n_test))
            rows.append(Row("knn", "top5", self.top5[k], f"k={k}", self.n_test))
            if per_class:
                for c, v in enumerate(self.per_class[k]):
                    if np.isnan(v):  # a train class with no test sample: nothing was measured
                        continue
                    name = class_names[c] if c < len(class_names) else str(c)
                    rows.append(Row("knn", f"recall[{name}]", float(v), f"k={k}"))
        return rows


def knn_search(train_x: np.ndarray, test_x: np.ndarray, k: int, *, normalize: bool = True,
               block_rows: int = 4096, num_threads: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner-product neighbours of every test row.

    Args:
        train_x: ``(N, D)`` bank.
        test_x: ``(M, D)`` queries.
        k: neighbours per query (``<= N``).
        normalize: L2-normalise both first (cosine similarity).
        block_rows: queries searched per call, so the output and scratch memory stay bounded.

    Returns:
        ``sims (M, k) float32`` descending and ``idx (M, k) int64`` into ``train_x``.
    """
    import faiss

    if num_threads is not None:
        faiss.omp_set_num_threads(num_threads)
    train = _prep(train_x, normalize)
    index = faiss.IndexFlatIP(train.shape[1])
    index.add(train)
    sims = np.empty((len(test_x), k), dtype=np.float32)
    idx = np.empty((len(test_x), k), dtype=np.int64)
    for s in range(0, len(test_x), block_rows):
        q = _prep(test_x[s : s + block_rows], normalize)
        sims[s : s + len(q)], idx[s : s + len(q)] = index.search(q, k)
    return sims, idx


def _prep(x: np.ndarray, normalize: bool) -> np.ndarray:
    x = np.array(x, dtype=np.float32, order="C", copy=True)
    if normalize:
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        np.maximum(norms, 1e-12, out=norms)
        x /= norms
    return x


def weighted_vote(neighbor_sims: np.ndarray, neighbor_labels: np.ndarray, num_classes: int,
                  temperature: float) -> np.ndarray:
    """Class scores ``(M, C)``: sum over neighbours of ``exp(sim / T)`` into each one's class.

    Args:
        neighbor_sims: ``(M, k)`` cosine similarities.
        neighbor_labels: ``(M, k)`` int labels in ``[0, C)``.
    """
    m = neighbor_sims.shape[0]
    w = np.exp(neighbor_sims.astype(np.float64) / temperature)
    # One flat bincount over (row, class) cells: much faster than np.add.at.
    cell = (np.arange(m, dtype=np.int64)[:, None] * num_classes + neighbor_labels).reshape(-1)
    votes = np.bincount(cell, weights=w.reshape(-1), minlength=m * num_classes)
    return votes.reshape(m, num_classes)


def rank_predictions(votes: np.ndarray, top: int = 5) -> np.ndarray:
    """``(M, top)`` classes by descending vote, ties to the lower class id; -1 for classes that
    received no vote (a class nobody voted for is never predicted)."""
    order = np.argsort(-votes, axis=1, kind="stable")[:, :top]
    got = np.take_along_axis(votes, order, axis=1) > 0
    return np.where(got, order, -1)


def knn_classify(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    temperature: float = 0.07,
    num_classes: int | None = None,
    normalize: bool = True,
) -> KnnResult:
    """Weighted k-NN top-1/top-5 for every k in ``ks`` from one search at ``max(ks)``.

    Args:
        train_x: ``(N, D)`` features (L2-normalised here unless ``normalize=False``).
        train_y: ``(N,)`` int labels in ``[0, C)``.
        test_x: ``(M, D)`` features.
        test_y: ``(M,)`` int labels.
        ks: neighbour counts; each must be ``<= N``.
        temperature: vote temperature T (0.07 in DINO).
        num_classes: C (default: ``max(label) + 1``).
    """
    train_y, test_y, ks, c = _validate(train_x, train_y, test_x, test_y, ks, temperature,
                                       num_classes)
    sims, idx = knn_search(train_x, test_x, max(ks), normalize=normalize)
    return classify_neighbors(sims, train_y[idx], test_y, ks, c, temperature, len(train_y))


def classify_neighbors(sims: np.ndarray, neighbor_labels: np.ndarray, test_y: np.ndarray,
                       ks: tuple[int, ...], num_classes: int, temperature: float,
                       n_train: int) -> KnnResult:
    """The weighted vote for every k from one neighbour list (shared by all search paths).

    Args:
        sims: ``(M, max k)`` similarities, descending.
        neighbor_labels: ``(M, max k)`` labels of those neighbours.
    """
    top1, top5, preds, per_class, confusion = {}, {}, {}, {}, {}
    # Shift each row by its best similarity: the votes scale by exp(-max/T) > 0, which changes no
    # ranking, and exp never overflows (raw inner products with normalize=False can exceed 50/T).
    sims = np.asarray(sims, dtype=np.float64)
    sims = sims - sims.max(axis=1, keepdims=True) if sims.size else sims
    for k in ks:
        ranked = rank_predictions(weighted_vote(sims[:, :k], neighbor_labels[:, :k], num_classes,
                                                temperature))
        pred = ranked[:, 0]
        preds[k] = pred
        top1[k] = float(np.mean(pred == test_y))
        top5[k] = float(np.mean((ranked == test_y[:, None]).any(axis=1)))
        per_class[k] = class_recall(pred, test_y, num_classes)
        confusion[k] = confusion_matrix(pred, test_y, num_classes)
    return KnnResult(ks=ks, top1=top1, top5=top5, predictions=preds, per_class=per_class,
                     temperature=temperature, n_train=n_train, n_test=len(test_y),
                     confusion=confusion)


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """``(C, C)`` int64 counts: row = true class, column = predicted class (scikit-learn's
    ``confusion_matrix`` layout); the diagonal over the row sums is :func:`class_recall`.

    Args:
        pred, target: ``(N,)`` integer classes in ``[0, num_classes)``.
    """
    pred, target = np.asarray(pred, dtype=np.int64), np.asarray(target, dtype=np.int64)
    flat = np.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def class_recall(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """``(C,)`` fraction of each class's test samples predicted correctly (NaN if absent)."""
    total = np.bincount(target, minlength=num_classes).astype(np.float64)
    hit = np.bincount(target[pred == target], minlength=num_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, hit / total, np.nan)


def _validate(train_x, train_y, test_x, test_y, ks, temperature, num_classes):
    if train_x.ndim != 2 or test_x.ndim != 2:
        raise DinoevalError(f"k-NN needs 2-D features, got train {train_x.shape} and test "
                            f"{test_x.shape} (use a cls* feature kind, not patch)")
    check_same_dim(train_x, test_x)
    check_finite(np.asarray(train_x), "train features")
    return validate_inputs(train_y, test_x, test_y, len(train_x), ks, temperature, num_classes)


def validate_inputs(train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, n_train: int,
                    ks: Sequence[int], temperature: float, num_classes: int | None
                    ) -> tuple[np.ndarray, np.ndarray, tuple[int, ...], int]:
    """Checks shared by every k-NN path that need no train features in memory.

    Returns int64 labels, the sorted unique ks and the number of classes C.
    """
    train_y = np.asarray(train_y).astype(np.int64, copy=False)
    test_y = np.asarray(test_y).astype(np.int64, copy=False)
    if test_x.ndim != 2:
        raise DinoevalError(f"k-NN needs 2-D features, got test {test_x.shape} (use a cls* "
                            "feature kind, not patch)")
    if n_train != len(train_y) or len(test_x) != len(test_y):
        raise DinoevalError("features and labels differ in length")
    if n_train == 0 or len(test_x) == 0:
        raise DinoevalError("k-NN needs at least one train and one test sample")
    if (train_y < 0).any() or (test_y < 0).any():
        raise DinoevalError("k-NN needs labelled data; some samples have no label (-1)")
    if not ks:
        raise DinoevalError("give at least one k")
    ks = tuple(sorted({int(k) for k in ks}))
    if ks[0] < 1:
        raise DinoevalError(f"k must be >= 1, got {ks[0]}")
    if ks[-1] > n_train:
        raise DinoevalError(f"k={ks[-1]} is larger than the train set ({n_train} samples); "
                            f"use --k values <= {n_train} or more train data")
    if temperature <= 0:
        raise DinoevalError(f"temperature must be > 0, got {temperature}")
    check_finite(np.asarray(test_x), "test features")
    c = int(max(train_y.max(), test_y.max())) + 1
    if num_classes is not None:
        if num_classes < c:
            raise DinoevalError(f"num_classes={num_classes} but labels go up to {c - 1}")
        c = num_classes
    unseen = np.setdiff1d(np.unique(test_y), np.unique(train_y))
    if len(unseen):
        raise DinoevalError(f"test class{'es' if len(unseen) > 1 else ''} "
                            f"{', '.join(map(str, unseen[:10].tolist()))} "
                            f"{'have' if len(unseen) > 1 else 'has'} no train samples, so k-NN "
                            "can never predict it; use a train split that covers every test class")
    return train_y, test_y, ks, c

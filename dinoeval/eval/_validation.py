"""Input checks shared by the metric cores (scikit-learn's ``check_array`` / ``_check_targets``).

Every message names the input and says how to fix it; each raises
:class:`~dinoeval.errors.DinoevalError`.
"""

from __future__ import annotations

import numpy as np

from dinoeval.errors import DinoevalError


def check_features(x: np.ndarray, name: str = "features") -> np.ndarray:
    """``x`` as an ``(N, D)`` array (not copied); raises on bad shape or emptiness."""
    x = x if isinstance(x, np.ndarray) else np.asarray(x)
    if x.ndim != 2:
        raise DinoevalError(f"{name} must be 2-D (N, D), got shape {x.shape}; use a cls* "
                            "feature kind, not patch")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise DinoevalError(f"{name} is empty (shape {x.shape}); check the data source")
    return x


def check_finite(block: np.ndarray, name: str = "features") -> None:
    """Raise when ``block`` holds NaN or inf."""
    if not np.isfinite(block).all():
        raise DinoevalError(f"{name} contain NaN or inf; re-extract them (check the checkpoint "
                            "and --precision)")


def check_labels(labels: np.ndarray, n: int, num_classes: int | None = None, *,
                 name: str = "labels", need_all_classes: bool = True) -> tuple[np.ndarray, int]:
    """Validate ``(N,)`` integer labels; return them as int64 and the number of classes C.

    Args:
        labels: ``(N,)`` class ids in ``[0, C)``.
        n: the number of feature rows they belong to.
        num_classes: C (default ``max(labels) + 1``).
        need_all_classes: raise when a class in ``[0, C)`` has no sample.

    Raises:
        DinoevalError: unlabelled samples (-1), fewer than 2 classes, fewer samples than
            classes, an empty class, or a length mismatch.
    """
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != n:
        raise DinoevalError(f"{name} must be (N,) = ({n},), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) and (
            not np.all(np.isfinite(y)) or not np.all(np.equal(np.mod(y, 1), 0))):
            raise DinoevalError(f"{name} must be integer class ids, got dtype {y.dtype}")
    y = y.astype(np.int64, copy=False)
    if n == 0:
        raise DinoevalError(f"no samples: {name} is empty")
    if (y < 0).any():
        raise DinoevalError(f"{name}: {int((y < 0).sum())} samples have no label (-1); these "
                            "statistics need a labelled source")
    c = int(y.max()) + 1
    if num_classes is not None:
        if num_classes < c:
            raise DinoevalError(f"num_classes={num_classes} but {name} go up to {c - 1}")
        c = int(num_classes)
    if c < 2:
        raise DinoevalError(f"{name} hold a single class; these statistics need at least 2")
    if need_all_classes and n < c:
        raise DinoevalError(f"{n} samples but {c} classes; need at least one sample per class")
    if need_all_classes:
        counts = np.bincount(y, minlength=c)
        empty = np.flatnonzero(counts == 0)
        if len(empty):
            raise DinoevalError(f"class {int(empty[0])} has no samples ({len(empty)} empty "
                                f"classes of {c}); pass matching num_classes or relabel to "
                                "0..C-1")
    return y, c


def check_same_dim(train_x: np.ndarray, test_x: np.ndarray) -> None:
    """Raise when ``(N, D)`` train and ``(M, D')`` test features differ in width."""
    if train_x.shape[1] != test_x.shape[1]:
        raise DinoevalError(f"train features have {train_x.shape[1]} dims but test features "
                            f"{test_x.shape[1]}; extract both with the same backbone and kind")

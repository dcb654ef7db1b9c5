"""PCA-whitening learned on a separate set of features (DINO's copy-detection post-processing).

``eval_copy_detection.py`` centres the query and database features with the mean of a separate
"whitening" image set, projects them on the eigenvectors of that set's covariance and divides each
coordinate by ``eigenvalue ** power`` (power 0.5: full whitening), eigenvalues below
``1e-5 * largest`` being raised to that floor (its ``vit_utils.PCA``). Here the covariance is of
the *centred* whitening features, so that the whitened training set has identity covariance; the
official script takes the second moment of the uncentred features (its mean is subtracted only
from queries and database), which differs by the rank-one term ``mean mean^T``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dinoeval.errors import DinoevalError


@dataclass(frozen=True)
class Whitening:
    """A learned whitening: ``apply(x) = (x - mean) @ projection``.

    Attributes:
        mean: ``(D,)`` mean of the training features.
        projection: ``(D, d)`` eigenvectors (descending eigenvalue) scaled by
            ``eigenvalue ** -power``.
        eigenvalues: ``(d,)`` the (floored) eigenvalues kept, descending.
        power: 0.5 whitens fully, 0 only rotates.
        n_train: training rows.
    """

    mean: np.ndarray
    projection: np.ndarray
    eigenvalues: np.ndarray
    power: float
    n_train: int

    def apply(self, x: np.ndarray) -> np.ndarray:
        """``(N, D)`` -> ``(N, d)`` float32 whitened features (not normalised)."""
        x = np.asarray(x, np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.mean):
            raise DinoevalError(f"whitening was learned on {len(self.mean)}-dim features but got "
                                f"shape {x.shape}; use the same backbone and feature for both")
        return ((x - self.mean) @ self.projection).astype(np.float32)


def learn_whitening(features: np.ndarray, *, power: float = 0.5, dim: int | None = None,
                    eps_ratio: float = 1e-5) -> Whitening:
    """PCA-whitening of ``features (N, D)`` (see the module docstring).

    Args:
        power: eigenvalue exponent (DINO: 0.5).
        dim: keep the ``dim`` leading components (default all ``D``; with ``N <= D`` rows at
            most ``N`` exist, the rest of the covariance being zero).
        eps_ratio: eigenvalues below ``eps_ratio * largest`` are raised to it.

    Raises:
        DinoevalError: fewer than 2 rows, non-finite values, or ``dim`` out of range.
    """
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise DinoevalError(f"whitening needs at least 2 feature rows, got shape {x.shape}; "
                            "give more whitening images")
    if not np.isfinite(x).all():
        raise DinoevalError("whitening features contain NaN or inf; re-extract them")
    top = min(x.shape[1], len(x))
    d = top if dim is None else int(dim)
    if not 1 <= d <= top:
        raise DinoevalError(f"whitening dim must be in [1, {top}] ({len(x)} rows of "
                            f"{x.shape[1]} dims), got {dim}")
    if power < 0:
        raise DinoevalError(f"whitening power must be >= 0, got {power}")
    mean = x.mean(axis=0)
    xc = x - mean
    if len(x) <= x.shape[1]:
        # fewer rows than dims: the covariance has rank < N, and its eigenvectors with non-zero
        # eigenvalues are the right singular vectors of the centred rows (O(N^2 D), not O(D^3))
        _, sv, vt = np.linalg.svd(xc, full_matrices=False)
        vals, vecs = sv**2 / len(x), vt.T
    else:
        vals, vecs = np.linalg.eigh(xc.T @ xc / len(x))
    floor = max(float(vals.max()), 0.0) * eps_ratio
    if floor <= 0:
        raise DinoevalError("whitening features are all identical (zero covariance); use a "
                            "varied set of whitening images")
    vals = np.maximum(vals, floor)
    order = np.argsort(vals, kind="stable")[::-1][:d]
    vals, vecs = vals[order], vecs[:, order]
    return Whitening(mean=mean, projection=vecs / vals**power, eigenvalues=vals, power=power,
                     n_train=len(x))

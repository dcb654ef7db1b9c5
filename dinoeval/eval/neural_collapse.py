"""Neural-collapse statistics (Papyan, Han & Donoho, PNAS 2020) of labelled features.

Definitions and the choices made (also written into each row's ``param``):

* class means ``μ_c`` (sample mean of class c); **global mean ``μ_G`` = mean of the class means**
  (unweighted, so class imbalance does not tilt the geometry; equals the sample mean when classes
  are balanced, which is Papyan et al.'s setting); centred means ``M_c = μ_c - μ_G`` (a ``(C, D)``
  matrix ``M``).
* ``Σ_W = (1/N) Σ_i (h_i - μ_{y_i})(h_i - μ_{y_i})ᵀ`` (divisor N, i.e. ``ddof=0``, pooled over
  classes); ``Σ_B = (1/C) Σ_c M_c M_cᵀ``.
* **NC1** ``= tr(Σ_W Σ_B⁺) / C`` with ``Σ_B⁺`` the pseudo-inverse of rank ``C - 1`` (the rank
  of C centred means), in float64. 0 when every sample sits on its class mean.
* **NC2** equinorm ``= std_c ‖M_c‖ / mean_c ‖M_c‖`` (``ddof=0``); equiangularity ``= std`` (``ddof=0``)
  of the cosines ``cos(M_c, M_c')`` over the ``C(C-1)/2`` pairs ``c < c'``; max-angle ``=
  mean_{c<c'} |cos(M_c, M_c') + 1/(C-1)|``. All 0 on a simplex equiangular tight frame (ETF).
* **NC3** self-duality ``= ‖W̃/‖W̃‖_F - M/‖M‖_F‖_F²`` in ``[0, 4]``, with ``W̃`` the classifier's
  ``(C, D)`` weights minus their mean row (softmax is blind to that component).
* **NC4** ``=`` fraction of samples where the classifier's argmax differs from the
  nearest-class-centre (Euclidean) rule; also reported: the NCC accuracy.

Everything streams: :func:`neural_collapse` reads ``(N, D)`` features (array or memory-map) in row
blocks through one float64 :class:`~dinoeval.eval._moments.MomentAccumulator` pass
(``O(C·D + D²)`` memory); NC4 needs a second pass once the class means are known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from dinoeval.errors import DinoevalError
from dinoeval.eval._moments import (
    DEFAULT_BLOCK_ROWS,
    Moments,
    accumulate,
    iter_blocks,
)
from dinoeval.eval._validation import check_features, check_labels
from dinoeval.results import Row


@dataclass(frozen=True)
class NeuralCollapseStats:
    """NC1–NC4 of one labelled feature matrix (see the module docstring for definitions).

    Attributes:
        n, dim, num_classes: N, D, C.
        nc1: ``tr(Σ_W Σ_B⁺)/C``.
        equinorm, equiangularity, max_angle: NC2.
        nc3: self-duality distance (``None`` without a classifier).
        nc4: classifier-vs-NCC disagreement (``None`` without a classifier).
        ncc_accuracy: nearest-class-centre accuracy on the same samples (``None`` unless NC4 ran).
    """

    n: int
    dim: int
    num_classes: int
    nc1: float
    equinorm: float
    equiangularity: float
    max_angle: float
    nc3: float | None = None
    nc4: float | None = None
    ncc_accuracy: float | None = None

    def to_rows(self) -> list[Row]:
        e, n = "neural_collapse", self.n
        rows = [
            Row(e, "nc1", self.nc1, "tr(Sw Sb+)/C;muG=mean-of-class-means;ddof=0", n),
            Row(e, "nc2_equinorm", self.equinorm, "cv;ddof=0", n),
            Row(e, "nc2_equiangularity", self.equiangularity, "std-cos;ddof=0", n),
            Row(e, "nc2_max_angle", self.max_angle, "mean|cos+1/(C-1)|", n),
        ]
        if self.nc3 is not None:
            rows.append(Row(e, "nc3_self_duality", self.nc3, "W-rowmean;frobenius^2", n))
        if self.nc4 is not None:
            rows.append(Row(e, "nc4_ncc_disagreement", self.nc4, "euclidean", n))
        if self.ncc_accuracy is not None:
            rows.append(Row(e, "ncc_top1", self.ncc_accuracy, "euclidean", n))
        return rows


def centered_class_means(m: Moments) -> np.ndarray:
    """``(C, D)`` class means minus their unweighted mean (``μ_G`` = mean of class means)."""
    if m.class_means is None:
        raise DinoevalError("these moments carry no classes; accumulate them with labels")
    return m.class_means - m.class_means.mean(axis=0, keepdims=True)


def nc1(m: Moments) -> float:
    """``tr(Σ_W Σ_B⁺) / C`` with a rank-``(C-1)`` pseudo-inverse of ``Σ_B`` (float64).

    ``Σ_B⁺`` comes from the thin SVD of ``M/√C = U S Vᵀ`` keeping the top ``C - 1`` singular
    values (fewer when the means are degenerate: those below ``S_max · max(C, D) · eps`` are
    dropped), so ``tr(Σ_W Σ_B⁺) = Σ_k v_kᵀ Σ_W v_k / s_k²``.
    """
    mc = centered_class_means(m)
    c = mc.shape[0]
    sigma_w = m.within_scatter / m.n
    _, s, vt = np.linalg.svd(mc / math.sqrt(c), full_matrices=False)
    tol = s.max() * max(mc.shape) * np.finfo(np.float64).eps if s.size else 0.0
    keep = min(c - 1, int((s > tol).sum()))
    if keep == 0:
        raise DinoevalError("all class means coincide; NC1 is undefined (the features do not "
                            "separate the classes at all)")
    v, s = vt[:keep], s[:keep]
    quad = np.einsum("kd,de,ke->k", v, sigma_w, v)
    return float(np.sum(quad / s**2) / c)


def nc2(m: Moments) -> tuple[float, float, float]:
    """``(equinorm, equiangularity, max_angle)`` of the centred class means (module docstring)."""
    mc = centered_class_means(m)
    c = mc.shape[0]
    norms = np.linalg.norm(mc, axis=1)
    if norms.min() <= 0:
        raise DinoevalError("a class mean equals the global mean; NC2 angles are undefined")
    equinorm = float(norms.std() / norms.mean())
    u = mc / norms[:, None]
    cos = (u @ u.T)[np.triu_indices(c, k=1)]
    return equinorm, float(cos.std()), float(np.mean(np.abs(cos + 1.0 / (c - 1))))


def nc3(m: Moments, weight: np.ndarray) -> float:
    """Self-duality ``‖W̃/‖W̃‖_F - M/‖M‖_F‖_F²``, ``W̃ = W - mean row``.

    Args:
        weight: ``(C, D)`` linear classifier (logits ``= h Wᵀ + b``).
    """
    mc = centered_class_means(m)
    w = np.asarray(weight, dtype=np.float64)
    if w.shape != mc.shape:
        raise DinoevalError(f"classifier weight has shape {w.shape}, expected (C, D) = "
                            f"{mc.shape}; train the probe on the same features")
    w = w - w.mean(axis=0, keepdims=True)
    wn, mn = np.linalg.norm(w), np.linalg.norm(mc)
    if wn == 0 or mn == 0:
        raise DinoevalError("NC3 is undefined for a zero classifier or coinciding class means")
    return float(np.sum((w / wn - mc / mn) ** 2))


def nc4(features: np.ndarray, class_means: np.ndarray, weight: np.ndarray,
        bias: np.ndarray | None = None, labels: np.ndarray | None = None, *,
        block_rows: int = DEFAULT_BLOCK_ROWS) -> tuple[float, float | None]:
    """Classifier-vs-NCC disagreement, streamed over row blocks.

    Args:
        features: ``(N, D)``.
        class_means: ``(C, D)``.
        weight: ``(C, D)``; bias: ``(C,)`` (zeros when omitted).
        labels: ``(N,)`` to also return the NCC accuracy.

    Returns:
        ``(disagreement in [0, 1], NCC accuracy or None)``.
    """
    x = check_features(features)
    mu = np.asarray(class_means, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)
    b = np.zeros(len(w)) if bias is None else np.asarray(bias, dtype=np.float64)
    if w.shape != mu.shape or w.shape[1] != x.shape[1] or b.shape != (len(w),):
        raise DinoevalError(f"classifier {w.shape}/{b.shape}, class means {mu.shape} and "
                            f"features {x.shape} do not match")
    mu_sq = np.einsum("cd,cd->c", mu, mu)
    differ = hits = 0
    for s, h in iter_blocks(x, block_rows):
        clf = np.argmax(h @ w.T + b, axis=1)
        ncc = np.argmin(mu_sq[None] - 2.0 * h @ mu.T, axis=1)  # ‖h‖² is common to all classes
        differ += int((clf != ncc).sum())
        if labels is not None:
            hits += int((ncc == labels[s : s + len(h)]).sum())
    return differ / len(x), (hits / len(x) if labels is not None else None)


def neural_collapse_from_moments(m: Moments, *, weight: np.ndarray | None = None) -> (
        NeuralCollapseStats):
    """NC1, NC2 (and NC3 when ``weight`` is given) from streamed labelled moments."""
    if m.class_counts is None:
        raise DinoevalError("neural collapse needs labelled moments")
    equinorm, equiang, max_angle = nc2(m)
    return NeuralCollapseStats(
        n=m.n, dim=m.dim, num_classes=len(m.class_counts), nc1=nc1(m), equinorm=equinorm,
        equiangularity=equiang, max_angle=max_angle,
        nc3=None if weight is None else nc3(m, weight))


def neural_collapse(features: np.ndarray, labels: np.ndarray, *,
                    weight: np.ndarray | None = None, bias: np.ndarray | None = None,
                    num_classes: int | None = None,
                    block_rows: int = DEFAULT_BLOCK_ROWS) -> NeuralCollapseStats:
    """NC1–NC4 of ``(N, D)`` features with ``(N,)`` labels (definitions: module docstring).

    Args:
        features: ``(N, D)`` array or memory-map, read in ``block_rows`` blocks (float64 sums).
        labels: ``(N,)`` ids in ``[0, C)``; every class needs a sample, ``C ≥ 2``, ``N ≥ C``.
        weight, bias: a trained linear classifier ``(C, D)``, ``(C,)`` on these features (e.g.
            :attr:`~dinoeval.eval.linear.LinearProbeResult.weight`) for NC3 and NC4.
        num_classes: C (default ``max(labels) + 1``).
    """
    x = check_features(features)
    y, c = check_labels(labels, len(x), num_classes)
    m = accumulate(x, y, num_classes=c, block_rows=block_rows)
    stats = neural_collapse_from_moments(m, weight=weight)
    if weight is None:
        return stats
    dis, ncc = nc4(x, m.class_means, weight, bias, y, block_rows=block_rows)
    return replace(stats, nc4=dis, ncc_accuracy=ncc)

"""SSL collapse statistics: is the representation spread over its dimensions, or collapsed?

Pure functions of ``(N, D)`` features (arrays or memory-maps, read in blocks) or of the streamed
:class:`~dinoeval.eval._moments.Moments`:

* :func:`rankme` — effective rank from the singular-value entropy (Garrido et al., 2023);
* :func:`alpha_req` — power-law decay exponent of the covariance spectrum (Agrawal et al., 2022);
* :func:`normalized_std` — mean per-dimension std of L2-normalised features (about ``1/√D`` when
  spread isotropically, 0 when collapsed to a point);
* :func:`alignment` / :func:`uniformity` — Wang & Isola (2020) on L2-normalised features;
* :class:`DinoHeadAccumulator` — DINO's own collapse monitors over the data: teacher entropy and
  ``KL(teacher ‖ student)``, plus which of the K prototypes the teacher actually uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from dinoeval.errors import DinoevalError
from dinoeval.eval._moments import (
    DEFAULT_BLOCK_ROWS,
    Moments,
    accumulate,
)
from dinoeval.eval._validation import check_features, check_finite
from dinoeval.results import Row

RANKME_EPS = 1e-7  # the ε of the RankMe paper


def singular_values_from_moments(m: Moments) -> np.ndarray:
    """``(min(N, D),)`` singular values of the uncentred feature matrix, descending (the square
    roots of the Gram matrix's eigenvalues; RankMe's spectrum)."""
    lam = np.linalg.eigvalsh(m.gram)[::-1][: min(m.n, m.dim)]
    return np.sqrt(np.clip(lam, 0.0, None))


def rankme_from_moments(m: Moments, *, eps: float = RANKME_EPS) -> float:
    """RankMe of the features behind ``m`` (see :func:`rankme`)."""
    return rankme_from_singular_values(singular_values_from_moments(m), eps=eps)


def rankme_from_singular_values(sigma: np.ndarray, *, eps: float = RANKME_EPS) -> float:
    """RankMe ``exp(-Σ p_k log p_k)``, ``p_k = σ_k / Σ σ + ε``, of ``(K,)`` singular values."""
    sigma = np.asarray(sigma, dtype=np.float64)
    total = sigma.sum()
    if total <= 0:
        return 1.0  # all-zero features: one direction at most
    p = sigma / total + eps
    return float(np.exp(-np.sum(p * np.log(p))))


def rankme(features: np.ndarray, *, eps: float = RANKME_EPS,
           block_rows: int = DEFAULT_BLOCK_ROWS) -> float:
    """RankMe effective rank, about ``[1, min(N, D)]`` (the ``ε`` lifts a flat spectrum of K
    values slightly above K: ``K = 768`` gives 768.3).

    ``σ_k`` are the singular values of the *uncentred* ``(N, D)`` feature matrix (as in the
    paper), ``p_k = σ_k / Σ_j σ_j + ε`` with ``ε = 1e-7``, and RankMe ``= exp(-Σ_k p_k log p_k)``
    over ``k ≤ min(N, D)``. Identical rows give 1; an isotropic Gaussian with ``N ≫ D`` gives
    nearly D. Computed from the float64 Gram matrix ``HᵀH`` accumulated over row blocks.

    Args:
        features: ``(N, D)``.
    """
    return rankme_from_moments(accumulate(features, block_rows=block_rows), eps=eps)


def covariance_spectrum(m: Moments) -> np.ndarray:
    """Eigenvalues (descending, clipped at 0) of the sample covariance ``scatter / (N - 1)``."""
    if m.n < 2:
        raise DinoevalError("a covariance needs at least 2 samples")
    lam = np.linalg.eigvalsh(m.scatter / (m.n - 1))[::-1]
    return np.clip(lam, 0.0, None)


def alpha_from_spectrum(eigenvalues: np.ndarray, *, rel_floor: float = 1e-10) -> float:
    """Least-squares slope ``α`` of ``log λ_i = -α log i + b`` over ``i = 1..r``.

    ``r`` counts the eigenvalues above ``rel_floor · λ_1`` (the numerical rank; exact zeros would
    send ``log λ`` to ``-∞``). Needs ``r ≥ 2``; a spectrum with one direction gives ``inf``.

    Args:
        eigenvalues: ``(D,)`` descending, non-negative.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    if len(lam) == 0 or lam[0] <= 0:
        return math.inf
    lam = lam[lam > rel_floor * lam[0]]
    if len(lam) < 2:
        return math.inf
    x = np.log(np.arange(1, len(lam) + 1))
    slope = np.polyfit(x, np.log(lam), 1)[0]
    return float(-slope)


def alpha_req(features: np.ndarray, *, block_rows: int = DEFAULT_BLOCK_ROWS) -> float:
    """α-ReQ: the power-law exponent of the covariance eigenspectrum ``λ_i ∝ i^{-α}``.

    Covariance with ``ddof=1`` (sample mean removed); the fit is ordinary least squares in
    log-log over the numerically non-zero eigenvalues (:func:`alpha_from_spectrum`). Small α:
    a flat (white) spectrum; large α: variance concentrated in few directions.

    Args:
        features: ``(N, D)``.
    """
    return alpha_from_spectrum(covariance_spectrum(accumulate(features, block_rows=block_rows)))


def normalized_std_from_moments(m: Moments) -> float:
    """Mean over dimensions of the per-dim std (``ddof=0``) of L2-normalised features."""
    mu = m.normed_sum / m.n
    var = np.clip(m.normed_sumsq / m.n - mu * mu, 0.0, None)
    return float(np.sqrt(var).mean())


def normalized_std(features: np.ndarray, *, block_rows: int = DEFAULT_BLOCK_ROWS) -> float:
    """Mean per-dimension std of ``z = h / ‖h‖`` (population std, ``ddof=0``).

    About ``1/√D`` for features spread isotropically (an isotropic Gaussian gives ``≈ 1/√D``),
    0 when every sample maps to the same direction (SimSiam's collapse monitor).

    Args:
        features: ``(N, D)``.
    """
    return normalized_std_from_moments(accumulate(features, block_rows=block_rows))


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def alignment(view1: np.ndarray, view2: np.ndarray, *, alpha: float = 2.0) -> float:
    """Wang & Isola alignment ``E_i ‖z_i - z'_i‖^α`` (lower is better), ``α = 2``.

    Args:
        view1, view2: ``(N, D)`` features of two augmented views of the same N images (row i of
            each is the same image); L2-normalised here.
    """
    a, b = check_features(view1, "view1"), check_features(view2, "view2")
    if a.shape != b.shape:
        raise DinoevalError(f"the two views differ in shape: {a.shape} vs {b.shape}")
    check_finite(a, "view1 features")
    check_finite(b, "view2 features")
    d = np.linalg.norm(_unit(a) - _unit(b), axis=1)
    return float(np.mean(d**alpha))


def uniformity(features: np.ndarray, *, t: float = 2.0, max_samples: int = 4096,
               seed: int = 0) -> float:
    """Wang & Isola uniformity ``log E_{i<j} exp(-t ‖z_i - z_j‖²)`` (lower is better), ``t = 2``.

    Exact over all pairs of a seeded sample of at most ``max_samples`` rows (all rows when
    ``N ≤ max_samples``); the sample size is reported by :class:`CollapseStats` as ``n``.
    Perfectly uniform features on the sphere approach ``-t·2 = -4`` as D grows; a collapsed
    representation gives 0.

    Args:
        features: ``(N, D)``, L2-normalised here; needs ``N ≥ 2``.
    """
    x = check_features(features)
    if len(x) < 2:
        raise DinoevalError("uniformity needs at least 2 samples")
    idx = np.arange(len(x))
    if len(x) > max_samples:
        idx = np.sort(np.random.default_rng(seed).choice(len(x), max_samples, replace=False))
    z = _unit(np.asarray(x[idx]))
    check_finite(z)
    m = len(z)
    # ‖z_i - z_j‖² = ‖z_i‖² + ‖z_j‖² - 2 z_i·z_j: 2 - 2 z_i·z_j for unit rows, and right for an
    # all-zero row too (it stays at the origin: distance 0 to another zero row, 1 to a unit row).
    # Every exponent is in [-4t, 0], so no max-shift is needed and the diagonal (exp 0 = 1 each)
    # is simply subtracted.
    sq = np.einsum("ij,ij->i", z, z)
    k = np.exp(-t * np.clip(sq[:, None] + sq[None, :] - 2.0 * (z @ z.T), 0.0, None))
    return float(np.log((k.sum() - np.trace(k)) / (m * (m - 1))))


@dataclass(frozen=True)
class CollapseStats:
    """Collapse statistics of one ``(N, D)`` feature matrix.

    Attributes:
        n, dim: N and D.
        rankme: RankMe effective rank (``ε = 1e-7``, uncentred singular values).
        alpha_req: covariance-spectrum power-law exponent (``ddof=1``).
        normalized_std: mean per-dim std of L2-normalised features (``ddof=0``).
        alignment, uniformity: Wang & Isola (``None`` when not computed).
        n_pairs: images behind the alignment; n_uniformity: rows behind the uniformity.
        singular_values: ``(min(N, D),)`` uncentred singular values behind RankMe, descending.
    """

    n: int
    dim: int
    rankme: float
    alpha_req: float
    normalized_std: float
    alignment: float | None = None
    uniformity: float | None = None
    n_pairs: int | None = None
    n_uniformity: int | None = None
    singular_values: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_rows(self) -> list[Row]:
        e = "collapse"
        rows = [
            Row(e, "rankme", self.rankme, "eps=1e-7", self.n),
            Row(e, "rankme_over_dim", self.rankme / self.dim, "", self.n),
            Row(e, "alpha_req", self.alpha_req, "ddof=1", self.n),
            Row(e, "normalized_std", self.normalized_std, "ddof=0", self.n),
            Row(e, "normalized_std_ref", 1.0 / math.sqrt(self.dim), "1/sqrt(D)", self.n),
            Row(e, "dim", float(self.dim), "", self.n),
        ]
        if self.alignment is not None:
            rows.append(Row(e, "alignment", self.alignment, "alpha=2", self.n_pairs))
        if self.uniformity is not None:
            rows.append(Row(e, "uniformity", self.uniformity, "t=2", self.n_uniformity))
        return rows


def collapse_stats_from_moments(m: Moments) -> CollapseStats:
    """RankMe, α-ReQ and the normalised std from streamed moments (no alignment/uniformity)."""
    sigma = singular_values_from_moments(m)
    return CollapseStats(n=m.n, dim=m.dim, rankme=rankme_from_singular_values(sigma),
                         alpha_req=alpha_from_spectrum(covariance_spectrum(m)),
                         normalized_std=normalized_std_from_moments(m), singular_values=sigma)


def collapse_stats(features: np.ndarray, *, views: tuple[np.ndarray, np.ndarray] | None = None,
                   uniformity_samples: int = 4096, seed: int = 0,
                   block_rows: int = DEFAULT_BLOCK_ROWS) -> CollapseStats:
    """All SSL collapse statistics of ``(N, D)`` features, streamed in one pass (needs N ≥ 2).

    Args:
        features: ``(N, D)``.
        views: two ``(P, D)`` arrays of features of two augmented views of the same P images,
            for the alignment; omitted -> no alignment.
        uniformity_samples: rows sampled (seeded) for the uniformity.
    """
    m = accumulate(features, block_rows=block_rows)
    base = collapse_stats_from_moments(m)
    align = n_pairs = None
    if views is not None:
        align, n_pairs = alignment(*views), len(views[0])
    uni = uniformity(features, max_samples=uniformity_samples, seed=seed)
    return CollapseStats(n=base.n, dim=base.dim, rankme=base.rankme, alpha_req=base.alpha_req,
                         normalized_std=base.normalized_std, alignment=align, uniformity=uni,
                         n_pairs=n_pairs, n_uniformity=min(len(features), uniformity_samples),
                         singular_values=base.singular_values)


# --------------------------------------------------------------------------- DINO head monitors


@dataclass(frozen=True)
class DinoHeadStats:
    """DINO's collapse monitors over a dataset (all entropies in nats).

    Attributes:
        n: images.
        num_prototypes: K.
        teacher_entropy: mean over images of ``H(P_t)``, ``P_t = softmax((g_t - c) / τ_t)``.
            Sharpening-only collapse sends it to 0; centering-only collapse to ``log K``.
        marginal_entropy: ``H(mean_i P_t)``, the entropy of the average teacher distribution
            (``log K`` when prototypes are used evenly).
        kl: mean ``KL(P_t ‖ P_s)``, ``P_s = softmax(g_s / τ_s)`` (``None`` without a student).
        prototypes_used: distinct teacher argmax prototypes over the data.
        assignments: ``(N,)`` teacher argmax prototype per image.
        teacher_temp, student_temp: τ_t and τ_s.
    """

    n: int
    num_prototypes: int
    teacher_entropy: float
    marginal_entropy: float
    kl: float | None
    prototypes_used: int
    assignments: np.ndarray = field(repr=False)
    teacher_temp: float
    student_temp: float

    def to_rows(self) -> list[Row]:
        e, t = "dino_head", f"tau_t={self.teacher_temp:g}"
        rows = [
            Row(e, "teacher_entropy", self.teacher_entropy, t, self.n),
            Row(e, "teacher_entropy_over_logK", self.teacher_entropy /
                math.log(self.num_prototypes), t, self.n),
            Row(e, "marginal_entropy", self.marginal_entropy, t, self.n),
            Row(e, "log_K", math.log(self.num_prototypes), "", self.n),
            Row(e, "prototypes_used", float(self.prototypes_used), t, self.n),
            Row(e, "num_prototypes", float(self.num_prototypes), "", self.n),
        ]
        if self.kl is not None:
            rows.append(Row(e, "kl_teacher_student", self.kl,
                            f"{t},tau_s={self.student_temp:g}", self.n))
        return rows


class DinoHeadAccumulator:
    """Streams ``(B, K)`` head logits into :class:`DinoHeadStats` (O(K) memory plus N ints).

    Args:
        center: ``(K,)`` or ``(1, K)`` DINO loss center (zeros when the checkpoint has none).
        teacher_temp: τ_t (0.04 is DINO's default final value).
        student_temp: τ_s (0.1 in DINO).
    """

    def __init__(self, center: np.ndarray | torch.Tensor, *, teacher_temp: float = 0.04,
                 student_temp: float = 0.1) -> None:
        if teacher_temp <= 0 or student_temp <= 0:
            raise DinoevalError("temperatures must be > 0")
        self.center = torch.as_tensor(np.asarray(center, dtype=np.float64)).reshape(-1)
        self.k = int(self.center.numel())
        if self.k < 2:
            raise DinoevalError("the DINO head needs K >= 2 prototypes")
        self.tt, self.ts = float(teacher_temp), float(student_temp)
        self.n = 0
        self.entropy_sum = 0.0
        self.kl_sum = 0.0
        self.has_student: bool | None = None
        self.prob_sum = torch.zeros(self.k, dtype=torch.float64)
        self.assign: list[np.ndarray] = []

    def update(self, teacher_logits: np.ndarray | torch.Tensor,
               student_logits: np.ndarray | torch.Tensor | None = None) -> None:
        """Add ``(B, K)`` teacher logits (before centering) and optionally the student's."""
        g = torch.as_tensor(teacher_logits).to(torch.float64)
        if g.ndim != 2 or g.shape[1] != self.k:
            raise DinoevalError(f"teacher logits have shape {tuple(g.shape)}, expected "
                                f"(B, {self.k})")
        if not torch.isfinite(g).all():
            raise DinoevalError("teacher logits contain NaN or inf; check the checkpoint")
        has_student = student_logits is not None
        if self.has_student is None:
            self.has_student = has_student
        elif self.has_student != has_student:
            raise DinoevalError("pass student logits for every block or for none")
        log_pt = torch.log_softmax((g - self.center) / self.tt, dim=1)
        pt = log_pt.exp()
        self.entropy_sum += float(-(pt * log_pt).sum())
        self.prob_sum += pt.sum(0)
        self.assign.append(log_pt.argmax(1).numpy())
        if has_student:
            s = torch.as_tensor(student_logits).to(torch.float64)
            if s.shape != g.shape:
                raise DinoevalError(f"student logits {tuple(s.shape)} differ from teacher "
                                    f"logits {tuple(g.shape)}")
            log_ps = torch.log_softmax(s / self.ts, dim=1)
            self.kl_sum += float((pt * (log_pt - log_ps)).sum())
        self.n += len(g)

    def result(self) -> DinoHeadStats:
        if self.n == 0:
            raise DinoevalError("no head outputs were accumulated")
        marginal = self.prob_sum / self.n
        marginal_h = float(-(marginal * torch.log(marginal.clamp_min(1e-300))).sum())
        assign = np.concatenate(self.assign).astype(np.int64)
        return DinoHeadStats(
            n=self.n, num_prototypes=self.k, teacher_entropy=self.entropy_sum / self.n,
            marginal_entropy=marginal_h, kl=self.kl_sum / self.n if self.has_student else None,
            prototypes_used=len(np.unique(assign)), assignments=assign,
            teacher_temp=self.tt, student_temp=self.ts)


def dino_head_stats(teacher_logits: np.ndarray | torch.Tensor, center: np.ndarray | torch.Tensor,
                    *, student_logits: np.ndarray | torch.Tensor | None = None,
                    teacher_temp: float = 0.04, student_temp: float = 0.1) -> DinoHeadStats:
    """:class:`DinoHeadStats` of in-memory ``(N, K)`` logits (see :class:`DinoHeadAccumulator`)."""
    acc = DinoHeadAccumulator(center, teacher_temp=teacher_temp, student_temp=student_temp)
    acc.update(teacher_logits, student_logits)
    return acc.result()

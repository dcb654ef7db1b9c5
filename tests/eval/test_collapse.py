"""SSL collapse statistics against hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dinoeval.errors import DinoevalError
from dinoeval.eval.collapse import (
    alignment,
    alpha_from_spectrum,
    alpha_req,
    collapse_stats,
    dino_head_stats,
    normalized_std,
    rankme,
    uniformity,
)


def test_identical_features_have_rankme_one_and_zero_spread():
    x = np.tile(np.array([[0.3, -1.2, 2.0, 0.5]] * 1, dtype=np.float32), (500, 1))
    x = np.concatenate([x, np.zeros((500, 380), dtype=np.float32) + 0.7], axis=1)  # D = 384
    assert rankme(x) == pytest.approx(1.0, abs=1e-2)
    assert normalized_std(x) == pytest.approx(0.0, abs=1e-7)
    assert uniformity(x) == pytest.approx(0.0, abs=1e-9)
    assert alpha_req(x) == math.inf


def test_rankme_by_hand_for_two_orthogonal_rows():
    # singular values 3 and 1 -> p = (3/4, 1/4) (+1e-7) -> exp(entropy)
    x = np.array([[3.0, 0.0], [0.0, 1.0]])
    p = np.array([0.75, 0.25]) + 1e-7
    assert rankme(x) == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-9)


def test_isotropic_gaussian_has_rankme_near_d_and_std_near_one_over_sqrt_d(seed):
    d = 32
    x = np.random.default_rng(seed).normal(size=(20_000, d))
    assert d * 0.97 < rankme(x) <= d
    assert normalized_std(x) == pytest.approx(1 / math.sqrt(d), rel=0.02)
    assert alpha_req(x) < 0.1  # flat spectrum


def test_alpha_req_recovers_an_exact_power_law(seed):
    n, d, alpha = 400, 24, 1.5
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, d)) - rng.normal(size=(n, d)).mean(0))
    q -= q.mean(0)  # centred, then re-orthonormalised: sample covariance exactly diag(λ)
    q, _ = np.linalg.qr(q)
    lam = np.arange(1, d + 1) ** -alpha
    x = math.sqrt(n - 1) * q * np.sqrt(lam) + 5.0
    assert alpha_req(x) == pytest.approx(alpha, rel=1e-6)
    assert alpha_from_spectrum(lam) == pytest.approx(alpha)


def test_streaming_equals_one_block(tmp_path, seed):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(257, 10)) @ rng.normal(size=(10, 10)) + 3).astype(np.float32)
    one = collapse_stats(x, block_rows=10_000)
    many = collapse_stats(x, block_rows=13)
    assert many.rankme == pytest.approx(one.rankme, rel=1e-10)
    assert many.alpha_req == pytest.approx(one.alpha_req, rel=1e-9)
    assert many.normalized_std == pytest.approx(one.normalized_std, rel=1e-10)
    # and against a direct computation of RankMe from the SVD
    s = np.linalg.svd(x.astype(np.float64), compute_uv=False)
    p = s / s.sum() + 1e-7
    assert one.rankme == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-8)


def test_alignment_and_uniformity_by_hand():
    z = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert alignment(z, 3 * z) == 0.0
    assert alignment(z, -z) == pytest.approx(4.0)  # antipodal: ‖z - (-z)‖² = 4
    assert uniformity(z) == pytest.approx(-4.0)  # orthogonal pair: log exp(-2·2)


def test_uniformity_with_all_zero_rows_by_hand():
    # Zero rows stay at the origin: all-zero features are fully collapsed (0, not the best -4).
    assert uniformity(np.zeros((5, 3))) == pytest.approx(0.0, abs=1e-12)
    # One zero row and one unit row: distance² 1, so log exp(-2·1) = -2.
    assert uniformity(np.array([[0.0, 0.0], [3.0, 0.0]])) == pytest.approx(-2.0)


def test_uniformity_sample_is_seeded_and_bounded(seed):
    x = np.random.default_rng(seed).normal(size=(3000, 8))
    a = uniformity(x, max_samples=500, seed=1)
    assert a == uniformity(x, max_samples=500, seed=1)
    assert a == pytest.approx(uniformity(x), abs=0.05)


def test_collapse_stats_rows_name_their_definitions(seed):
    x = np.random.default_rng(seed).normal(size=(100, 6))
    rows = collapse_stats(x, views=(x, x + 0.01)).to_rows()
    names = {r.metric: r for r in rows}
    assert names["rankme"].param == "eps=1e-7"
    assert names["normalized_std_ref"].value == pytest.approx(1 / math.sqrt(6))
    assert names["alignment"].value < 1e-3


def test_nan_features_are_refused():
    x = np.ones((5, 3))
    x[2, 1] = np.nan
    for f in (rankme, alpha_req, normalized_std, uniformity):
        with pytest.raises(DinoevalError, match="NaN"):
            f(x)
    with pytest.raises(DinoevalError, match="shape"):
        alignment(np.ones((4, 3)), np.ones((5, 3)))


def test_dino_head_uniform_logits_give_log_k_and_zero_kl():
    k = 16
    g = torch.zeros(10, k)
    s = dino_head_stats(g, torch.zeros(1, k), student_logits=g)
    assert s.teacher_entropy == pytest.approx(math.log(k))
    assert s.marginal_entropy == pytest.approx(math.log(k))
    assert s.kl == pytest.approx(0.0, abs=1e-12)


def test_dino_head_sharp_teacher_has_zero_entropy_and_counts_prototypes():
    k = 8
    g = torch.full((6, k), -100.0)
    proto = torch.tensor([0, 0, 3, 3, 3, 5])
    g[torch.arange(6), proto] = 100.0
    s = dino_head_stats(g, np.zeros(k))
    assert s.teacher_entropy == pytest.approx(0.0, abs=1e-12)
    assert s.prototypes_used == 3
    np.testing.assert_array_equal(s.assignments, proto.numpy())
    assert s.marginal_entropy == pytest.approx(
        -sum(p * math.log(p) for p in (2 / 6, 3 / 6, 1 / 6)))
    assert s.kl is None


def test_dino_head_kl_and_center_by_hand():
    # K=2; teacher logits (0, 0) with center (-0.04·ln 3, 0) at τ_t = 0.04 -> P_t = (3/4, 1/4);
    # student logits (0, 0) -> P_s = (1/2, 1/2): KL = 3/4 ln(3/2) + 1/4 ln(1/2).
    center = np.array([[-0.04 * math.log(3), 0.0]])
    s = dino_head_stats(np.zeros((1, 2)), center, student_logits=np.zeros((1, 2)))
    assert s.kl == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    assert s.teacher_entropy == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    with pytest.raises(DinoevalError, match="expected"):
        dino_head_stats(np.zeros((2, 3)), center)

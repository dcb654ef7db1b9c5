"""Neural-collapse statistics against hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest

from dinoeval.errors import DinoevalError
from dinoeval.eval._moments import accumulate
from dinoeval.eval.neural_collapse import nc1, nc2, neural_collapse


def simplex_etf(c: int, d: int, seed: int, *, scale: float = 3.0) -> np.ndarray:
    """``(C, D)`` centred class means forming a simplex ETF inside a random C-dim subspace."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((d, c)))
    m = np.sqrt(c / (c - 1)) * (np.eye(c) - np.ones((c, c)) / c)
    return scale * m @ u.T


def collapsed_features(means: np.ndarray, per_class: int, offset: np.ndarray):
    c = len(means)
    y = np.repeat(np.arange(c), per_class)
    return means[y] + offset, y


def reference_nc(x: np.ndarray, y: np.ndarray):
    """The definitions written out directly in float64 (in memory, no streaming)."""
    c = y.max() + 1
    mu = np.stack([x[y == k].mean(0) for k in range(c)])
    mg = mu.mean(0)
    centred = x - mu[y]
    sw = centred.T @ centred / len(x)
    m = mu - mg
    sb = m.T @ m / c
    w, v = np.linalg.eigh(sb)
    top = np.argsort(w)[::-1][: c - 1]
    sb_pinv = (v[:, top] / w[top]) @ v[:, top].T
    norms = np.linalg.norm(m, axis=1)
    u = m / norms[:, None]
    cos = (u @ u.T)[np.triu_indices(c, 1)]
    return (np.trace(sw @ sb_pinv) / c, norms.std() / norms.mean(), cos.std(),
            np.mean(np.abs(cos + 1 / (c - 1))))


def test_simplex_etf_has_zero_nc1_nc2_nc3_nc4(seed):
    c, d = 5, 12
    m = simplex_etf(c, d, seed)
    offset = np.random.default_rng(seed + 1).normal(size=d) * 10
    x, y = collapsed_features(m, per_class=7, offset=offset)
    bias = -offset @ m.T  # so the classifier W = M scores h = μ_c exactly as M_c · M_c'
    s = neural_collapse(x.astype(np.float32), y, weight=m, bias=bias)
    assert s.nc1 == pytest.approx(0.0, abs=1e-8)
    assert s.equinorm == pytest.approx(0.0, abs=1e-6)
    assert s.equiangularity == pytest.approx(0.0, abs=1e-6)
    assert s.max_angle == pytest.approx(0.0, abs=1e-6)
    assert s.nc3 == pytest.approx(0.0, abs=1e-10)
    assert s.nc4 == 0.0
    assert s.ncc_accuracy == 1.0


def test_nc1_two_classes_in_one_dimension_by_hand():
    # class 0 at -1 ± a, class 1 at +1 ± a: Σ_W = a², Σ_B = 1, NC1 = a² / 2.
    a = 0.5
    x = np.array([[-1 - a], [-1 + a], [1 - a], [1 + a]])
    y = np.array([0, 0, 1, 1])
    assert nc1(accumulate(x, y)) == pytest.approx(a * a / 2)


def test_nc2_of_a_non_etf_triangle_by_hand():
    # centred means e1, e2, -(e1+e2): norms 1, 1, √2; cosines 0, -1/√2, -1/√2.
    means = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    x, y = collapsed_features(means, per_class=2, offset=np.zeros(2))
    equinorm, equiang, max_angle = nc2(accumulate(x, y))
    norms = np.array([1, 1, np.sqrt(2)])
    assert equinorm == pytest.approx(norms.std() / norms.mean())
    assert equiang == pytest.approx(1 / 3)
    assert max_angle == pytest.approx((0.5 + 2 * (1 / np.sqrt(2) - 0.5)) / 3)


def test_streaming_equals_in_memory_reference(seed):
    rng = np.random.default_rng(seed)
    c, d = 4, 6
    y = rng.integers(0, c, size=203)
    y[:c] = np.arange(c)
    x = rng.normal(size=(203, d)) + 2.0 * rng.normal(size=(c, d))[y] + 50.0  # large offset
    ref = reference_nc(x, y)
    for block_rows in (7, 64, 10_000):
        s = neural_collapse(x, y, block_rows=block_rows)
        got = (s.nc1, s.equinorm, s.equiangularity, s.max_angle)
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)


def test_reads_memory_mapped_features(tmp_path, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    y = np.arange(300) % 3
    x[y == 1] += 3
    path = tmp_path / "f.dat"
    mm = np.memmap(path, dtype=np.float32, mode="w+", shape=x.shape)
    mm[:] = x
    mm.flush()
    ro = np.memmap(path, dtype=np.float32, mode="r", shape=x.shape)
    assert neural_collapse(ro, y, block_rows=32).nc1 == pytest.approx(
        neural_collapse(x, y).nc1, rel=1e-10)


def test_relabelling_classes_changes_nothing(seed):
    rng = np.random.default_rng(seed)
    y = np.arange(120) % 4
    x = rng.normal(size=(120, 8)) + 3 * rng.normal(size=(4, 8))[y]
    perm = np.array([2, 0, 3, 1])
    a, b = neural_collapse(x, y), neural_collapse(x, perm[y])
    np.testing.assert_allclose([a.nc1, a.equinorm, a.equiangularity, a.max_angle],
                               [b.nc1, b.equinorm, b.equiangularity, b.max_angle], rtol=1e-10)


def test_global_mean_is_the_mean_of_class_means_under_imbalance():
    # 3 samples at -1 and 1 sample at +1 (no spread): the centred means are ∓1 whatever the
    # imbalance, so the geometry is a perfect 2-class ETF.
    x = np.array([[-1.0], [-1.0], [-1.0], [1.0]])
    s = neural_collapse(x, np.array([0, 0, 0, 1]))
    assert s.equinorm == pytest.approx(0.0)
    assert s.max_angle == pytest.approx(0.0)


def test_nc3_is_zero_for_a_scaled_shifted_copy_of_the_means_and_four_for_the_opposite(seed):
    c, d = 4, 9
    m = simplex_etf(c, d, seed)
    x, y = collapsed_features(m, 3, np.zeros(d))
    shifted = 2.5 * m + np.random.default_rng(seed).normal(size=d)  # same row shift for all
    assert neural_collapse(x, y, weight=shifted).nc3 == pytest.approx(0.0, abs=1e-12)
    assert neural_collapse(x, y, weight=-m).nc3 == pytest.approx(4.0)


@pytest.mark.parametrize(("x", "y", "kw", "msg"), [
    (np.array([[np.nan, 0.0], [1.0, 1.0], [0.0, 1.0]]), [0, 1, 1], {}, "NaN"),
    (np.eye(3), [0, 0, 2], {}, "class 1 has no samples"),
    (np.eye(3), [0, 1, 1], {"num_classes": 4}, "samples but 4 classes"),
    (np.eye(3), [0, 0, 0], {}, "single class"),
    (np.eye(3), [0, 1, -1], {}, "no label"),
    (np.eye(3), [0, 1], {}, "must be (N,)"),
    (np.zeros((3, 2, 2)), [0, 1, 1], {}, "2-D"),
])
def test_bad_input_raises_a_clear_error(x, y, kw, msg):
    with pytest.raises(DinoevalError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        neural_collapse(x, np.array(y), **kw)


def test_classifier_of_the_wrong_shape_is_refused():
    x, y = np.eye(4), np.array([0, 0, 1, 1])
    with pytest.raises(DinoevalError, match="expected"):
        neural_collapse(x, y, weight=np.ones((3, 4)))


def test_streaming_memory_does_not_grow_with_the_number_of_samples(tmp_path, seed):
    import tracemalloc

    n, d, c = 40_000, 32, 5
    path = tmp_path / "big.dat"
    mm = np.memmap(path, dtype=np.float32, mode="w+", shape=(n, d))
    rng = np.random.default_rng(seed)
    for s in range(0, n, 10_000):
        mm[s : s + 10_000] = rng.normal(size=(10_000, d))
    mm.flush()
    x = np.memmap(path, dtype=np.float32, mode="r", shape=(n, d))
    y = np.arange(n) % c
    tracemalloc.start()
    neural_collapse(x, y, block_rows=1000)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < n * d * 8 / 4  # a float64 copy of the features would be 10 MB

"""PCA-whitening against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from dinoeval.errors import DinoevalError
from dinoeval.eval.whitening import learn_whitening


def test_whitening_gives_identity_covariance_on_its_training_set():
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(6, 6))
    x = rng.normal(size=(500, 6)) @ mix + 3.0
    w = learn_whitening(x)
    z = w.apply(x).astype(np.float64)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z.T @ z / len(z), np.eye(6), atol=1e-4)
    assert np.all(np.diff(w.eigenvalues) <= 0)


def test_whitening_power_zero_only_rotates_and_dim_truncates():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 5)) * np.array([5.0, 3.0, 1.0, 0.5, 0.1])
    w = learn_whitening(x, power=0.0, dim=2)
    z = w.apply(x)
    assert z.shape == (200, 2)
    # the two leading principal variances, unscaled
    np.testing.assert_allclose(z.var(0), w.eigenvalues, rtol=1e-4)
    assert w.eigenvalues[0] == pytest.approx(np.var(x[:, 0]), rel=0.05)


def test_whitening_refuses_bad_input():
    with pytest.raises(DinoevalError, match="at least 2"):
        learn_whitening(np.ones((1, 3)))
    with pytest.raises(DinoevalError, match="identical"):
        learn_whitening(np.ones((10, 3)))
    w = learn_whitening(np.random.default_rng(0).normal(size=(10, 3)))
    with pytest.raises(DinoevalError, match="3-dim"):
        w.apply(np.ones((2, 4)))


def test_few_rows_in_many_dims_use_the_svd_and_agree_with_the_covariance():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 200)) @ rng.normal(size=(200, 200))
    w = learn_whitening(x, dim=20)  # 30 rows <= 200 dims: the SVD path
    z = w.apply(x).astype(np.float64)
    np.testing.assert_allclose(z.T @ z / len(z), np.eye(20), atol=1e-4)
    xc = x - x.mean(0)
    ref = np.sort(np.linalg.eigvalsh(xc.T @ xc / len(x)))[::-1][:20]
    np.testing.assert_allclose(w.eigenvalues, ref, rtol=1e-6)

"""Linear probes: separable problems, the selection rule, agreement with scikit-learn."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from dinoeval.errors import DinoevalError
from dinoeval.eval.linear import LinearProbeConfig, linear_probe, stratified_split

SMALL_GRID = LinearProbeConfig(learning_rates=(1e-3, 1e-2, 0.1), weight_decays=(0.0, 1e-4),
                               epochs=5, batch_size=64)


def blobs(n: int, d: int, c: int, seed: int, *, spread: float = 0.3, shift: float = 0.0):
    rng = np.random.default_rng(seed)
    centers = 3 * rng.normal(size=(c, d))
    y = np.arange(n) % c
    x = centers[y] + spread * rng.normal(size=(n, d)) + shift
    return x.astype(np.float32), y


@pytest.mark.parametrize("mode", ["grid", "logreg"])
def test_probe_recovers_a_linearly_separable_problem(mode, seed):
    x, y = blobs(600, 16, 4, seed, shift=100.0)  # a large offset: standardisation copes
    xt, yt = blobs(200, 16, 4, seed)  # same centres (same seed), fresh noise
    xt = xt + 100.0
    cfg = replace(SMALL_GRID, mode=mode, cs=(0.01, 1.0))
    r = linear_probe(x, y, xt, yt, config=cfg)
    assert r.top1 == 1.0 and r.top5 == 1.0
    assert r.weight.shape == (4, 16) and r.bias.shape == (4,)
    # the returned classifier acts on raw features (standardisation folded in)
    np.testing.assert_array_equal(r.logits(xt).argmax(1), r.predictions)
    assert r.n_fit + r.n_val == 600 and r.n_test == 200


def test_grid_covers_every_setting_and_reports_rows(seed):
    x, y = blobs(300, 8, 3, seed)
    r = linear_probe(x, y, x[:30], y[:30], config=SMALL_GRID)
    assert len(r.val_top1) == 6
    rows = r.to_rows()
    assert {row.metric for row in rows} == {"top1", "top5", "val_top1", "val_top1_chosen",
                                            "chosen_lr", "chosen_wd"}
    # the chosen setting is metadata (chosen_* rows), not part of the score's key
    assert rows[0].param == "" and rows[0].eval == "linear-grid"
    chosen = {row.metric: row.value for row in rows if row.metric.startswith("chosen_")}
    assert chosen == {"chosen_lr": r.chosen["lr"], "chosen_wd": r.chosen["wd"]}


def test_default_grid_has_at_least_13_learning_rates():
    cfg = LinearProbeConfig()
    assert len(cfg.learning_rates) >= 13 and len(cfg.weight_decays) >= 2


def test_test_labels_never_influence_the_choice(seed):
    x, y = blobs(400, 8, 3, seed, spread=2.0)
    xt, yt = blobs(100, 8, 3, seed + 1, spread=2.0)
    a = linear_probe(x, y, xt, yt, config=SMALL_GRID)
    b = linear_probe(x, y, xt, np.roll(yt, 1), config=SMALL_GRID)
    assert a.chosen == b.chosen and a.val_top1 == b.val_top1
    np.testing.assert_array_equal(a.predictions, b.predictions)


def test_relabelling_classes_gives_the_same_accuracy(seed):
    x, y = blobs(300, 8, 3, seed, spread=2.5)
    perm = np.array([2, 0, 1])
    a = linear_probe(x, y, x, y, config=SMALL_GRID)
    b = linear_probe(x, perm[y], x, perm[y], config=SMALL_GRID)
    assert a.top1 == pytest.approx(b.top1, abs=1 / 300)


def test_logreg_mode_matches_scikit_learn_at_the_same_c(seed):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x, y = blobs(500, 10, 3, seed, spread=3.0)
    xt, yt = blobs(300, 10, 3, seed, spread=3.0)
    cfg = LinearProbeConfig(mode="logreg", cs=(0.05,), max_iter=500)
    ours = linear_probe(x, y, xt, yt, config=cfg)
    sc = StandardScaler().fit(x)
    ref = LogisticRegression(C=0.05, max_iter=2000, tol=1e-8).fit(sc.transform(x), y)
    agree = np.mean(ref.predict(sc.transform(xt)) == ours.predictions)
    assert agree >= 0.99
    assert ours.top1 == pytest.approx(ref.score(sc.transform(xt), yt), abs=0.01)


def test_stratified_split_holds_out_each_class(seed):
    y = np.repeat(np.arange(4), [10, 20, 1, 30])
    fit, val = stratified_split(y, 0.1, seed)
    assert len(np.intersect1d(fit, val)) == 0 and len(fit) + len(val) == len(y)
    assert np.bincount(y[val], minlength=4).tolist() == [1, 2, 0, 3]
    np.testing.assert_array_equal(val, stratified_split(y, 0.1, seed)[1])


@pytest.mark.parametrize(("mutate", "msg"), [
    (lambda x, y, xt, yt: (np.where(x > 2, np.nan, x), y, xt, yt), "NaN"),
    (lambda x, y, xt, yt: (x, y, xt[:, :4], yt), "dims"),
    (lambda x, y, xt, yt: (x, np.zeros_like(y), xt, np.zeros_like(yt)), "single class"),
    (lambda x, y, xt, yt: (x, np.where(y == 1, 2, y), xt, yt), "class 1 has no samples"),
    (lambda x, y, xt, yt: (x[:2], y[:2], xt, yt), "samples but 3 classes"),
])
def test_bad_input_raises_a_clear_error(mutate, msg, seed):
    x, y = blobs(60, 8, 3, seed)
    with pytest.raises(DinoevalError, match=msg):
        linear_probe(*mutate(x, y, x.copy(), y.copy()), config=SMALL_GRID)


def test_bad_config_is_refused(seed):
    x, y = blobs(60, 8, 3, seed)
    with pytest.raises(DinoevalError, match="mode"):
        linear_probe(x, y, x, y, config=LinearProbeConfig(mode="svm"))
    with pytest.raises(DinoevalError, match="--val-fraction"):
        linear_probe(x, y, x, y, config=LinearProbeConfig(val_fraction=0.0))

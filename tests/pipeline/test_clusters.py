"""The clustering runner: its config reaches every knob of the core, the silhouette seed too."""

from __future__ import annotations

import numpy as np
import pytest

from dinoeval.errors import DinoevalError
from dinoeval.eval.clusters import cluster_scores
from dinoeval.features import FeatureSet
from dinoeval.pipeline import ClusterConfig, evaluate_clusters


def _features(n=90, d=6, c=3):
    rng = np.random.default_rng(0)
    y = np.arange(n) % c
    x = (rng.standard_normal((c, d))[y] * 2 + rng.standard_normal((n, d))).astype(np.float32)
    return FeatureSet(features=x, labels=y, indices=np.arange(n))


def test_the_silhouette_seed_reaches_the_core():
    fs = _features()
    cfg = dict(seeds=(0,), silhouette_samples=20)
    a = evaluate_clusters(fs, ClusterConfig(**cfg, seed=0))
    b = evaluate_clusters(fs, ClusterConfig(**cfg, seed=1))
    ref = cluster_scores(fs.features, fs.labels, seeds=(0,), silhouette_samples=20, seed=1)
    assert b.to_rows() == ref.to_rows()
    assert a.silhouette != b.silhouette  # a different 20-row sample
    assert a.mean("nmi") == b.mean("nmi")  # the clustering itself does not depend on it


@pytest.mark.parametrize(("kw", "msg"), [({"seeds": ()}, "--seeds"), ({"seed": -1}, "seed"),
                                         ({"k": 1}, "--k"), ({"niter": 0}, "iteration")])
def test_cluster_config_refuses_bad_settings(kw, msg):
    with pytest.raises(DinoevalError, match=msg):
        ClusterConfig(**kw)

"""The paper's Fig. 7 on tiny data: centering alone -> uniform, sharpening alone -> one-hot."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from pretrain.loop import train_loop

K = 64


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_config) -> dict[str, pd.DataFrame]:
    out = {}
    for name, kw in {"both": {}, "no-centering": {"centering": False},
                     "no-sharpening": {"sharpening": False}}.items():
        cfg = tiny_config(epochs=5, epoch_images=256, knn_every=0, drop_path=0.0, lr=2e-3,
                          warmup_epochs=0, momentum_teacher=0.9, weight_decay=0.0,
                          weight_decay_end=0.0, out_dim=K, teacher_temp=0.04, seed=1, **kw)
        d = tmp_path_factory.mktemp(name)
        train_loop(cfg, d)
        log = pd.read_csv(d / "log.csv")
        out[name] = log[log["step"] > log["step"].max() // 2]  # the second half of the run
    return out


@pytest.mark.slow
def test_collapse_modes_match_the_paper(runs):
    h = {k: v["teacher_entropy"].mean() for k, v in runs.items()}
    kl = {k: v["kl"].mean() for k, v in runs.items()}
    log_k = math.log(K)
    assert h["no-centering"] < 0.05 * log_k  # one dimension dominates
    assert h["no-sharpening"] > 0.95 * log_k  # uniform
    assert h["no-centering"] + 0.5 < h["both"] < h["no-sharpening"] - 0.3  # in between
    # collapse of either kind makes the student match the teacher trivially: KL -> 0
    assert kl["both"] > 0.2
    assert kl["both"] > 2 * max(kl["no-centering"], kl["no-sharpening"])

"""``dinoeval linear``, ``clusters`` and ``collapse-stats`` end to end on tiny models and data."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from dinoeval.cli import app
from dinoeval.results import COLUMNS
from tests.conftest import DINO_K as K

runner = CliRunner()


def test_linear_compares_backbones_and_appends_rows(tmp_path):
    out = tmp_path / "res.csv"
    r = runner.invoke(app, ["linear", "--ckpt", "pixels", "--train", "digits:train",
                            "--val", "digits:test", "--lr", "0.03", "--lr", "0.3", "--wd", "0",
                            "--epochs", "3", "--out", str(out)])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out)
    assert list(df.columns) == list(COLUMNS)
    top1 = df[df.metric == "top1"]
    assert len(top1) == 1 and top1.value.iloc[0] > 0.9  # linear on raw digits pixels is strong
    assert set(df[df.metric == "val_top1"].param) == {"lr=0.03,wd=0", "lr=0.3,wd=0"}
    assert (tmp_path / "res.csv.config.json").exists()


@pytest.mark.slow
def test_linear_logreg_mode(tmp_path):
    r = runner.invoke(app, ["linear", "--ckpt", "pixels", "--train", "digits:train",
                            "--val", "digits:test[:100]", "--mode", "logreg", "--c", "0.1"])
    assert r.exit_code == 0, r.output
    assert "linear-logreg" in r.output


def test_clusters_scores_pixels_on_digits(tmp_path):
    out = tmp_path / "c.csv"
    r = runner.invoke(app, ["clusters", "--ckpt", "pixels", "--data", "digits:test",
                            "--seeds", "2", "--spherical", "--out", str(out)])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out)
    nmi = df[(df.metric == "nmi")].value.iloc[0]
    assert 0.5 < nmi <= 1.0
    assert {"ari", "accuracy", "purity", "silhouette", "nmi_std"} <= set(df.metric)


@pytest.mark.slow
def test_collapse_stats_side_by_side_with_head_views(tmp_path, dino_ckpt):
    out = tmp_path / "s.csv"
    r = runner.invoke(app, ["collapse-stats", "--ckpt", dino_ckpt, "--ckpt", "pixels",
                            "--data", "digits:train[:150]", "--align-pairs", "16",
                            "--feature", "cls", "--feature", "cls-last4",
                            "--img-size", "16", "--out", str(out)])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out)
    ours = df[df.backbone == dino_ckpt]
    assert set(ours.feature) == {"cls", "cls-last4", "head-bottleneck", "head-prototypes"}
    dims = ours[ours.metric == "dim"].set_index("feature").value
    assert dims["cls-last4"] == 2 * dims["cls"]  # a depth-2 model has 2 of the "last 4" blocks
    assert set(df[df.backbone == "pixels"].feature) == {"pixels"}  # pixels have one kind
    for feature in ("cls", "head-bottleneck"):
        metrics = set(ours[ours.feature == feature].metric)
        assert {"rankme", "alpha_req", "normalized_std", "alignment", "uniformity", "nc1",
                "nc2_equiangularity", "nc3_self_duality", "nc4_ncc_disagreement"} <= metrics
    proto = ours[ours.feature == "head-prototypes"].set_index("metric").value
    assert 0 <= proto["teacher_entropy"] <= proto["log_K"] + 1e-9
    assert proto["kl_teacher_student"] > 0  # the student's head differs from the teacher's
    assert 1 <= proto["prototypes_used"] <= K
    assert {"nmi", "ari", "accuracy", "purity"} <= set(proto.index)


@pytest.mark.parametrize(("args", "msg"), [
    (["linear", "--ckpt", "missing.pth", "--train", "digits:train", "--val", "digits:test"],
     "not found"),
    (["linear", "--ckpt", "pixels", "--train", "digits:train", "--val", "digits:test",
      "--mode", "svm"], "mode"),
    (["linear", "--ckpt", "pixels", "--train", "digits:train", "--val", "digits:test",
      "--val-fraction", "1.5"], "--val-fraction must be in (0, 1)"),
    (["linear", "--ckpt", "pixels", "--train", "digits:train", "--val", "digits:test",
      "--feature", "bogus"], "--feature must be one of"),
    (["clusters", "--ckpt", "pixels", "--data", "digits:test", "--seeds", "0"], "--seeds"),
    (["clusters", "--ckpt", "pixels", "--data", "nosuch:thing"], "unknown data source"),
    (["collapse-stats", "--ckpt", "pixels", "--data", "digits:test", "--align-pairs", "-1"],
     "--align-pairs"),
    (["collapse-stats", "--ckpt", "pixels", "--data", "digits:test", "--checkpoint-key", "ema"],
     "teacher or student"),
])
def test_bad_input_exits_2_with_a_message(args, msg):
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    assert msg in r.output.replace("\n", " "), r.output

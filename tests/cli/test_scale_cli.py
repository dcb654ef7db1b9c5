import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from dinoeval.cli import app
from dinoeval.data import get_source
from dinoeval.eval.knn import knn_classify
from dinoeval.features import extract_features
from dinoeval.models import load_backbone

runner = CliRunner()


@pytest.fixture
def ckpt(tmp_path, tiny_vit):
    p = tmp_path / "tiny.pth"
    torch.save(tiny_vit.state_dict(), p)
    return str(p)


def _extract(ckpt, data, out, *extra):
    return runner.invoke(app, ["extract-sharded", "--ckpt", ckpt, "--data", data, "--cache-dir", str(out),
                               "--img-size", "16", "--batch-size", "16", *extra])


def test_extract_sharded_by_hand_then_knn_bank_equals_in_memory(tmp_path, ckpt):
    train, val = tmp_path / "train", tmp_path / "val"
    r = _extract(ckpt, "digits:train[:150]", train, "--rank", "1", "--world-size", "2")
    assert r.exit_code == 0, r.output
    assert "not merged yet: run the other ranks with the same settings" in " ".join(r.output.split())
    assert "waiting" not in r.output
    r = _extract(ckpt, "digits:train[:150]", train, "--rank", "0", "--world-size", "2")
    assert r.exit_code == 0 and "150 x (192,)" in r.output, r.output
    assert _extract(ckpt, "digits:test[:40]", val).exit_code == 0
    bb = load_backbone(ckpt, img_size=16)
    ftr = extract_features(bb, get_source("digits:train[:150]"), batch_size=16)
    fva = extract_features(bb, get_source("digits:test[:40]"), batch_size=16)
    ref = knn_classify(ftr.features, ftr.labels, fva.features, fva.labels, ks=(5, 20),
                       num_classes=10)
    out = tmp_path / "res.csv"
    for dtype in ("float32", "bfloat16"):
        r = runner.invoke(app, ["knn-bank", "--train-feats", str(train), "--val-feats", str(val),
                                "--k", "5", "--k", "20", "--max-memory", "16GB",
                                "--bank-dtype", dtype, "--out", str(out)])
        assert r.exit_code == 0, r.output
    df = pd.read_csv(out)
    got = df[(df.metric == "top1") & (df.param == "k=20")].value.tolist()
    assert got[0] == pytest.approx(ref.top1[20])  # float32 bank: the in-memory accuracy
    assert abs(got[1] - ref.top1[20]) <= 0.05  # bfloat16 bank: close
    assert any(p.name == "features.bfloat16.npy" for p in train.rglob("*.npy"))
    assert np.isfinite(df.value).all()
    runs = json.loads((tmp_path / "res.csv.config.json").read_text())["runs"]
    assert [r["bank"]["bank_dtype"] for r in runs] == ["float32", "bfloat16"]
    assert runs[0]["knn"]["ks"] == [5, 20] and runs[0]["train_feats"] == str(train)


def test_scale_cli_errors_exit_2(tmp_path, ckpt):
    r = runner.invoke(app, ["knn-bank", "--train-feats", str(tmp_path / "none"),
                            "--val-feats", str(tmp_path / "none")])
    assert r.exit_code == 2 and "not found" in r.output
    r = _extract(ckpt, "digits:test[:20]", tmp_path / "c", "--rank", "0")
    assert r.exit_code == 2 and "--world-size" in r.output
    assert _extract(ckpt, "digits:test[:20]", tmp_path / "c").exit_code == 0
    r = runner.invoke(app, ["knn-bank", "--train-feats", str(tmp_path / "c"),
                            "--val-feats", str(tmp_path / "c"), "--max-memory", "lots"])
    assert r.exit_code == 2 and "memory size" in r.output
    r = runner.invoke(app, ["knn-bank", "--train-feats", str(tmp_path / "c"),
                            "--val-feats", str(tmp_path / "c"), "--max-memory", "100MB",
                            "--k", "5"])
    assert r.exit_code == 2 and "already uses" in r.output
    r = runner.invoke(app, ["knn-bank", "--train-feats", str(tmp_path / "c"),
                            "--val-feats", str(tmp_path / "c"), "--bank-dtype", "int8",
                            "--max-memory", "16GB"])
    assert r.exit_code == 2 and "--bank-dtype" in r.output

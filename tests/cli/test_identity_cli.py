"""Issue 14 §1: a row (and a cached feature) carries the network that made it.

Reproduction: teacher then student of one DINO training checkpoint into one cache and one
table. Before: the student run reused the teacher's cached features, both rows looked alike
and ``report`` merged them.
"""

from __future__ import annotations

import argparse
import json

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from dinoeval.cli import app
from dinoeval.models import ViTArch, build_vit
from dinoeval.results import COLUMNS, read_results

runner = CliRunner()


@pytest.fixture
def train_ckpt(tmp_path):
    arch = ViTArch(embed_dim=48, depth=1, num_heads=3, patch_size=4, img_size=(16, 16))
    torch.manual_seed(0)
    teacher, student = build_vit(arch), build_vit(arch)
    p = tmp_path / "checkpoint.pth"
    torch.save({"teacher": {f"backbone.{k}": v for k, v in teacher.state_dict().items()},
                "student": {f"module.backbone.{k}": v for k, v in student.state_dict().items()},
                "epoch": 1, "args": argparse.Namespace(arch="vit_tiny", patch_size=4)}, p)
    return str(p)


def test_teacher_and_student_rows_stay_apart(train_ckpt, tmp_path):
    out, cache = tmp_path / "r.csv", tmp_path / "cache"
    base = ["knn", "--ckpt", train_ckpt, "--train", "digits:train[:200]", "--val",
            "digits:test[:100]", "--img-size", "16", "--k", "3", "--cache-dir", str(cache),
            "--out", str(out)]
    for key in ("teacher", "student"):
        r = runner.invoke(app, [*base, "--checkpoint-key", key])
        assert r.exit_code == 0, r.output
    df = read_results(out)
    top1 = df[df.metric == "top1"].set_index("network")["value"]
    assert sorted(top1.index) == ["student", "teacher"]
    assert top1["student"] != top1["teacher"]  # not the teacher's cached features again
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 4
    row = df.iloc[0]
    assert (row.resolution, row.train_data, row.train_n, row.data, row.data_n) == (
        "16", "digits:train[:200]", 200, "digits:test[:100]", 100)
    cells = _top1_cells(out)
    assert sorted(c["network"] for c in cells) == ["student", "teacher"]  # never merged


def test_two_banks_are_two_rows(tmp_path):
    out = tmp_path / "r.csv"
    for n in (300, 100):
        r = runner.invoke(app, ["knn", "--ckpt", "pixels", "--train", f"digits:train[:{n}]",
                                "--val", "digits:test[:50]", "--k", "3", "--out", str(out)])
        assert r.exit_code == 0, r.output
    cells = _top1_cells(out)
    assert sorted(c["train_n"] for c in cells) == ["100", "300"]


def _top1_cells(path) -> list[dict]:
    """The report's top-1 cells; each must be a single run (two runs in one cell: merged)."""
    r = runner.invoke(app, ["report", str(path), "--eval", "knn", "--metric", "top1", "--json"])
    assert r.exit_code == 0, r.output
    cells = json.loads(r.output[r.output.index("{"):])["cells"]
    assert cells and all(c["runs"] == 1 for c in cells), cells
    return cells


def test_old_tables_without_identity_columns_still_load_and_report(tmp_path):
    old = pd.DataFrame([{"backbone": "pixels", "ckpt_hash": "h", "arch": "pixels",
                         "dataset": "digits", "split": "test", "feature": "pixels",
                         "eval": "knn", "metric": "top1", "param": "k=20", "value": 0.9, "n": 10,
                         "seconds": 1.0, "version": "0.1.0",
                         "timestamp": "2026-01-01T00:00:00+00:00"}])
    path = tmp_path / "old.csv"
    old.to_csv(path, index=False)
    df = read_results(path)
    assert list(df.columns) == list(COLUMNS) and df["train_n"].isna().all()
    assert (df["network"] == "").all()
    r = runner.invoke(app, ["report", str(path)])
    assert r.exit_code == 0, r.output


def test_report_warns_when_it_drops_rows_it_cannot_tell_apart(tmp_path):
    """Two values in one run (backbone, hash, timestamp) with nothing in any column to tell
    them apart: report keeps the last and says so; rows differing in an identity column are
    both kept and nothing is said."""
    row = {"backbone": "pixels", "ckpt_hash": "h", "arch": "pixels", "dataset": "digits",
           "split": "test", "feature": "pixels", "eval": "knn", "metric": "top1",
           "param": "k=20", "value": 0.9, "n": 10, "seconds": 1.0, "version": "0.1.0",
           "timestamp": "2026-01-01T00:00:00+00:00", "train_data": "digits:train[:300]",
           "train_n": 300}
    path = tmp_path / "r.csv"
    pd.DataFrame([row, {**row, "value": 0.5}]).to_csv(path, index=False)
    r = runner.invoke(app, ["report", str(path), "--json"])
    assert r.exit_code == 0, r.output
    assert "1 rows left out: measured again in one run with nothing in their columns to " \
           "tell them apart" in r.output.replace("\n", " ")
    cells = json.loads(r.stdout[r.stdout.index("{"):])["cells"]
    assert [c["mean"] for c in cells] == [0.5]  # the last kept
    pd.DataFrame([row, {**row, "value": 0.5, "train_data": "digits:train[:100]",
                        "train_n": 100}]).to_csv(path, index=False)
    r = runner.invoke(app, ["report", str(path), "--json"])
    assert r.exit_code == 0 and "left out" not in r.output
    assert sorted(c["mean"] for c in json.loads(r.stdout[r.stdout.index("{"):])["cells"]) == [
        0.5, 0.9]

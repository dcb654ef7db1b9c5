"""``--ckpt NAME=SPEC``: the name goes into the table's ``label`` column and names the backbone
in terminal tables and reports; the spec alone decides what is loaded and cached. (Every
evaluation command's NAME=SPEC is exercised in test_json_output.py.)"""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from dinoeval.cli import app
from dinoeval.cli._common import labelled_specs, parse_ckpt
from dinoeval.errors import DinoevalError
from dinoeval.models import ViTArch, build_vit
from dinoeval.results import COLUMNS, read_results

runner = CliRunner()
DIGITS = ["--train", "digits:train[:60]", "--val", "digits:test[:12]", "--k", "3"]


def test_the_parsing_rule(tmp_path):
    assert parse_ckpt("DINO=runs/a/checkpoint.pth") == ("DINO", "runs/a/checkpoint.pth")
    assert parse_ckpt("random init=random:vit_small") == ("random init", "random:vit_small")
    assert parse_ckpt("A=runs/lr=0.1/c.pth") == ("A", "runs/lr=0.1/c.pth")  # first '=' splits
    assert parse_ckpt("pixels") == ("", "pixels")
    # a '/' or '\' before the first '=' means a path, never a label
    assert parse_ckpt("runs/lr=0.1/c.pth") == ("", "runs/lr=0.1/c.pth")
    assert parse_ckpt("C:\\runs\\lr=0.1.pth") == ("", "C:\\runs\\lr=0.1.pth")
    # a file that exists wins, whatever its name
    odd = tmp_path / "lr=0.1.pth"
    odd.write_bytes(b"")
    assert parse_ckpt(str(odd)) == ("", str(odd))
    with pytest.raises(DinoevalError, match="no backbone after the label"):
        parse_ckpt("DINO=")
    specs, labels = labelled_specs(["A=pixels", "A=pixels", "random:vit_tiny"])
    assert specs == ["pixels", "random:vit_tiny"] and labels == {"pixels": "A"}
    with pytest.raises(DinoevalError, match="different labels"):
        labelled_specs(["A=pixels", "B=pixels"])


@pytest.fixture
def vit(tmp_path) -> str:
    arch = ViTArch(embed_dim=32, depth=1, num_heads=2, patch_size=8, img_size=(16, 16))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_vit(arch)
    path = tmp_path / "runs" / "a" / "checkpoint.pth"
    path.parent.mkdir(parents=True)
    torch.save(model.state_dict(), path)
    return str(path)


def test_labels_name_rows_tables_and_reports_but_not_the_cache(tmp_path, vit):
    out, cache = tmp_path / "res.csv", tmp_path / "cache"
    common = [*DIGITS, "--img-size", "16", "--cache-dir", str(cache), "--out", str(out)]
    r = runner.invoke(app, ["knn", "-c", f"My DINO={vit}", "-c", "raw=pixels", *common])
    assert r.exit_code == 0, r.output
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith("│")]
    assert {ln.split("│")[1].strip() for ln in rows} - {""} == {"My DINO", "raw"}  # folds
    assert "My DINO =" in r.stdout and "raw = pixels" in " ".join(r.stdout.split())
    entries = sorted(p.parent for p in cache.rglob("meta.json"))
    again = runner.invoke(app, ["knn", "-c", vit, "-c", "pixels", *common])
    assert again.exit_code == 0, again.output
    assert sorted(p.parent for p in cache.rglob("meta.json")) == entries  # same cache entries
    df = read_results(out)
    assert list(df.columns) == list(COLUMNS)
    first = df.iloc[: len(df) // 2]
    assert set(zip(first["backbone"], first["label"], strict=True)) == {(vit, "My DINO"),
                                                                         ("pixels", "raw")}
    assert (df.iloc[len(df) // 2:]["label"] == "").all()
    md = runner.invoke(app, ["report", str(out), "--eval", "knn"])
    assert md.exit_code == 0 and "My DINO" in md.stdout and "raw" in md.stdout
    page = tmp_path / "page.html"
    assert runner.invoke(app, ["report", str(out), "--html", str(page)]).exit_code == 0
    assert "My DINO" in page.read_text()


def test_tables_without_a_label_column_still_load(tmp_path):
    r = runner.invoke(app, ["knn", "-c", "pixels", *DIGITS, "--out", str(tmp_path / "r.csv")])
    assert r.exit_code == 0, r.output
    old = pd.read_csv(tmp_path / "r.csv").drop(columns="label")
    old.to_csv(tmp_path / "old.csv", index=False)
    df = read_results(tmp_path / "old.csv")
    assert list(df.columns) == list(COLUMNS) and (df["label"] == "").all()
    rep = runner.invoke(app, ["report", str(tmp_path / "old.csv")])
    assert rep.exit_code == 0 and "pixels" in rep.stdout

"""Issue 14's reproductions and pre-work checks, end to end through the CLI.

Classes are matched by name across splits; unlabelled folders are valid where no labels are
needed and refused (``needs labels``) where they are; every check that can be made from the
sources and options fires before any backbone runs (``get_features`` is replaced by a function
that fails the test).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dinoeval.cli import app

runner = CliRunner()
COLOURS = {"cat": (230, 20, 20), "dog": (20, 230, 20), "fox": (20, 20, 230), "owl": (230, 230, 0)}


def _folder(root, classes, n: int = 4, size: int = 16):
    """Solid-colour class folders (perfectly separable), a little noise per image."""
    rng = np.random.default_rng(len(str(root)))
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            img = np.clip(np.array(COLOURS[c]) + rng.integers(-10, 10, (size, size, 3)), 0, 255)
            Image.fromarray(img.astype(np.uint8)).save(root / c / f"{i}.png")
    return f"imagefolder:{root}"


def _error(r) -> str:
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    assert sum(ln.startswith("error:") for ln in r.output.splitlines()) == 1, r.output
    return r.output.replace("\n", " ")


@pytest.fixture
def no_forward(monkeypatch):
    """Fail the test if any runner reaches feature extraction."""
    import dinoeval.pipeline.clusters
    import dinoeval.pipeline.knn
    import dinoeval.pipeline.linear

    def never(*a, **k):
        raise AssertionError("a forward pass ran before the input was checked")

    for mod in (dinoeval.pipeline.knn, dinoeval.pipeline.linear, dinoeval.pipeline.clusters):
        monkeypatch.setattr(mod, "get_features", never)


@pytest.fixture
def ckpt(tmp_path, tiny_vit):
    p = tmp_path / "tiny.pth"
    torch.save(tiny_vit.state_dict(), p)
    return str(p)


def test_val_with_fewer_classes_scores_by_name_knn_and_linear(tmp_path):
    train = _folder(tmp_path / "train", ["cat", "dog", "fox"])
    val = _folder(tmp_path / "val", ["cat", "fox"])
    out = tmp_path / "r.csv"
    r = runner.invoke(app, ["knn", "--ckpt", "pixels", "--pixel-size", "16", "--train", train,
                            "--val", val, "--k", "1", "--per-class", "--out", str(out)])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out)
    assert df.loc[df.metric == "top1", "value"].item() == 1.0  # was 0.50: fox scored as dog
    assert sorted(df.loc[df.metric.str.startswith("recall"), "metric"]) == [
        "recall[cat]", "recall[fox]"]  # names, and no row for a class val lacks
    r = runner.invoke(app, ["linear", "--ckpt", "pixels", "--pixel-size", "16", "--train", train,
                            "--val", val, "--mode", "logreg", "--out", str(out)])
    assert r.exit_code == 0, r.output
    lin = pd.read_csv(out)
    assert lin.loc[lin["eval"].str.startswith("linear") & (lin.metric == "top1"), "value"].item() == 1.0


def test_val_class_missing_from_train_is_named_before_any_work(tmp_path, no_forward):
    train = _folder(tmp_path / "train", ["cat", "dog"], n=1)
    val = _folder(tmp_path / "val", ["cat", "owl"], n=1)
    for cmd in (["knn", "--k", "1"], ["linear"]):
        msg = _error(runner.invoke(app, [*cmd, "--ckpt", "pixels", "--train", train, "--val", val]))
        assert "class owl of --val" in msg and "(cat, dog)" in msg and "val" in msg


def test_flat_folder_extracts_and_is_refused_where_labels_are_needed(tmp_path, ckpt,
                                                                   monkeypatch):
    flat = tmp_path / "photos"
    flat.mkdir()
    for i in range(3):
        Image.new("RGB", (16, 16), (40 * i, 0, 0)).save(flat / f"{i}.png")
    r = runner.invoke(app, ["extract", "--ckpt", ckpt, "--data", f"imagefolder:{flat}",
                            "--cache-dir", str(tmp_path / "feats")])
    assert r.exit_code == 0, r.output
    labelled = _folder(tmp_path / "train", ["cat"], n=2)
    import dinoeval.pipeline.clusters
    import dinoeval.pipeline.knn

    def never(*a, **k):
        raise AssertionError("a forward pass ran before the labels were checked")

    monkeypatch.setattr(dinoeval.pipeline.knn, "get_features", never)
    monkeypatch.setattr(dinoeval.pipeline.clusters, "get_features", never)
    msg = _error(runner.invoke(app, ["knn", "--ckpt", ckpt, "--train", labelled, "--val",
                                     f"imagefolder:{flat}", "--k", "1"]))
    assert "needs labels: k-NN" in msg
    msg = _error(runner.invoke(app, ["clusters", "--ckpt", ckpt, "--data", f"imagefolder:{flat}"]))
    assert "needs labels: clustering" in msg


def test_pixels_on_equal_size_folder_needs_no_pixel_size(tmp_path):
    train = _folder(tmp_path / "train", ["cat", "dog"], n=2)
    val = _folder(tmp_path / "val", ["dog"], n=2)
    r = runner.invoke(app, ["knn", "--ckpt", "pixels", "--train", train, "--val", val, "--k", "1"])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize(("args", "msg"), [
    (["--train", "digits:train[:100]", "--val", "digits:test[:10]", "--k", "101"],
     "--k 101 is larger than the train set: --train digits:train[:100] has 100 images"),
    (["--train", "digits:train[:20]", "--val", "digits:test[:100]"],
     "--val classes 5, 6, 7 have no images in --train digits:train[:20]"),
    (["--train", "digits:train[:20]", "--val", "digits:test[:10]", "--feature", "patch"],
     "k-NN needs one vector per image"),
    (["--train", "digits:train[:20]", "--val", "digits:test[:9999]"],
     "asks for 9,999 images but digits:test has only 445"),
    (["--train", "digits", "--val", "digits"],
     "--val digits:all overlaps --train digits:all: 1,797 of its 1,797"),
    (["--train", "digits:train[:200]", "--val", "digits:train[:50]"],
     "50 of its 50 images are also train images"),
])
def test_knn_checks_fire_before_any_forward_pass(ckpt, no_forward, args, msg):
    r = runner.invoke(app, ["knn", "--ckpt", ckpt, "--ckpt", "pixels", *args])
    assert msg in _error(r)

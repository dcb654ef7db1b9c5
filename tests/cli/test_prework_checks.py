"""Checks that can be made from the specs, sizes and class lists fire before any forward pass
(issue 14 §4), for every command: the extraction code's forward pass and the attention maps are
replaced by a function that fails the test."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dinoeval.cli import app

runner = CliRunner()
UNWRITABLE = "/proc/dinoeval-no/such"  # os.access says yes to root; creating a file fails


@pytest.fixture
def no_forward(monkeypatch):
    import dinoeval.features.extract as ex
    import dinoeval.features.sharded as sh
    import dinoeval.pipeline.attention as at
    import dinoeval.pipeline.dense as de
    import dinoeval.pipeline.video_seg as vs

    def never(*a, **k):
        raise AssertionError("a forward pass ran before the input was checked")

    for mod in (ex, sh):
        monkeypatch.setattr(mod, "forward_features", never)
    monkeypatch.setattr(at, "_extract", never)
    for mod in (de, vs):
        monkeypatch.setattr(mod, "patch_grid", never)


@pytest.fixture
def vit(tmp_path, tiny_vit):
    p = tmp_path / "vit.pth"
    torch.save(tiny_vit.state_dict(), p)
    return str(p)


def _error(r) -> str:
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and "forward pass ran" not in r.output, r.output
    return r.output.replace("\n", " ")


def _mixed_sizes(root, classes=("cat", "dog"), n: int = 3):
    """Class folders of images of two sizes (16x16 and 20x16)."""
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            size = (16, 16) if i % 2 else (20, 16)
            img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            Image.fromarray(img).save(root / c / f"{i}.png")
    return f"imagefolder:{root}"


@pytest.mark.parametrize("command", ["knn", "linear", "clusters", "collapse-stats", "retrieval"])
def test_pixels_without_pixel_size_refused_before_the_first_backbone_runs(
        tmp_path, vit, no_forward, command):
    train = _mixed_sizes(tmp_path / "train")
    val = _mixed_sizes(tmp_path / "val")
    data = {"knn": ["--train", train, "--val", val, "--k", "1"],
            "linear": ["--train", train, "--val", val],
            "clusters": ["--data", train], "collapse-stats": ["--data", train],
            "retrieval": ["--query", val]}[command]
    # pixels second: before, the ViT's features were extracted first
    msg = _error(runner.invoke(app, [command, "--ckpt", vit, "--ckpt", "pixels", *data]))
    assert "images differ in size; pass --pixel-size N" in msg


def test_attention_refuses_a_backbone_without_attention_before_any_is_run(tmp_path, vit,
                                                                          no_forward):
    for ckpts in (["--ckpt", vit, "--ckpt", "pixels"], ["--ckpt", "pixels", "--ckpt", vit]):
        msg = _error(runner.invoke(app, ["attention", *ckpts, "--data",
                                         "shapes:test@n=2,size=16", "--report-dir",
                                         str(tmp_path / "attn")]))
        assert "pixels has no attention" in msg
    msg = _error(runner.invoke(app, ["attention", "--ckpt", vit, "--ckpt", f"random:{vit}",
                                     "--block", "5", "--data", "shapes:test@n=2,size=16",
                                     "--report-dir", str(tmp_path / "attn")]))
    assert "--block 5 out of range" in msg


OUT_CASES = {  # every command with an output table or folder, and its other arguments
    "knn": (["--train", "digits:train[:40]", "--val", "digits:test[:8]", "--k", "1"], "--out"),
    "linear": (["--train", "digits:train[:40]", "--val", "digits:test[:8]"], "--out"),
    "clusters": (["--data", "digits:test[:8]"], "--out"),
    "collapse-stats": (["--data", "digits:test[:8]"], "--out"),
    "retrieval": (["--query", "digits:test[:8]"], "--out"),
    "copy-detection": (["--data", "digits:test[:8]", "--originals", "2"], "--out"),
    "video-seg": (["--data", "moving-shapes@videos=1,frames=3,height=32,width=32"], "--out"),
    "dense": (["--train", "shapes:train@n=4,size=16", "--test", "shapes:test@n=2,size=16"],
              "--out"),
    "extract": (["--data", "digits:test[:8]"], "--cache-dir"),
    "extract-sharded": (["--data", "digits:test[:8]"], "--cache-dir"),
    "attention": (["--data", "shapes:test@n=2,size=16", "--report-dir", "{tmp}/attn"], "--out"),
    "attention-folder": (["--data", "shapes:test@n=2,size=16"], "--report-dir"),
    "knn-bank": (["--train-feats", "{tmp}/none", "--val-feats", "{tmp}/none"], "--out"),
}


@pytest.mark.parametrize("case", list(OUT_CASES))
def test_an_unwritable_out_is_refused_before_the_work(tmp_path, vit, no_forward, case):
    args, flag = OUT_CASES[case]
    command = case.removesuffix("-folder")
    name = "r.csv" if case in (
        "attention", "knn", "linear", "clusters", "collapse-stats", "retrieval", "copy-detection",
        "video-seg", "dense", "knn-bank") else "dir"
    ckpt = [] if command == "knn-bank" else ["--ckpt", vit]
    argv = [command, *ckpt, *[a.format(tmp=tmp_path) for a in args], flag,
            f"{UNWRITABLE}/{name}"]
    msg = _error(runner.invoke(app, argv))
    assert "is not writable" in msg


def test_a_failed_final_write_prints_the_table_first(tmp_path, monkeypatch):
    import dinoeval.results
    from dinoeval.errors import DinoevalError

    def full(path, df):
        raise DinoevalError(f"cannot write results file {path}: No space left on device")

    monkeypatch.setattr(dinoeval.results, "append_results", full)
    r = runner.invoke(app, ["knn", "--ckpt", "pixels", "--train", "digits:train[:40]", "--val",
                            "digits:test[:8]", "--k", "1", "--out", str(tmp_path / "r.csv")])
    assert r.exit_code == 2 and "No space left" in r.output
    assert "NOT written" in r.output and "top1" in r.output  # the numbers are not lost


def test_neural_collapse_required_on_unlabelled_data_is_refused_first(tmp_path, vit,
                                                                      no_forward):
    flat = tmp_path / "photos"
    flat.mkdir()
    for i in range(4):
        Image.new("RGB", (16, 16), (40 * i, 0, 0)).save(flat / f"{i}.png")
    msg = _error(runner.invoke(app, ["collapse-stats", "--ckpt", vit, "--data",
                                     f"imagefolder:{flat}", "--neural-collapse"]))
    assert "needs labels: neural collapse" in msg and "has no labels" in msg
    one = tmp_path / "one"
    (one / "cat").mkdir(parents=True)
    Image.new("RGB", (16, 16)).save(one / "cat" / "0.png")
    Image.new("RGB", (16, 16)).save(one / "cat" / "1.png")
    msg = _error(runner.invoke(app, ["collapse-stats", "--ckpt", vit, "--data",
                                     f"imagefolder:{one}", "--neural-collapse"]))
    assert "holds a single class" in msg


def test_neural_collapse_by_default_is_skipped_on_unlabelled_data_with_a_note(tmp_path, vit):
    flat = tmp_path / "photos"
    flat.mkdir()
    for i in range(4):
        Image.new("RGB", (16, 16), (40 * i, 0, 0)).save(flat / f"{i}.png")
    r = runner.invoke(app, ["collapse-stats", "--ckpt", vit, "--data", f"imagefolder:{flat}",
                            "--align-pairs", "0"])
    assert r.exit_code == 0, r.output
    assert "has no labels: neural-collapse statistics skipped" in r.output.replace("\n", " ")


def test_cluster_count_beyond_the_data_is_refused_first(vit, no_forward):
    msg = _error(runner.invoke(app, ["clusters", "--ckpt", vit, "--ckpt", "pixels", "--data",
                                     "digits:test[:6]", "--k", "20"]))
    assert "k-means needs 2 <= k <= N clusters: --k 20, and digits:test[:6] has 6 images" in msg


def test_linear_probe_on_train_lacking_some_listed_classes(tmp_path):
    """digits:train[:12] holds 5 of the 10 digit classes: the probe has those 5 outputs (was
    refused after extraction: 'class 3 has no samples'); one class only is refused first."""
    r = runner.invoke(app, ["linear", "--ckpt", "pixels", "--train", "digits:train[:12]",
                            "--val", "digits:test[:2]", "--epochs", "1", "--lr", "0.1"])
    assert r.exit_code == 0, r.output
    one = tmp_path / "one"
    for split in ("train", "val"):
        (one / split / "cat").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(one / split / "cat" / "0.png")
    msg = _error(runner.invoke(app, ["linear", "--ckpt", "pixels", "--train",
                                     f"imagefolder:{one / 'train'}", "--val",
                                     f"imagefolder:{one / 'val'}"]))
    assert "needs train images of 2 or more classes" in msg and "has cat" in msg

"""Bad input to every command: one line naming the thing and the fix, exit code 2, nothing lost.

Each case here was a traceback, a silent wrong answer or a lost file before it was fixed.
"""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dinoeval.cli import app

runner = CliRunner()
KNN = ["knn", "--train", "digits:train[:200]", "--val", "digits:test[:40]", "--k", "5"]


@pytest.fixture
def ckpt(tmp_path, tiny_vit):
    p = tmp_path / "tiny.pth"
    torch.save(tiny_vit.state_dict(), p)
    return str(p)


def _one_line_error(r, code: int = 2) -> str:
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output, r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, r.output
    return r.output.replace("\n", " ")


def _folder(root, *, bad_name: str = "broken.jpg"):
    for cls, n in (("a", 3), ("b", 3)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(root / cls / f"{i}.png")
    (root / "a" / bad_name).write_bytes(b"not a jpeg at all")
    return f"imagefolder:{root}"


@pytest.mark.parametrize(("extra", "msg"), [
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--workers", "-1"], "--workers must be >= 0"),
    (["--precision", "fp8"], "--precision must be fp32 or bf16"),
    (["--device", "gpu"], "'gpu' is not a torch device"),
    (["--k", "0"], "--k must be >= 1"),
    (["--temperature", "0"], "--temperature must be > 0"),
    (["--img-size", "30"], "not a multiple of the patch size 4"),
    (["--img-size", "-8"], "--img-size must be > 0"),
    (["--num-heads", "7"], "--num-heads 7 does not divide the width 192"),
    (["--weights", "w.pth"], "--weights is the state dict of a timm:NAME backbone"),
    (["--pixel-size", "8"], "--pixel-size resizes the pixels backbone"),
    (["--out", "res.txt"], "must end in .csv or .parquet"),
])
def test_knn_option_errors(ckpt, extra, msg):
    assert msg in _one_line_error(runner.invoke(app, [*KNN, "--ckpt", ckpt, *extra]))


def test_cuda_without_a_gpu_is_one_line():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = _one_line_error(runner.invoke(app, [*KNN, "--ckpt", "pixels", "--device", "cuda"]))
    assert "no CUDA GPU is visible here; use --device cpu" in out
    out = _one_line_error(runner.invoke(app, ["pretrain", "--run-dir", "never", "--device", "gpu"]))
    assert "'gpu' is not a torch device" in out


def test_bad_out_fails_before_any_feature_is_extracted(ckpt, tmp_path, monkeypatch):
    import dinoeval.pipeline.knn

    def never(*a, **k):
        raise AssertionError("features were extracted before --out was checked")

    monkeypatch.setattr(dinoeval.pipeline.knn, "get_features", never)
    (tmp_path / "afile").write_text("x")
    for out, msg in ((tmp_path / "r.txt", ".csv or .parquet"),
                     (tmp_path / "afile" / "r.csv", "is a file, not a folder"),
                     (tmp_path, "is a folder")):
        assert msg in _one_line_error(runner.invoke(app, [*KNN, "--ckpt", ckpt, "--out",
                                                          str(out)]))
    not_results = tmp_path / "other.csv"
    not_results.write_text("a,b\n1,2\n")
    assert "not a dinoeval results table" in _one_line_error(
        runner.invoke(app, [*KNN, "--ckpt", ckpt, "--out", str(not_results)]))
    assert not_results.read_text() == "a,b\n1,2\n"


def test_checkpoint_with_wrong_shapes_or_empty_file(tmp_path, tiny_vit):
    sd = tiny_vit.state_dict()
    sd["blocks.0.attn.qkv.weight"] = sd["blocks.0.attn.qkv.weight"][:100]
    torch.save(sd, tmp_path / "badshape.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    out = _one_line_error(runner.invoke(app, [*KNN, "--ckpt", str(tmp_path / "badshape.pth")]))
    assert "blocks.0.attn.qkv.weight (100, 192) (model (576, 192))" in out
    out = _one_line_error(runner.invoke(app, [*KNN, "--ckpt", str(tmp_path / "empty.pth")]))
    assert "is an empty file" in out


def test_pretrain_resume_of_an_empty_checkpoint(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pth").write_bytes(b"")
    out = _one_line_error(runner.invoke(app, ["pretrain", "--resume", str(run)]))
    assert "is an empty file" in out and "weights_only=False" not in out


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_image_is_one_line_with_workers_and_brackets_survive(tmp_path, workers):
    data = _folder(tmp_path / "imgs", bad_name="photo[edited].jpg")
    val = _folder(tmp_path / "val", bad_name="other.jpg")  # the same folder twice: overlap
    r = runner.invoke(app, ["knn", "--ckpt", "random:vit_tiny_p4_28", "--train", data, "--val",
                            val, "--k", "3", "--img-size", "16", "--workers", str(workers)])
    out = _one_line_error(r)
    assert "photo[edited].jpg" in out and "--skip-bad-images" in out


def test_attention_bad_image_hint_names_no_missing_option(tmp_path):
    _folder(tmp_path / "imgs")
    r = runner.invoke(app, ["attention", "--ckpt", "random:vit_tiny_p4_28", "--images",
                            str(tmp_path / "imgs" / "a" / "broken.jpg"), "--out",
                            str(tmp_path / "attn")])
    out = _one_line_error(r)
    assert "broken.jpg" in out and "--skip-bad-images" not in out


def test_test_class_without_train_samples_is_an_error():
    r = runner.invoke(app, ["knn", "--ckpt", "pixels", "--train",
                            "shapes:train@n=64,size=32,classes=3,seed=0", "--val",
                            "shapes:test@n=32,size=32,classes=5,seed=0", "--k", "5"])
    assert "classes star, cross of --val" in _one_line_error(r)  # named, before any work


@pytest.mark.parametrize(("args", "msg"), [
    (["linear", "--ckpt", "pixels", "--train", "digits:train", "--val", "digits:test",
      "--seed", "-1"], "--seed must be >= 0"),
    (["linear", "--ckpt", "pixels", "--train", "digits:train", "--val", "digits:test",
      "--epochs", "0"], "--epochs of the linear probe must be >= 1"),
    (["clusters", "--ckpt", "pixels", "--data", "digits:test", "--k", "0"], "--k must be >= 2"),
    (["clusters", "--ckpt", "pixels", "--data", "digits:test", "--silhouette-samples", "-1"],
     "--silhouette-samples must be >= 0"),
    (["collapse-stats", "--ckpt", "pixels", "--data", "digits:test", "--seed", "-1"],
     "--seed must be >= 0"),
    (["demo", "--linear-epochs", "0"], "--linear-epochs must be >= 1"),
])
def test_stats_and_demo_option_errors(args, msg):
    assert msg in _one_line_error(runner.invoke(app, args))


def test_outputs_that_are_files_or_folders(tmp_path):
    (tmp_path / "afile").write_text("x")
    afile = str(tmp_path / "afile")
    cases = [
        (["extract", "--ckpt", "pixels", "--data", "digits:test", "--cache-dir", afile],
         "is a file"),
        (["attention", "--ckpt", "random:vit_tiny_p4_28", "--data",
          "shapes:test@n=4,size=32,classes=3,seed=0", "--report-dir", afile], "is a file"),
        (["demo", "--report-dir", afile, "--train", "shapes:train@n=40", "--test", "shapes:test@n=20"],
         "is a file"),
    ]
    for args, msg in cases:
        assert msg in _one_line_error(runner.invoke(app, args))
    assert (tmp_path / "afile").read_text() == "x"


def test_report_never_overwrites_its_input(tmp_path):
    res = tmp_path / "res.csv"
    assert runner.invoke(app, [*KNN, "--ckpt", "pixels", "--out", str(res)]).exit_code == 0
    before = res.read_text()
    for opt in ("--save", "--html"):
        out = _one_line_error(runner.invoke(app, ["report", str(res), opt, str(res)]))
        assert "is one of the input tables" in out
    assert res.read_text() == before
    (tmp_path / "notalog.txt").write_text("hello\n")
    out = _one_line_error(runner.invoke(app, ["report", str(res), "--html",
                                              str(tmp_path / "r.html"), "--pretrain-log",
                                              str(tmp_path / "notalog.txt")]))
    assert "has no loss, entropy, KL or k-NN column" in out


def test_config_sidecar_keeps_every_run(tmp_path):
    res = tmp_path / "res.csv"
    for t in ("0.07", "0.1"):
        r = runner.invoke(app, [*KNN, "--ckpt", "pixels", "--temperature", t, "--out", str(res)])
        assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["clusters", "--ckpt", "pixels", "--data", "digits:test[:40]",
                            "--seeds", "1", "--out", str(res)])
    assert r.exit_code == 0, r.output
    runs = json.loads((tmp_path / "res.csv.config.json").read_text())["runs"]
    assert [r["knn"]["temperature"] for r in runs[:2]] == [0.07, 0.1]
    assert "clusters" in runs[2] and "knn" not in runs[2]
    assert (pd.read_csv(res)["eval"] == "knn").sum() == 2 * 2  # both runs' top1 and top5 kept


def test_knn_bank_truncated_features(tmp_path):
    for split in ("train", "test"):
        r = runner.invoke(app, ["extract", "--ckpt", "pixels", "--data", f"digits:{split}[:50]",
                                "--out", str(tmp_path / split)])
        assert r.exit_code == 0, r.output
    feats = next((tmp_path / "train").rglob("features.npy"))
    feats.write_bytes(feats.read_bytes()[:-100])
    # a generous --max-memory: the budget must not depend on how big this pytest process is
    out = _one_line_error(runner.invoke(app, ["knn-bank", "--train-feats", str(tmp_path / "train"),
                                              "--val-feats", str(tmp_path / "test"), "--k", "5",
                                              "--max-memory", "64GB"]))
    assert "truncated" in out and "extract the features again" in out


def test_an_unexpected_exception_is_one_line_exit_1_and_debug_shows_it(monkeypatch):
    import dinoeval.pipeline

    def boom(*a, **k):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(dinoeval.pipeline, "run_knn", boom)
    out = _one_line_error(runner.invoke(app, [*KNN, "--ckpt", "pixels"]), code=1)
    assert "unexpected RuntimeError: boom (a dinoeval bug; rerun with DINOEVAL_DEBUG=1" in out
    assert "second line" not in out
    monkeypatch.setenv("DINOEVAL_DEBUG", "1")
    r = runner.invoke(app, [*KNN, "--ckpt", "pixels"])
    assert r.exit_code == 1 and "Traceback (most recent call last)" in r.output
    assert "RuntimeError: boom" in r.output

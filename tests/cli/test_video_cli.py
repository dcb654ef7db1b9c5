"""dinoeval video-seg / dense: tables, rows appended, masks written, bad input exits 2 first."""

import pandas as pd
from typer.testing import CliRunner

from dinoeval.cli import app
from dinoeval.results import COLUMNS

runner = CliRunner()
VIDEOS = "moving-shapes@videos=1,frames=4,height=32,width=32,objects=2"


def test_video_seg_cli_appends_rows_and_writes_masks(tmp_path):
    out = tmp_path / "res.csv"
    r = runner.invoke(app, ["video-seg", "--ckpt", "pixels", "--data", VIDEOS,
                            "--pixel-patch", "4", "--out", str(out),
                            "--masks-dir", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out)
    assert list(df.columns) == list(COLUMNS)
    assert {"J&F-mean", "J-mean", "F-mean", "J-recall", "J-decay"} <= set(df.metric)
    assert "J&F-mean" in r.output
    assert len(list((tmp_path / "m" / "shapes000").glob("*.png"))) == 4


def test_dense_cli(tmp_path):
    out = tmp_path / "res.csv"
    r = runner.invoke(app, ["dense", "--ckpt", "pixels", "--train", "shapes:train@n=8,size=32",
                            "--test", "shapes:test@n=4,size=32", "--method", "knn", "--k", "3",
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out)
    assert set(df["eval"]) == {"dense-knn"} and "mIoU" in set(df.metric)


def test_bad_input_exits_2_before_work(tmp_path):
    cases = [
        (["video-seg", "--ckpt", "pixels", "--topk", "0"], "--topk"),
        (["video-seg", "--ckpt", "pixels", "--data", f"davis:{tmp_path}"], "no video list"),
        (["video-seg", "--ckpt", "pixels", "--data", "moving-shapes@frames=1"], "frames"),
        (["video-seg", "--ckpt", "pixels", "--ckpt", "dinoeval/assets/checkpoints/"
          "shapes_vit_d128x3_p4_32px.pth", "--data", VIDEOS, "--pixel-patch", "2",
          "--short-side", "30", "--multiple", "8"], "multiple of the patch size 4"),
        (["dense", "--ckpt", "pixels", "--method", "svm"], "--method"),
        (["dense", "--ckpt", "pixels", "--train", "digits"], "needs a source with masks"),
    ]
    for args, needle in cases:
        r = runner.invoke(app, [*args, "--out", str(tmp_path / "o.csv")])
        assert r.exit_code == 2, (args, r.output)
        assert "error:" in r.output and needle in r.output, (args, r.output)
        assert not (tmp_path / "o.csv").exists()

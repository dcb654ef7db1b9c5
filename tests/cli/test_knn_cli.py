import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from dinoeval.cli import app
from dinoeval.results import COLUMNS

runner = CliRunner()


@pytest.fixture
def ckpt(tmp_path, tiny_vit):
    p = tmp_path / "tiny.pth"
    torch.save(tiny_vit.state_dict(), p)
    return str(p)


def test_knn_writes_table_and_appends(tmp_path, ckpt):
    out = tmp_path / "res.csv"
    args = ["knn", "--ckpt", ckpt, "--ckpt", "pixels", "--train", "digits:train",
            "--val", "digits:test[:60]", "--k", "5", "--k", "20", "--img-size", "16",
            "--out", str(out)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out)
    assert list(df.columns) == list(COLUMNS)
    assert len(df) == 2 * 2 * 2  # backbones x k x (top1, top5)
    px = df[(df.backbone == "pixels") & (df.metric == "top1") & (df.param == "k=20")]
    assert px.value.iloc[0] > 0.85  # raw-pixel k-NN on digits is strong
    assert (tmp_path / "res.csv.config.json").exists()
    r2 = runner.invoke(app, [*args[:-2], "--out", str(out)])
    assert r2.exit_code == 0
    assert len(pd.read_csv(out)) == 16  # appended, old rows kept


def test_knn_errors_exit_2_with_one_line(tmp_path, ckpt):
    cases = [
        (["--ckpt", str(tmp_path / "missing.pth")], "not found"),
        (["--ckpt", ckpt, "--k", "5000"], "larger than the train set"),
        (["--ckpt", ckpt, "--feature", "bogus"], "--feature must be one of"),
        (["--ckpt", ckpt, "--checkpoint-key", "ema"], "teacher or student"),
    ]
    for extra, msg in cases:
        r = runner.invoke(app, ["knn", "--train", "digits:train", "--val", "digits:test[:20]",
                                *extra])
        assert r.exit_code == 2, (extra, r.output)
        assert msg in r.output.replace("\n", " "), r.output


def test_knn_does_not_lose_rows_already_written(tmp_path, ckpt):
    out = tmp_path / "res.csv"
    ok = runner.invoke(app, ["knn", "--ckpt", "pixels", "--train", "digits:train", "--val",
                             "digits:test[:20]", "--k", "5", "--out", str(out)])
    assert ok.exit_code == 0
    bad = runner.invoke(app, ["knn", "--ckpt", "pixels", "--ckpt", str(tmp_path / "nope.pth"),
                              "--train", "digits:train", "--val", "digits:test[:20]", "--k", "5",
                              "--out", str(out)])
    assert bad.exit_code == 2
    assert len(pd.read_csv(out)) == 4  # first run 2 rows + pixels again 2 rows; none lost


def test_extract_then_report(tmp_path, ckpt):
    feats = tmp_path / "feats"
    r = runner.invoke(app, ["extract", "--ckpt", ckpt, "--data", "digits[:50]", "--cache-dir",
                            str(feats), "--img-size", "16", "--feature", "cls-last4"])
    assert r.exit_code == 0, r.output
    entries = [p for p in feats.iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1 and (entries[0] / "features.npy").exists()
    out = tmp_path / "res.csv"
    runner.invoke(app, ["knn", "--ckpt", "pixels", "--train", "digits:train", "--val",
                        "digits:test[:30]", "--k", "5", "--out", str(out)])
    for fmt, needle in (("markdown", "|"), ("latex", "\\begin{tabular}"), ("csv", ",")):
        r = runner.invoke(app, ["report", str(out), "--format", fmt])
        assert r.exit_code == 0 and needle in r.output, r.output
    r = runner.invoke(app, ["report", str(tmp_path / "none.csv")])
    assert r.exit_code == 2 and "not found" in r.output
    r = runner.invoke(app, ["report", str(out), "--format", "html"])
    assert r.exit_code == 2


def test_help_is_available():
    r = runner.invoke(app, ["knn", "--help"])
    assert r.exit_code == 0 and "--ckpt" in r.output and "--train" in r.output


def test_report_html_is_self_contained(tmp_path):
    out = tmp_path / "res.csv"
    runner.invoke(app, ["knn", "--ckpt", "pixels", "--train", "digits:train", "--val",
                        "digits:test[:30]", "--k", "5", "--out", str(out)])
    page = tmp_path / "summary.html"
    r = runner.invoke(app, ["report", str(out), "--html", str(page)])
    assert r.exit_code == 0, r.output
    text = page.read_text()
    assert "<html" in text.lower() and "http://" not in text and "https://" not in text

"""``dinoeval retrieval`` and ``dinoeval copy-detection`` end to end, and their bad input."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from dinoeval.cli import app
from dinoeval.results import COLUMNS
from tests.data.test_roxford import make_revisited

runner = CliRunner()


@pytest.fixture
def ckpt(narrow_vit_file):
    return narrow_vit_file


def test_retrieval_on_a_revisited_fixture_writes_rows_and_the_view(tmp_path, ckpt):
    folder = make_revisited(tmp_path)
    out, page = tmp_path / "res.csv", tmp_path / "hits.html"
    r = runner.invoke(app, ["retrieval", "--ckpt", ckpt, "--ckpt", "pixels", "--query",
                            f"roxford5k:query@{folder}", "--pixel-size", "16", "--out", str(out),
                            "--html", str(page), "--batch-size", "4"])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out)
    assert list(df.columns) == list(COLUMNS)
    # 2 backbones x 2 protocols x (mAP + 3 x (mP@k, recall@k))
    assert len(df) == 2 * 2 * 7 and set(df["eval"]) == {"retrieval"}
    text = page.read_text()
    assert text.count("<img") == 2 * (1 + 2 * 5) and "junk" in text
    # the input handling is part of the row's identity: appended rows never merge
    r = runner.invoke(app, ["retrieval", "--ckpt", ckpt, "--query", f"roxford5k:query@{folder}",
                            "--resize", "square", "--out", str(out), "--batch-size", "4"])
    assert r.exit_code == 0, r.output
    feats = pd.read_csv(out).groupby("feature")["backbone"].count().to_dict()
    assert feats == {"cls@16 long": 14, "pixels": 14, "cls@16 square": 14}


def test_copy_detection_on_procedural_copies(tmp_path, ckpt):
    out = tmp_path / "res.csv"
    r = runner.invoke(app, ["copy-detection", "--ckpt", ckpt, "--ckpt", "pixels", "--data",
                            "digits:test", "--originals", "10", "--n-distractors", "20",
                            "--n-whitening", "30", "--img-size", "16", "--out", str(out)])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out)
    maps = df[df.metric == "mAP"].set_index("backbone")["value"]
    assert len(maps) == 2 and ((maps > 0) & (maps <= 1)).all()
    assert set(df["eval"]) == {"copy-detection"}


def test_bad_input_is_one_line_and_exit_2_before_the_work(tmp_path, ckpt):
    folder = make_revisited(tmp_path)
    cases = [
        (["retrieval", "--ckpt", ckpt, "--query", f"roxford5k:query@{folder}", "--protocol",
          "medum"], "--protocol must be one of"),
        (["retrieval", "--ckpt", ckpt, "--query", f"roxford5k:database@{folder}"],
         "query split"),
        (["retrieval", "--ckpt", "pixels", "--query", "digits:test", "--multiscale"],
         "pixels have no scales"),
        (["retrieval", "--ckpt", ckpt, "--query", "digits:test", "--out",
          str(tmp_path / "r.txt")], ".csv or .parquet"),
        (["retrieval", "--ckpt", ckpt, "--query", "digits:test", "--k", "0"], "--k"),
        (["retrieval", "--ckpt", ckpt, "--query", "digits:test", "--resize", "crop"],
         "--resize must be one of"),
        (["copy-detection", "--ckpt", ckpt], "exactly one of --data"),
        (["copy-detection", "--ckpt", ckpt, "--data", "digits:test", "--originals", "5000"],
         "needs"),
        (["copy-detection", "--ckpt", ckpt, "--copydays", str(tmp_path)], "original/ and strong/"),
        (["copy-detection", "--ckpt", ckpt, "--data", "digits:test", "--html",
          str(tmp_path / "v.png")], ".html"),
    ]
    for args, msg in cases:
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert msg in r.output.replace("\n", " "), (args, r.output)
        assert "Traceback" not in r.output

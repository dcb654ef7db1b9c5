"""The HTML reports are self-contained and say what they should."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from dinoeval.errors import DinoevalError
from dinoeval.report import write_attention_report, write_results_report


def _srcs(text: str) -> list[str]:
    return re.findall(r'<img[^>]*\ssrc="([^"]*)"', text)


def test_attention_report_is_self_contained_with_every_map(tmp_path, runs, originals):
    path = write_attention_report(runs, originals, tmp_path / "rep",
                                  captions=[f"img {i}" for i in range(4)], data="fake:test")
    text = path.read_text()
    srcs = _srcs(text)
    # Per image: original, ground truth, and (mean + 6 heads) x (heat + mask) per checkpoint.
    assert len(srcs) == 1 + 4 * (2 + 3 * 7 * 2)
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r'(href|src)="(https?:)?//', text) and "@import" not in text
    assert "<link rel=\"stylesheet\"" not in text and "<script" not in text
    # Captions name checkpoint, head and score.
    assert re.search(r"<b>head 5</b> · J <span class=score>\d\.\d{3}</span><span class=who "
                     r'title="runs/fm/checkpoint.pth">', text)
    assert "Jaccard summary" in text and "mean of heads" in text
    assert "centre-cropped to a multiple of the 8px patch" in text
    figs = sorted(p.name for p in (tmp_path / "rep" / "figures").iterdir())
    assert figs == ["image_000.png", "image_001.png", "image_002.png", "image_003.png",
                    "jaccard.png"]


def test_attention_report_without_ground_truth_has_no_scores(tmp_path, originals, run_factory):
    run = run_factory("ckpt", originals, heads=3, patch=8, seed=0, with_targets=False)
    text = write_attention_report([run], originals, tmp_path, png_figures=False).read_text()
    assert "Jaccard summary" not in text and "class=score" not in text
    assert not (tmp_path / "figures" / "image_000.png").exists()


def test_attention_report_draws_the_first_images_and_scores_all(tmp_path, runs, originals):
    text = write_attention_report(runs, originals[:2], tmp_path, png_figures=False).read_text()
    assert "4 images scored, the first 2 drawn" in text
    assert len(_srcs(text)) == 1 + 2 * (2 + 3 * 7 * 2)


def test_attention_report_rejects_mismatched_runs(tmp_path, runs, originals, run_factory):
    other = run_factory("x", originals[:3], heads=6, patch=8, seed=9)
    with pytest.raises(DinoevalError, match="expected 4"):
        write_attention_report([*runs, other], originals[:3], tmp_path)
    with pytest.raises(DinoevalError, match="5 images to draw"):
        write_attention_report(runs, [*originals, originals[0]], tmp_path)
    with pytest.raises(DinoevalError, match="no checkpoints"):
        write_attention_report([], originals, tmp_path)


def test_results_report_has_pivots_plots_and_pretrain_curves(tmp_path, results_frame,
                                                             pretrain_log):
    path = write_results_report(results_frame, tmp_path / "sub" / "summary.html",
                                pretrain_log=pretrain_log)
    text = path.read_text()
    for title in ("k-NN classification", "Linear probe", "Collapse statistics",
                  "Attention-mask Jaccard", "Evaluation: clusters", "Pretraining", "Backbones"):
        assert title in text, title
    assert all(s.startswith("data:image/png;base64,") for s in _srcs(text))
    # k-NN pivot: one column per k, ordered numerically (k=100 after k=20).
    knn = text[text.index('id="eval-knn"'):text.index('id="eval-linear"')]
    assert knn.index("k=10<") < knn.index("k=20<") < knn.index("k=100<") < knn.index("k=200<")
    assert "<td class=name>runs/fm/checkpoint.pth</td>" in knn
    assert knn.count("class=best") == 8  # the best backbone of each (metric, k) column
    # Pretraining: four curve plots (loss, entropy, KL, online k-NN), none missing.
    pre = text[text.index("id=pretrain"):]
    assert len(_srcs(pre)) == 4 and "no column" not in pre


def test_results_report_takes_the_latest_repeated_value(tmp_path, results_frame):
    again = results_frame[results_frame["eval"] == "linear"].copy()
    again["value"] = 0.123456
    again["timestamp"] = "9999-01-01T00:00:00+00:00"
    text = write_results_report(pd.concat([results_frame, again]), tmp_path / "r.html").read_text()
    lin = text[text.index('id="eval-linear"'):text.index('id="eval-collapse"')]
    assert "0.1235" in lin


def test_results_report_takes_a_log_csv_with_its_epochs_csv_sibling(tmp_path, results_frame,
                                                                     pretrain_log):
    text = write_results_report(results_frame, tmp_path / "r.html",
                                pretrain_log=pretrain_log / "log.csv").read_text()
    pre = text[text.index("id=pretrain"):]
    assert len(_srcs(pre)) == 4 and "epochs.csv: 5 rows" in pre


def test_results_report_reads_a_sparse_pretrain_log_defensively(tmp_path, results_frame):
    results_frame = results_frame[results_frame["eval"] == "linear"]  # keep the page small
    log = tmp_path / "other.csv"
    log.write_text("iteration,train_loss,extra\n0,5.5,a\n1,5.0,b\n")
    text = write_results_report(results_frame, tmp_path / "r.html", pretrain_log=log).read_text()
    pre = text[text.index("id=pretrain"):]
    assert len(_srcs(pre)) == 1 and pre.count("no column in the log") == 3
    with pytest.raises(DinoevalError, match="not found"):
        write_results_report(results_frame, tmp_path / "r.html", pretrain_log=tmp_path / "x.csv")
    with pytest.raises(DinoevalError, match=r"has no log\.csv"):
        write_results_report(results_frame, tmp_path / "r.html", pretrain_log=tmp_path)


def test_results_report_handles_empty_and_rejects_foreign_tables(tmp_path, results_frame):
    text = write_results_report(results_frame.iloc[:0], tmp_path / "e.html").read_text()
    assert "The results table is empty" in text
    with pytest.raises(DinoevalError, match="missing columns"):
        write_results_report(results_frame.drop(columns=["metric"]), tmp_path / "x.html")


def test_short_backbone_names_keep_the_prefix_and_the_last_two_parts():
    from dinoeval.report.results_page import short_backbone

    assert short_backbone("random:/tmp/pytest-of-root/a/b/ckpt.pth") == "random:…/b/ckpt.pth"
    assert short_backbone("/data/experiments/run17/c/checkpoint.pth") == "…/c/checkpoint.pth"
    assert short_backbone("runs/fm/checkpoint.pth") == "runs/fm/checkpoint.pth"
    assert short_backbone("timm:vit_small_patch16_224") == "timm:vit_small_patch16_224"


def test_results_report_plots_grids_and_chosen_settings_sensibly(tmp_path):
    from dinoeval.results import Context, Row, concat, to_frame

    frames = []
    for b, lr in (("/experiments/2026-11-26/a/ckpt.pth", "lr=0.1,wd=0"),
                  ("/experiments/2026-11-26/b/ckpt.pth", "lr=1,wd=0")):
        ctx = Context(backbone=b, ckpt_hash="h", arch="ViT-T/4", dataset="d", split="test",
                      feature="cls")
        rows = [Row("linear-grid", "top1", 0.5, lr, 10)]
        rows += [Row("linear-grid", "val_top1", 0.1 * i, f"lr={i},wd=0", 10) for i in range(9)]
        frames.append(to_frame(rows, ctx))
    text = write_results_report(concat(frames), tmp_path / "r.html").read_text()
    sec = text[text.index('id="eval-linear-grid"'):]
    # top1: one bar per backbone (its chosen setting in the label); the 9-point grid: table only.
    assert len(_srcs(sec)) == 1
    assert "<td class=name>…/a/ckpt.pth</td>" in sec

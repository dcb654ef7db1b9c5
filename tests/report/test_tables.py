"""Paper tables: stable column keys, numeric order, eval names, labels, the paper preset,
booktabs LaTeX that compiles, JSON."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from dinoeval.cli import app
from dinoeval.errors import DinoevalError
from dinoeval.report import labels as L
from dinoeval.report import render as Rd
from dinoeval.report import rows as R
from dinoeval.report import tables as T
from dinoeval.results import Context, Row, concat, to_frame

runner = CliRunner()
SPECS = {"DINO": "/home/me/runs/dino/checkpoint.pth", "iBOT": "/home/me/runs/ibot/checkpoint.pth",
         "pixels": "pixels"}


def _frame(spec: str, rows: list[Row], stamp: str, ckpt_hash: str = "") -> pd.DataFrame:
    ctx = Context(backbone=spec, ckpt_hash=ckpt_hash or f"h-{spec[-20:]}", arch="ViT",
                  dataset="fashion-mnist", split="test", feature="cls")
    return to_frame(rows, ctx).assign(timestamp=stamp)


def _scores(knn20: float, lin: float, nc1: float, rankme: float, lr: float, *,
            old_linear: bool = False) -> list[Row]:
    rows = [Row("knn", "top1", knn, f"k={k}", 100)
            for k, knn in ((10, knn20 - 0.01), (20, knn20), (100, knn20 - 0.02),
                           (200, knn20 - 0.03))]
    if old_linear:  # tables written before the chosen setting became metadata
        rows += [Row("linear-grid", "top1", lin, f"lr={lr:g},wd=0", 100),
                 Row("linear-grid", "val_top1_chosen", lin, f"lr={lr:g},wd=0", 10)]
    else:
        rows += [Row("linear-grid", "top1", lin, "", 100),
                 Row("linear-grid", "val_top1_chosen", lin, "", 10),
                 Row("linear-grid", "chosen_lr", lr, "", 10),
                 Row("linear-grid", "chosen_wd", 0.0, "", 10)]
    rows += [Row("linear-grid", "val_top1", 0.5, f"lr={lr:g},wd=0", 10),
             Row("neural_collapse", "nc1", nc1, "tr(Sw Sb+)/C", 100),
             Row("collapse", "rankme", rankme, "eps=1e-7", 100)]
    return rows


def three_backbones(old_linear: bool = False) -> pd.DataFrame:
    return concat([
        _frame(SPECS["DINO"], _scores(0.80, 0.85, 0.5, 40.0, 0.1, old_linear=old_linear), "t1"),
        _frame(SPECS["iBOT"], _scores(0.82, 0.83, 0.7, 50.0, 0.5, old_linear=old_linear), "t2"),
        _frame("pixels", _scores(0.70, 0.75, 2.0, 300.0, 1.0, old_linear=old_linear), "t3"),
    ])


@pytest.mark.parametrize("old", [False, True])
def test_chosen_settings_are_metadata_not_column_keys(old):
    table = T.build_table(R.labelled_rows([three_backbones(old_linear=old)], evals=["linear"]))
    titles = [c.title for c in table.columns]
    assert titles == ["top1", "val_top1_chosen", "setting"]  # one top1 column for all three
    assert np.isfinite(table.mean[:, 0]).all()
    assert [table.text[(i, 2)] for i in range(3)] == ["lr=0.1,wd=0", "lr=0.5,wd=0", "lr=1,wd=0"]


def test_k_is_ordered_numerically_in_every_format():
    table = T.build_table(R.labelled_rows([three_backbones()], evals=["knn"]))
    assert [c.key[-1] for c in table.columns] == ["k=10", "k=20", "k=100", "k=200"]
    md = Rd.render(table, "markdown")
    assert md.index("k=20") < md.index("k=100") < md.index("k=200")
    csv_head = Rd.render(table, "csv").splitlines()[0]
    assert csv_head.index("k=20") < csv_head.index("k=100")
    assert R.param_key("k=20") < R.param_key("k=100") < R.param_key("k=200")


def test_eval_aliases_resolve_and_unknown_names_list_what_exists():
    present = ["knn", "linear-grid", "kmeans-spherical", "neural_collapse"]
    assert R.resolve_evals(["linear", "clusters", "neural-collapse"], present) == [
        "linear-grid", "kmeans-spherical", "neural_collapse"]
    with pytest.raises(DinoevalError, match=r"unknown --eval 'bogus'.*knn, linear-grid"):
        R.resolve_evals(["bogus"], present)
    with pytest.raises(DinoevalError, match=r"'dino_head' has no rows.*kmeans-spherical"):
        R.resolve_evals(["dino_head"], present)
    with pytest.raises(DinoevalError, match=r"--metric nmi: no such rows.*top1"):
        R.select(R.normalize(three_backbones()), evals=["knn"], metrics=["nmi"])


def test_labels_are_short_and_never_absolute_paths():
    labels = L.default_labels([*SPECS.values(), "random:/abs/dino/checkpoint.pth"])
    assert labels == {SPECS["DINO"]: "dino/checkpoint.pth", SPECS["iBOT"]: "ibot/checkpoint.pth",
                      "pixels": "pixels", "random:/abs/dino/checkpoint.pth":
                      "random:dino/checkpoint.pth"}
    with pytest.raises(DinoevalError, match="must read NAME=SPEC"):
        L.parse_labels(["DINO"])
    df = L.apply_labels(R.normalize(three_backbones()), [("DINO", "dino/checkpoint.pth")])
    assert set(df["label"]) == {"DINO", "ibot/checkpoint.pth", "pixels"}
    with pytest.raises(DinoevalError, match="no backbone matches"):
        L.apply_labels(df, [("X", "nowhere.pth")])


def _paper(labels=()) -> T.Table:
    return T.report_table([three_backbones()], preset="paper",
                          labels=[f"{k}={v}" for k, v in SPECS.items() if k != "pixels"]
                          + list(labels))


def test_paper_preset_is_percent_with_the_best_of_each_column_in_bold():
    table = _paper()
    assert [c.title for c in table.columns] == ["k-NN@20 top-1", "Linear top-1", "NC1", "RankMe"]
    assert [r[0] for r in table.index] == ["DINO", "iBOT", "pixels"]
    md = Rd.render(table, "markdown")
    lines = md.splitlines()
    assert lines[0] == ("| backbone | k-NN@20 top-1 (%) | Linear top-1 (%) | NC1 ↓ | RankMe |")
    # DINO: best linear and best (lowest) NC1; iBOT best k-NN@20; pixels best RankMe.
    assert lines[2] == "| DINO | 80.0 | **85.0** | **0.5** | 40 |"
    assert lines[3] == "| iBOT | **82.0** | 83.0 | 0.7 | 50 |"
    assert lines[4] == "| pixels | 70.0 | 75.0 | 2 | **300** |"


def test_paper_preset_averages_runs_under_one_label():
    seed2 = _frame("/home/me/runs/dino_seed2/checkpoint.pth",
                   _scores(0.84, 0.87, 0.3, 44.0, 0.1), "t4")
    table = T.report_table([three_backbones(), seed2], preset="paper",
                           labels=[f"DINO={SPECS['DINO']}", "DINO=dino_seed2/checkpoint.pth"])
    i = [r[0] for r in table.index].index("DINO")
    assert table.runs[i, 0] == 2
    assert Rd.cell_text(table, i, 0) == "82.0 ± 2.8"  # mean(80, 84), sample std 2.83
    assert Rd.cell_text(table, i, 3) == "42 ± 2.828"


def test_latex_is_booktabs_and_structurally_sound():
    tex = Rd.render(_paper(), "latex")
    lines = tex.strip().splitlines()
    assert tex.count(r"\toprule") == tex.count(r"\midrule") == tex.count(r"\bottomrule") == 1
    assert r"\cline" not in tex and "nan" not in tex.lower() and "/home/" not in tex
    body = lines[lines.index(r"\midrule") + 1: lines.index(r"\bottomrule")]
    ncols = len(re.search(r"\\begin\{tabular\}\{(\w+)\}", tex).group(1))
    assert len(body) == 3 and all(r.endswith(r"\\") and r.count(" & ") == ncols - 1
                                  for r in body)
    assert r"DINO & 80.0 & \textbf{85.0} & \textbf{0.5} & 40 \\" in lines
    assert r"(\%)" in tex and r"$\downarrow$" in tex


def test_latex_escapes_labels_and_marks_missing_cells():
    df = concat([three_backbones(), _frame("my_model#1&2", [Row("knn", "top1", 0.5, "k=20")],
                                           "t9")])
    tex = Rd.render(T.report_table([df], preset="paper"), "latex")
    assert r"my\_model\#1\&2 & 50.0 & -- & -- & -- \\" in tex


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no LaTeX engine installed")
def test_latex_compiles_with_pdflatex(tmp_path):
    seed2 = _frame("/home/me/runs/dino_seed2/checkpoint.pth",
                   _scores(0.84, 0.87, 0.3, 44.0, 0.1), "t4")
    table = T.report_table([three_backbones(), seed2], preset="paper",
                           labels=[f"DINO={SPECS['DINO']}", "DINO=dino_seed2/checkpoint.pth"])
    grouped = T.build_table(R.labelled_rows([three_backbones()], evals=["knn", "linear"]))
    body = Rd.render(table, "latex") + "\n\n" + Rd.render(grouped, "latex")
    (tmp_path / "doc.tex").write_text("\\documentclass{article}\\usepackage{booktabs}"
                                      "\\begin{document}\n" + body + "\\end{document}\n")
    r = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 1000


def test_json_has_one_record_per_cell_in_stored_units():
    data = json.loads(Rd.render(_paper(), "json"))
    assert data["columns"] == ["k-NN@20 top-1", "Linear top-1", "NC1", "RankMe"]
    dino_knn = next(c for c in data["cells"] if c["backbone"] == "DINO"
                    and c["column"] == "k-NN@20 top-1")
    assert dino_knn["mean"] == pytest.approx(0.80) and dino_knn["unit"] == "fraction"
    assert dino_knn["higher_is_better"] is True and len(data["cells"]) == 12


def test_a_rerun_checkpoint_keeps_only_its_latest_version():
    old = _frame(SPECS["DINO"], _scores(0.10, 0.1, 9.0, 1.0, 0.1), "t0", ckpt_hash="old")
    table = T.report_table([old, three_backbones()], preset="paper")
    assert Rd.cell_text(table, 0, 0) == "80.0"
    assert any("older checkpoint versions" in n for n in table.notes)


def test_report_cli_paper_latex_json_and_errors(tmp_path):
    res = tmp_path / "results.csv"
    three_backbones().to_csv(res, index=False)
    args = ["report", str(res), "--preset", "paper", "--label", f"DINO={SPECS['DINO']}"]
    r = runner.invoke(app, [*args, "--format", "latex", "-o", str(tmp_path / "t.tex")])
    assert r.exit_code == 0, r.output
    assert r"DINO & 80.0 & \textbf{85.0}" in (tmp_path / "t.tex").read_text()
    r = runner.invoke(app, [*args, "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["columns"][0] == "k-NN@20 top-1"
    r = runner.invoke(app, ["report", str(res), "--eval", "clusters"])
    assert r.exit_code == 2 and "knn, linear-grid, neural_collapse, collapse" in r.output
    r = runner.invoke(app, ["report", str(res), "--preset", "poster"])
    assert r.exit_code == 2 and "--preset must be 'paper'" in r.output

"""The report figures on real data, through the notebook API: three backbones on Fashion-MNIST.

Writes ``results/figures_fmnist/``: ``results.csv`` (the long table), ``paper.tex`` /
``paper.md`` (``--preset paper``), ``report.html`` (tables, plots and the figures section),
``figures/*.png|pdf`` and ``screenshot.png`` (headless Chromium, when installed).

    python scripts/report_figures_fmnist.py [--train 5000] [--val 1000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from dinoeval import api
from dinoeval.data import get_source
from dinoeval.report.figure_set import save_figures, table_figures
from dinoeval.report.results_page import write_results_report
from dinoeval.report.rows import labelled_rows
from dinoeval.results import append_results, concat

CKPT = "dinoeval/assets/checkpoints/fmnist_vit_d128x3_p7.pth"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=5000)
    ap.add_argument("--val", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=Path("results/figures_fmnist"))
    a = ap.parse_args()
    train, val = f"fashion-mnist:train[:{a.train}]", f"fashion-mnist:test[:{a.val}]"
    backbones = {"DINO": CKPT, "random init": f"random:{CKPT}", "pixels": "pixels"}
    names = get_source(val).classes
    knn = api.knn(backbones, train=train, val=val, k=(10, 20, 50, 100))
    lin = api.linear(backbones, train=train, val=val, epochs=10)
    col = api.collapse(backbones, data=train)
    a.out.mkdir(parents=True, exist_ok=True)
    table = a.out / "results.csv"
    table.unlink(missing_ok=True)
    append_results(table, concat([knn.frame, lin.frame, col.frame]))
    figs = {**knn.figures(class_names=names, maps=True), **lin.figures(class_names=names),
            **col.figures()}
    save_figures(figs, a.out / "figures")
    rows = labelled_rows([concat([knn.frame, lin.frame, col.frame])])
    save_figures(table_figures(rows), a.out / "figures")
    page = write_results_report(rows.drop(columns=["label", "setting"]), a.out / "report.html",
                                figures=figs)
    for fmt, name in (("latex", "paper.tex"), ("markdown", "paper.md")):
        subprocess.run([sys.executable, "-c", "from dinoeval.cli import main; main()", "report",
                        str(table), "--preset", "paper", "--format", fmt, "-o",
                        str(a.out / name)], check=True)
    from dinoeval.report._browser import check_page, find_chromium

    if find_chromium():
        check = check_page(page, width=1400, height=2400)
        (a.out / "screenshot.png").write_bytes(check.screenshot or b"")
        print(f"browser: loaded={check.loaded} images={len(check.images)} "
              f"errors={check.console_errors} overflow_x={check.overflow_x}")
    print((a.out / "paper.md").read_text())


if __name__ == "__main__":
    main()

"""The demo's files: the results table, the summary, the HTML results page with its figures, and
the attention, retrieval and copy-detection views."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pandas as pd

from dinoeval.data import ImageSource
from dinoeval.demo.config import DemoConfig, DemoData
from dinoeval.demo.plan import BackboneRun
from dinoeval.pipeline.attention import image_captions


def write_outputs(out: Path, frame: pd.DataFrame, summary: pd.DataFrame,
                  runs: list[BackboneRun], attention_runs: list[tuple[str, Any]],
                  test_src: ImageSource, config: DemoConfig, ds: DemoData,
                  ckpt: str) -> dict[str, Path]:  # ckpt: as shown in results
    """Write ``results.csv`` (replaced, not appended), ``summary.csv``, ``config.json``,
    ``report.html`` (the page ``dinoeval report --html`` builds, with the figures of the typed
    results), ``attention/index.html``, ``retrieval/index.html`` and ``copies/index.html``."""
    files: dict[str, Path] = {}
    files["results.csv"] = out / "results.csv"
    frame.to_csv(files["results.csv"], index=False)
    files["summary.csv"] = out / "summary.csv"
    summary.to_csv(files["summary.csv"], index=False)
    files["config.json"] = out / "config.json"
    files["config.json"].write_text(json.dumps(
        {"demo": dataclasses.asdict(config), "ckpt": ckpt,
         "train": config.train or ds.train, "test": config.test or ds.test}, indent=1,
        default=str))
    log_csv = out / "pretrain" / "log.csv"
    files["report.html"] = _results_page(out / "report.html", frame, runs, test_src, config,
                                         log_csv if log_csv.exists() else None)
    if attention_runs:
        files["attention"] = _attention_report(out / "attention", attention_runs, test_src,
                                               config)
    files.update(_retrieval_pages(out, runs))
    return files


def demo_figures(runs: list[BackboneRun], test_src: ImageSource, config: DemoConfig
                 ) -> dict[str, Any]:
    """The figures of issue 18 from the typed results: a confusion matrix per backbone (k-NN at
    ``config.knn_k`` and linear), the singular-value spectrum behind RankMe, per-class accuracy,
    and a 2-D map (t-SNE; UMAP if installed) of ``config.map_points`` test features."""
    from dinoeval.eval.embedding import embed_2d, subsample
    from dinoeval.report.figure_set import result_figures

    embeddings = {}
    if config.map_points:
        for r in runs:
            idx = subsample(r.test.labels, config.map_points, seed=config.seed)
            embeddings[r.role] = (embed_2d(r.test.features[idx], method="auto",
                                           seed=config.seed), r.test.labels[idx])
    return result_figures({r.role: r.typed for r in runs}, class_names=test_src.classes,
                          knn_k=config.knn_k, embeddings=embeddings)


def _results_page(path: Path, frame: pd.DataFrame, runs: list[BackboneRun],
                  test_src: ImageSource, config: DemoConfig, pretrain_log: Path | None) -> Path:
    import matplotlib.pyplot as plt

    from dinoeval.report.results_page import write_results_report

    figs = demo_figures(runs, test_src, config)
    try:
        return write_results_report(frame, path, pretrain_log=pretrain_log, figures=figs)
    finally:
        for fig in figs.values():
            plt.close(fig)


def _retrieval_pages(out: Path, runs: list[BackboneRun]) -> dict[str, Path]:
    """The top-5 hits of each backbone side by side (``dinoeval retrieval --html``'s view)."""
    from dinoeval.report.retrieval import write_retrieval_report

    files = {}
    labels = [r.role for r in runs]
    ret = [r.retrieval for r in runs if r.retrieval is not None]
    if len(ret) == len(runs) and runs:
        files["retrieval"] = write_retrieval_report(
            ret, out / "retrieval" / "index.html", labels=labels,
            title="Retrieval: same class = relevant (the query itself is junk)")
    cop = [r.copies for r in runs if r.copies is not None]
    if len(cop) == len(runs) and runs:
        files["copies"] = write_retrieval_report(
            cop, out / "copies" / "index.html", labels=labels,
            title="Copy detection: each strong copy's original = relevant")
    return files


def _attention_report(out: Path, runs: list[tuple[str, Any]], source: ImageSource,
                      config: DemoConfig) -> Path:
    from dinoeval.report.attention_page import write_attention_report

    n = min(config.report_images, len(runs[0][1].masks))
    trimmed = [dataclasses.replace(r, label=role, indices=r.indices[:n], images=r.images[:n],
                                   targets=r.targets[:n], masks=r.masks[:n])
               for role, r in runs]
    idx = trimmed[0].indices
    originals = [source.load(int(i)) for i in idx]
    return write_attention_report(trimmed, originals, out, captions=image_captions(source, idx),
                                  data=source.spec, png_figures=False)


"""Which figures a set of results gets, and where they go (HTML section, PNG/PDF files).

Two sources:

* :func:`table_figures` — from the long results table alone (what ``report --figures DIR``
  reads back from a CSV): k-NN accuracy vs k, per-class recall (``knn --per-class`` rows), one
  bar chart per score with ``*_std`` rows as error bars. Constants (``dim``, ``log_K``,
  reference values, a probe's chosen setting) are not scores: no bars.
* :func:`result_figures` — from typed results in memory (the notebook API, the demo): a
  confusion matrix per backbone for k-NN and the linear probe, the singular-value spectrum behind
  RankMe, per-class accuracy, and a 2-D map of the features coloured by class.

Each figure comes from a plotting function of :mod:`dinoeval.report.figures` (arrays in, figure
out). Figures are returned as ``{file stem: figure}`` in display order.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dinoeval.errors import DinoevalError
from dinoeval.report import figures as F
from dinoeval.report.html import png_data_uri

# Constants and settings: shown in tables, never drawn as bars.
NOT_SCORES = frozenset({"dim", "log_K", "num_prototypes", "normalized_std_ref", "best_head",
                        "rankme_over_dim"})
_RECALL = re.compile(r"^recall\[(.*)\]$")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower() or "x"


def is_score(metric: str) -> bool:
    return not (metric in NOT_SCORES or metric.startswith("chosen_") or metric.endswith("_std")
                or metric == "val_top1" or _RECALL.match(metric))


def table_figures(df: pd.DataFrame, *, max_metrics: int = 8) -> dict[str, Any]:
    """Figures from labelled rows (``label`` column; see :func:`dinoeval.report.rows.labelled_rows`)."""
    figs: dict[str, Any] = {}
    df = df.assign(param=df["param"].astype(str), metric=df["metric"].astype(str))
    knn = df[(df["eval"] == "knn") & (df["metric"] == "top1")]
    if knn["param"].nunique() > 1:
        xs, ys = {}, {}
        for lab, g in knn.groupby("label", sort=False):
            g = g.assign(_k=g["param"].str.extract(r"k=(\d+)", expand=False).astype(float))
            g = g.dropna(subset=["_k"]).groupby("_k")["value"].mean()
            xs[lab], ys[lab] = g.index.to_numpy(), 100 * g.to_numpy()
        figs["knn_top1_vs_k"] = F.plot_lines(xs, ys, xlabel="k", ylabel="top-1 (%)",
                                             title="k-NN top-1 vs k", logx=True)
    recall = df[df["metric"].str.match(_RECALL.pattern)]
    if not recall.empty:
        figs.update(_recall_figures(recall))
    for (ev, metric), g in df[df["metric"].map(is_score)].groupby(["eval", "metric"],
                                                                    sort=False):
        if g["param"].nunique() > 1 or len(figs) >= max_metrics + 2:
            continue  # a sweep (k, heads): the table or the line plot shows it
        figs[f"{_slug(ev)}_{_slug(metric)}"] = _score_bars(df, g, ev, metric)
    return figs


def _score_bars(df: pd.DataFrame, g: pd.DataFrame, ev: str, metric: str) -> Any:
    labels = list(dict.fromkeys(g["label"]))
    runs = g.groupby("label", sort=False)["value"]
    mean, std = runs.mean(), runs.std(ddof=1)
    seed_std = df[(df["eval"] == ev) & (df["metric"] == f"{metric}_std")].groupby("label")[
        "value"].mean()
    err = [std.get(lab) if runs.size().get(lab, 0) > 1 else seed_std.get(lab, np.nan)
           for lab in labels]
    return F.plot_bars(labels, {metric: [mean[lab] for lab in labels]},
                       errors={metric: [np.nan if e is None else e for e in err]},
                       xlabel=metric, title=f"{ev}: {metric}")


def _recall_figures(recall: pd.DataFrame) -> dict[str, Any]:
    out = {}
    for param, g in recall.groupby("param", sort=False):
        classes = list(dict.fromkeys(g["metric"].str.extract(_RECALL.pattern, expand=False)))
        values = {}
        for lab, h in g.groupby("label", sort=False):
            by = h.groupby(h["metric"].str.extract(_RECALL.pattern, expand=False))["value"].mean()
            values[lab] = [100 * by.get(c, np.nan) for c in classes]
        out[f"knn_per_class_{_slug(param)}"] = F.plot_bars(
            classes, values, xlabel="recall (%)", title=f"k-NN per-class accuracy ({param})")
    return out


def result_figures(results: Mapping[str, Mapping[str, Any]], *, class_names: Sequence[str] = (),
                   knn_k: int = 20,
                   embeddings: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None
                   ) -> dict[str, Any]:
    """Figures from typed results per backbone label.

    Args:
        results: label -> ``{"knn": KnnResult, "linear": LinearProbeResult,
            "collapse": CollapseStats}`` (any subset).
        class_names: names of the classes, in label order.
        knn_k: the k whose confusion matrix and per-class accuracy are drawn (the nearest
            stored k when absent).
        embeddings: label -> ``((N, 2) coordinates, (N,) classes)`` for the 2-D maps.
    """
    figs: dict[str, Any] = {}
    per_class: dict[str, list[float]] = {}
    kinds: list[str] = []
    for lab, res in results.items():
        knn = res.get("knn")
        if knn is not None and knn.confusion:
            k = min(knn.confusion, key=lambda kk: (abs(kk - knn_k), kk))
            figs[f"confusion_knn_{_slug(lab)}"] = F.plot_confusion_matrix(
                knn.confusion[k], class_names, title=f"{lab}: k-NN (k={k})")
            per_class[f"{lab} k-NN"] = list(100 * knn.per_class[k])
            kinds.append("knn")
        lin = res.get("linear")
        if lin is not None and lin.confusion is not None:
            figs[f"confusion_linear_{_slug(lab)}"] = F.plot_confusion_matrix(
                lin.confusion, class_names, title=f"{lab}: linear ({lin.chosen_text})")
            cm = lin.confusion.astype(float)
            with np.errstate(invalid="ignore", divide="ignore"):
                per_class[f"{lab} linear"] = list(100 * np.diag(cm) / cm.sum(axis=1))
            kinds.append("linear")
    spectra = {lab: res["collapse"].singular_values for lab, res in results.items()
               if res.get("collapse") is not None
               and res["collapse"].singular_values is not None}
    if spectra:
        figs["rankme_spectrum"] = F.plot_spectrum(
            spectra, {lab: results[lab]["collapse"].rankme for lab in spectra})
    if per_class:
        n = max(len(v) for v in per_class.values())
        names = [str(c) for c in class_names][:n] or [str(i) for i in range(n)]
        stem = "per_class_accuracy_" + "_".join(dict.fromkeys(kinds))
        figs[stem] = F.plot_bars(names, per_class, xlabel="accuracy (%)",
                                 title="Per-class accuracy")
    for lab, (xy, y) in (embeddings or {}).items():
        figs[f"map_{_slug(lab)}"] = F.plot_embedding(xy, y, class_names,
                                                     title=f"{lab}: 2-D map of the features")
    return figs


def save_figures(figs: Mapping[str, Any], folder: str | Path,
                 formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Write each figure as ``folder/<stem>.<fmt>``; returns the paths written."""
    bad = [f for f in formats if f not in ("png", "pdf", "svg")]
    if bad:
        raise DinoevalError(f"figure formats must be png, pdf or svg, got {', '.join(bad)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for stem, fig in figs.items():
        for fmt in formats:
            path = folder / f"{stem}.{fmt}"
            path.write_bytes(F.figure_bytes(fig, fmt))
            paths.append(path)
    return paths


def figures_html(figs: Mapping[str, Any], *, title: str = "Figures",
                 anchor: str = "figures") -> str:
    """A report ``<section>`` with every figure as an inline PNG (empty text for none)."""
    if not figs:
        return ""
    imgs = "".join(f'<img class=plot src="{png_data_uri(F.figure_png(fig))}" '
                   f'alt="{html.escape(stem)}">' for stem, fig in figs.items())
    return (f"<section id={anchor}><h2>{html.escape(title)}</h2>"
            f"<div class=plots>{imgs}</div></section>")

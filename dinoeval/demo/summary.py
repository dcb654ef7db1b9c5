"""The demo's summary: one row per backbone, the issue's target checks, the markdown page."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from dinoeval.demo.config import (
    TARGET_JACCARD_OVER_RANDOM,
    TARGET_KNN_OVER_PIXELS,
    TARGET_KNN_OVER_RANDOM,
    DemoData,
    TargetCheck,
)

# (column title, eval, metric, param); the first matching row wins.
SUMMARY_COLUMNS: tuple[tuple[str, str, str, str | None], ...] = (
    ("k-NN top-1", "knn", "top1", "k={k}"),
    ("linear top-1", "linear-grid", "top1", None),
    ("k-means NMI", "kmeans-spherical", "nmi", None),
    ("k-means acc", "kmeans-spherical", "accuracy", None),
    ("RankMe", "collapse", "rankme", None),
    ("NC1", "neural_collapse", "nc1", None),
    ("attn Jaccard (mean of heads)", "attention", "jaccard", "head=mean"),
    ("attn Jaccard (best head)", "attention", "jaccard", "head=best"),
    ("video J&F", "video-seg", "J&F-mean", None),  # the all-videos row comes first
    ("dense linear mIoU", "dense-linear", "mIoU", None),
    ("dense k-NN mIoU", "dense-knn", "mIoU", None),
    ("retrieval mAP", "retrieval", "mAP", "protocol=labels"),
    ("copy-detection mAP", "copy-detection", "mAP", "protocol=copies"),
)


def summarize(frame: pd.DataFrame, roles: dict[str, str], *, k: int = 20) -> pd.DataFrame:
    """One row per backbone (in ``roles`` order), one column per headline metric."""
    records = []
    for spec, role in roles.items():
        sub = frame[frame["backbone"] == spec]
        rec: dict[str, Any] = {"backbone": role, "arch": sub["arch"].iloc[0] if len(sub) else ""}
        for title, ev, metric, param in SUMMARY_COLUMNS:
            hit = sub[(sub["eval"] == ev) & (sub["metric"] == metric)]
            if param is not None:
                hit = hit[hit["param"] == param.format(k=k)]
            rec[title] = float(hit["value"].iloc[0]) if len(hit) else math.nan
        records.append(rec)
    summary = pd.DataFrame.from_records(records)
    return summary.dropna(axis=1, how="all")


def check_targets(summary: pd.DataFrame, data: str = "shapes") -> list[TargetCheck]:
    """The issue's targets. On ``shapes``: DINO k-NN >= random + 15 points and >= pixels + 10
    points, DINO mean-of-heads Jaccard >= random + 0.15 (where attention was scored). On
    ``fashion-mnist``: DINO k-NN above pixel k-NN measured in the same run."""
    by = summary.set_index("backbone")
    out: list[TargetCheck] = []
    knn = by.get("k-NN top-1")
    if knn is not None and {"DINO", "random init", "pixels"} <= set(by.index):
        if data == "fashion-mnist":
            out.append(TargetCheck("DINO k-NN top-1 above pixels", float(knn["DINO"]),
                                   float(knn["pixels"]), strict=True))
        else:
            out.append(TargetCheck("DINO k-NN top-1 vs random init + 0.15", float(knn["DINO"]),
                                   float(knn["random init"]) + TARGET_KNN_OVER_RANDOM))
            out.append(TargetCheck("DINO k-NN top-1 vs pixels + 0.10", float(knn["DINO"]),
                                   float(knn["pixels"]) + TARGET_KNN_OVER_PIXELS))
    col = "attn Jaccard (mean of heads)"
    if data != "fashion-mnist" and col in by and {"DINO", "random init"} <= set(by.index):
        jac = by[col]
        if not (math.isnan(jac["DINO"]) or math.isnan(jac["random init"])):
            out.append(TargetCheck("DINO attention Jaccard vs random init + 0.15",
                                   float(jac["DINO"]),
                                   float(jac["random init"]) + TARGET_JACCARD_OVER_RANDOM))
    return out


# ---------------------------------------------------------------------------------- outputs


def summary_markdown(summary: pd.DataFrame, targets: list[TargetCheck], *, ds: DemoData,
                     ckpt: str, train: str, test: str, seconds: float | None = None,
                     peak_rss_mb: float | None = None) -> str:
    """The summary table, the target checks and published baselines as a markdown page."""
    lines = [f"# dinoeval demo: {ds.title}", "",
             f"Checkpoint `{ckpt}`; train `{train}`, test `{test}`. k-NN: weighted vote, "
             "k=20, T=0.07, CLS features; linear: grid probe selected on a held-out 10% of train.",
             "", summary.to_markdown(index=False, floatfmt=".4f"), ""]
    if targets:
        lines += ["## Targets (issue 6)", ""] + [f"- {t.text()}" for t in targets] + [""]
    if ds.baselines:
        lines += ["## Published baselines", "", "| baseline | top-1 | source |", "|---|---|---|"]
        lines += [f"| {a} | {b} | {c} |" for a, b, c in ds.baselines] + [""]
    run = []
    if seconds is not None:
        run.append(f"wall time {seconds:.0f} s")
    if peak_rss_mb is not None:
        run.append(f"peak memory (max RSS) {peak_rss_mb:,.0f} MB")
    if run:
        lines.append("Run: " + ", ".join(run) + ".")
    return "\n".join(lines) + "\n"


def peak_rss_mb() -> float | None:
    """This process's peak resident memory in MB (None where the OS does not say)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

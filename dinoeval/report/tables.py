"""The wide table: labelled rows pivoted into one row per backbone, one column per score.

:func:`build_table` pivots labelled, normalised rows (:mod:`dinoeval.report.rows`) into a
:class:`Table` (columns in numeric parameter order, mean ± std over runs, ``*_std`` rows folded
into their score); :func:`paper_table` picks the ``paper`` preset's columns (k-NN@20 top-1,
linear top-1, k-means NMI, NC1, RankMe); :func:`report_table` is everything ``dinoeval report``
does before rendering. Text out (markdown, LaTeX, CSV, JSON) is :mod:`dinoeval.report.render`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dinoeval.errors import DinoevalError
from dinoeval.report.rows import EVAL_NAMES, direction, is_percent, labelled_rows, param_key

_RUN_KEYS = ("backbone", "ckpt_hash", "timestamp")


@dataclass(frozen=True)
class Column:
    """One table column: the stored key, a display title and how to show its values."""

    key: tuple[str, ...]
    title: str
    percent: bool
    direction: int
    text: bool = False


@dataclass
class Table:
    """A wide table: ``mean``/``std``/``runs`` are ``(rows, columns)``; ``text`` fills the
    columns that hold settings (a linear probe's chosen ``lr``/``wd``)."""

    index_names: list[str]
    index: list[tuple[str, ...]]
    columns: list[Column]
    mean: np.ndarray
    std: np.ndarray
    runs: np.ndarray
    text: dict[tuple[int, int], str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def best(self) -> np.ndarray:
        """``(rows, columns)`` bool: the best value of each scored column (two rows or more)."""
        out = np.zeros(self.mean.shape, dtype=bool)
        if len(self.index) < 2:
            return out
        for j, c in enumerate(self.columns):
            v = self.mean[:, j] * c.direction
            if c.direction and np.isfinite(v).sum() >= 2:
                out[:, j] = np.isclose(v, np.nanmax(v), rtol=0, atol=1e-12)
        return out


def _index_columns(df: pd.DataFrame) -> list[str]:
    """``label``, plus feature/split when one label has several (dataset goes to the columns),
    plus every identity column (network, resolution, train/val data and sizes:
    :data:`dinoeval.results.IDENTITY_COLUMNS`) that varies within one label and dataset, so
    that rows of a teacher and a student, or of two banks, never merge into one cell."""
    from dinoeval.results import IDENTITY_COLUMNS

    per_label = df.groupby("label")[["feature", "split"]].nunique()
    cols = ["label"] + [c for c in ("feature", "split") if (per_label[c] > 1).any()]
    ident = [c for c in IDENTITY_COLUMNS if c in df.columns]
    if ident:
        shown = df.assign(**{c: _text(df[c]) for c in ident})
        per = shown.groupby(["label", "dataset"])[ident].nunique()
        cols += [c for c in ident if (per[c] > 1).any()]
    return cols


def _text(s: pd.Series) -> pd.Series:
    return s.astype(str).replace({"<NA>": "", "nan": "", "None": ""})


def _latest_per_run(df: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """One value per run (backbone, hash, timestamp) and key: a repeated row keeps its last."""
    return df.drop_duplicates([*keys, *_RUN_KEYS], keep="last")


def build_table(df: pd.DataFrame, *, columns: Sequence[str] = ("dataset", "eval", "metric",
                                                                "param"),
                eval_order: Sequence[str] = EVAL_NAMES) -> Table:
    """Pivot labelled, normalised rows (see :func:`normalize`, :func:`apply_labels`).

    Rows: label (+ feature/dataset/split when they vary). Columns: ``columns`` levels that vary,
    sorted by evaluation, first appearance of the metric, then numeric parameter order. A cell
    is the mean over runs (distinct backbone, hash, timestamp) under its label, with their std;
    a single run's ``<metric>_std`` row (k-means over seeds) becomes its std. Settings (the
    ``setting`` column) become one text column per evaluation.
    """
    idx_cols = _index_columns(df)
    levels = [c for c in columns if df[c].astype(str).nunique() > 1] or ["metric"]
    df = df.assign(**{c: _text(df[c]) for c in (*idx_cols, *levels)})
    metric_order = {m: float(i) for i, m in enumerate(dict.fromkeys(df["metric"]))}
    metric_order["setting"] = metric_order.get("val_top1_chosen", 98.0) + 0.5
    eval_rank = {e: i for i, e in enumerate(eval_order)}
    std_rows = df["metric"].str.endswith("_std") & df["metric"].str[:-4].isin(set(df["metric"]))
    main, stds = df[~std_rows], df[std_rows].assign(metric=lambda d: d["metric"].str[:-4])
    keys = [*idx_cols, *levels]
    repeated = int(main.duplicated([*keys, *_RUN_KEYS], keep="last").sum())
    main = _latest_per_run(main, keys)

    def sort_key(col: tuple[str, ...]) -> tuple:
        k = dict(zip(levels, col, strict=True))
        return (k.get("dataset", ""), eval_rank.get(k.get("eval", ""), 99), k.get("eval", ""),
                metric_order.get(k.get("metric", ""), 99), param_key(k.get("param", "")))

    settings = main[main["setting"].astype(str) != ""]
    set_keys = {tuple("setting" if lv == "metric" else "" if lv == "param" else r[lv]
                      for lv in levels) for _, r in settings.iterrows()} if "metric" in levels \
        else set()
    score_keys = {tuple(r) for r in main[levels].itertuples(index=False)}
    col_keys = sorted(score_keys | set_keys, key=sort_key)
    row_keys = list(dict.fromkeys(tuple(r) for r in main[idx_cols].itertuples(index=False)))
    grouped = main.groupby(keys, sort=False)["value"]
    agg = pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=1),
                        "runs": grouped.size()})
    seed_std = _latest_per_run(stds, keys).groupby(keys, sort=False)["value"].mean()
    R, C = len(row_keys), len(col_keys)
    mean, std, runs = np.full((R, C), np.nan), np.full((R, C), np.nan), np.zeros((R, C), int)
    text: dict[tuple[int, int], str] = {}
    set_text = _setting_texts(settings, idx_cols, levels)
    for i, rk in enumerate(row_keys):
        for j, ck in enumerate(col_keys):
            key = (*rk, *ck)
            if ck in set_keys:
                if key in set_text:
                    text[(i, j)] = set_text[key]
            elif key in agg.index:
                a = agg.loc[key]
                mean[i, j], runs[i, j] = a["mean"], int(a["runs"])
                std[i, j] = a["std"] if a["runs"] > 1 else seed_std.get(key, np.nan)
    cols = [_column(levels, c, c in set_keys) for c in col_keys]
    names = ["backbone" if c == "label" else c for c in idx_cols]
    notes = [f"{repeated} rows left out: measured again in one run with nothing in their columns "
             "to tell them apart (the last of each kept)"] if repeated else []
    return Table(names, row_keys, cols, mean, std, runs, text, notes)


def _column(levels: Sequence[str], key: tuple[str, ...], text: bool = False) -> Column:
    k = dict(zip(levels, key, strict=True))
    metric = k.get("metric", "")
    title = " ".join(v for v in key if v)
    if text:
        return Column(key, title, False, 0, text=True)
    return Column(key, title, is_percent(metric), direction(metric))


def _setting_texts(settings: pd.DataFrame, idx_cols: list[str], levels: list[str]
                   ) -> dict[tuple[str, ...], str]:
    """``(*row key, *column key) -> "lr=0.5,wd=0"``: the chosen settings (several runs: joined
    with `` / ``)."""
    out: dict[tuple[str, ...], list[str]] = {}
    for _, r in settings.iterrows():
        ck = tuple("setting" if lv == "metric" else "" if lv == "param" else r[lv]
                   for lv in levels)
        key = (*(r[c] for c in idx_cols), *ck)
        vals = out.setdefault(key, [])
        if r["setting"] not in vals:
            vals.append(r["setting"])
    return {k: " / ".join(v) for k, v in out.items()}


# ------------------------------------------------------------------------- the paper preset


@dataclass(frozen=True)
class PaperColumn:
    """A column of the paper preset: the rows of ``evals`` x ``metric`` (x ``param``)."""

    title: str
    evals: tuple[str, ...]
    metric: str
    param: str | None = None
    core: bool = True


PAPER_COLUMNS: tuple[PaperColumn, ...] = (
    PaperColumn("k-NN@20 top-1", ("knn",), "top1", "k=20"),
    PaperColumn("Linear top-1", ("linear-grid",), "top1"),
    PaperColumn("Logreg top-1", ("linear-logreg",), "top1", core=False),
    PaperColumn("k-means NMI", ("kmeans",), "nmi", core=False),
    PaperColumn("Spherical k-means NMI", ("kmeans-spherical",), "nmi", core=False),
    PaperColumn("NC1", ("neural_collapse",), "nc1"),
    PaperColumn("RankMe", ("collapse",), "rankme"),
)


def paper_table(df: pd.DataFrame, spec: Sequence[PaperColumn] = PAPER_COLUMNS) -> Table:
    """The ``paper`` preset: a row per backbone label, the :data:`PAPER_COLUMNS` that have rows
    (accuracies in percent, NC1 lower-is-better), mean ± std over runs. ``notes`` says which
    columns had no rows (and the k values stored when k=20 is missing)."""
    parts, notes = [], []
    for c in spec:
        m = df[df["eval"].astype(str).isin(c.evals)
               & df["metric"].astype(str).isin([c.metric, f"{c.metric}_std"])]
        if c.param is not None and not m.empty:
            have = sorted(set(m["param"].astype(str)), key=param_key)
            m = m[m["param"].astype(str) == c.param]
            if m.empty:
                notes.append(f"{c.title}: no {c.param} rows (stored: {', '.join(have)})")
        if m.empty:
            continue
        parts.append(m.assign(eval=c.title, param="", setting=""))
    if not parts:
        raise DinoevalError("--preset paper: none of its scores are in these tables (k-NN top1 "
                            "k=20, linear top1, k-means NMI, NC1, RankMe); they hold: "
                            f"{', '.join(df['eval'].astype(str).unique())}")
    rows = pd.concat(parts, ignore_index=True)
    table = build_table(rows, columns=("dataset", "eval"),
                        eval_order=[c.title for c in spec])
    metric_of = {c.title: c.metric for c in spec}
    table.columns = [Column(c.key, c.title, is_percent(metric_of[c.key[-1]]),
                            direction(metric_of[c.key[-1]])) for c in table.columns]
    missing = [c.title for c in spec
               if c.core and c.title not in {k.key[-1] for k in table.columns}]
    if missing:
        notes.append(f"no rows for: {', '.join(missing)}")
    table.notes = notes
    return table


def report_table(frames: Sequence[pd.DataFrame], *, evals: Sequence[str] = (),
                 metrics: Sequence[str] = (), labels: Sequence[str] = (),
                 preset: str | None = None) -> Table:
    """Everything ``dinoeval report`` does before rendering: normalise, keep each backbone's
    latest checkpoint, label, select, pivot."""
    if preset not in (None, "paper"):
        raise DinoevalError(f"--preset must be 'paper', got {preset!r}")
    df = labelled_rows(frames, labels=labels, evals=evals, metrics=metrics)
    notes = df.attrs.get("notes", [])
    table = paper_table(df) if preset == "paper" else build_table(df)
    table.notes = notes + table.notes
    return table

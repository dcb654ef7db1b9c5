"""The results page: a stored results table as pivot tables and plots (k-NN by k, linear,
collapse statistics, Jaccard, anything else), a figures section (per-class accuracy, confusion
matrices, spectra, 2-D maps: drawn by :mod:`dinoeval.report.figure_set`), plus pretraining
curves from a log CSV."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dinoeval.errors import DinoevalError
from dinoeval.report import figures as F
from dinoeval.report.figure_set import figures_html, is_score
from dinoeval.report.html import img_tag, now_utc, page, png_data_uri, write_page

_EVAL_TITLES = {"knn": "k-NN classification", "linear": "Linear probe",
                "collapse": "Collapse statistics", "attention": "Attention-mask Jaccard"}
_ROWS = ("backbone", "arch", "feature")
_NOT_SCORES = {"best_head"}  # indices, not scores: neither plotted nor highlighted


def write_results_report(df: pd.DataFrame, out: Path, *, pretrain_log: Path | None = None,
                         figures: dict[str, Any] | None = None) -> Path:
    """Render a stored results table (and optionally a pretraining log) as one HTML page.

    Args:
        df: a results table with :data:`dinoeval.results.COLUMNS` (e.g. from ``read_results``).
        out: the HTML file to write (its folder is created).
        pretrain_log: a pretrain run folder (its ``log.csv`` per step and ``epochs.csv`` per
            epoch), or one CSV (or JSON-lines) log (a ``log.csv`` brings its sibling
            ``epochs.csv``). Columns are matched by name: a step/epoch axis and any of loss,
            teacher entropy, KL and online k-NN; missing ones are said, not fatal.
        figures: ``{name: matplotlib figure}`` drawn in a "Figures" section (confusion
            matrices, the RankMe spectrum, 2-D maps: see :mod:`dinoeval.report.figure_set`).

    Returns:
        ``out``.
    """
    from dinoeval.results import REQUIRED_COLUMNS

    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DinoevalError(f"not a dinoeval results table (missing columns {', '.join(missing)})")
    out = Path(out)
    body: list[str] = []
    evals = list(df["eval"].astype(str).unique())
    order = [e for e in _EVAL_TITLES if e in evals] + sorted(e for e in evals
                                                             if e not in _EVAL_TITLES)
    toc = [f"<a href=\"#eval-{_slug(e)}\">{html.escape(_EVAL_TITLES.get(e, e))}</a>"
           for e in order]
    if figures:
        toc.append("<a href=\"#figures\">Figures</a>")
    if pretrain_log is not None:
        toc.append("<a href=\"#pretrain\">Pretraining</a>")
    if toc:
        body.append(f"<nav class=toc>{''.join(toc)}</nav>")
    body.append(_backbones_section(df))
    for e in order:
        body.append(_eval_section(e, df[df["eval"].astype(str) == e]))
    if figures:
        body.append(figures_html(figures))
    if pretrain_log is not None:
        body.append(_pretrain_section(Path(pretrain_log)))
    if df.empty:
        body.append("<section><p>The results table is empty.</p></section>")
    versions = ", ".join(sorted(df["version"].astype(str).unique())) or "–"
    sub = [f"{len(df)} rows · {df['backbone'].nunique()} backbones · {len(order)} evaluations · "
           f"dinoeval {html.escape(versions)} · generated {now_utc()}"]
    return write_page(out, page("dinoeval results", sub, body))


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-") or "x"


def _latest(df: pd.DataFrame) -> pd.DataFrame:
    """Repeated measurements keep the latest value (as :func:`dinoeval.results.pivot` does)."""
    keys = [c for c in ("backbone", "arch", "feature", "dataset", "split", "eval", "metric",
                        "param") if c in df.columns]
    return df.sort_values("timestamp", kind="stable").drop_duplicates(keys, keep="last")


def _backbones_section(df: pd.DataFrame) -> str:
    if df.empty:
        return ""
    g = (df.assign(ckpt_hash=df["ckpt_hash"].astype(str))
         .groupby(["backbone", "arch", "ckpt_hash"], dropna=False)
         .agg(evaluations=("eval", lambda s: ", ".join(sorted(set(map(str, s))))),
              datasets=("dataset", lambda s: ", ".join(sorted(set(map(str, s))))),
              rows=("value", "size"))
         .reset_index())
    return ("<section id=backbones><h2>Backbones</h2><div class=scroll>"
            f"{_table_html(g.set_index(['backbone', 'arch', 'ckpt_hash']))}</div></section>")


def _param_key(p: str) -> tuple[float, str]:
    m = re.search(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", str(p))
    return (float(m.group()) if m else float("inf"), str(p))


def short_backbone(spec: str) -> str:
    """A table-sized backbone name: a long path keeps its last two parts (``random:`` kept)."""
    prefix, _, rest = spec.rpartition(":") if re.match(r"^[a-z]+:/", spec) else ("", "", spec)
    parts = Path(rest).parts
    if len(parts) <= 2 or len(spec) <= 32:
        return spec
    return f"{prefix + ':' if prefix else ''}…/{'/'.join(parts[-2:])}"


def _shorten_backbones(df: pd.DataFrame) -> pd.DataFrame:
    """Short backbone names, unless two backbones would share one."""
    specs = df["backbone"].astype(str).unique()
    short = {s: short_backbone(s) for s in specs}
    if len(set(short.values())) < len(specs):
        return df
    return df.assign(backbone=df["backbone"].astype(str).map(short))


def _wide(sub: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Pivot: rows ``backbone/arch/feature`` (+ dataset/split when they vary), latest values."""
    sub = _shorten_backbones(_latest(sub))
    rows = list(_ROWS) + [c for c in ("dataset", "split") if sub[c].astype(str).nunique() > 1]
    cols = [c for c in columns if sub[c].astype(str).nunique() > 1] or [columns[0]]
    wide = sub.assign(param=sub["param"].astype(str)).pivot_table(
        index=rows, columns=cols, values="value", aggfunc="last")
    if "param" in cols:
        keys = sorted(wide.columns, key=lambda c: tuple(
            _param_key(v) if n == "param" else (0.0, str(v))
            for n, v in zip(cols, c if isinstance(c, tuple) else (c,), strict=True)))
        wide = wide[keys]
    return wide


def _table_html(table: pd.DataFrame, *, highlight_max: bool = False) -> str:
    """A pivot table as compact HTML: index levels as name columns, grouped column headers,
    and (optionally) the best value of each column highlighted."""
    idx_names = [str(n) if n is not None else "" for n in table.index.names]
    cols = list(table.columns)
    levels = table.columns.nlevels
    col_tuples = [c if isinstance(c, tuple) else (c,) for c in cols]
    head = []
    for lvl in range(levels):
        cells = []
        if lvl == levels - 1:
            cells += [f"<th class=name>{html.escape(n)}</th>" for n in idx_names]
        else:
            cells.append(f"<th colspan={len(idx_names)}></th>")
        j = 0
        while j < len(col_tuples):  # merge equal neighbours of this level (and the ones above)
            k = j
            while k + 1 < len(col_tuples) and col_tuples[k + 1][:lvl + 1] == col_tuples[j][:lvl + 1]:
                k += 1
            span = f" colspan={k - j + 1}" if k > j else ""
            cells.append(f"<th{span}>{html.escape(str(col_tuples[j][lvl]))}</th>")
            j = k + 1
        head.append("<tr>" + "".join(cells) + "</tr>")
    best = table.max(axis=0, numeric_only=True) if highlight_max and len(table) > 1 else None
    body = []
    for key, row in table.iterrows():
        keys = key if isinstance(key, tuple) else (key,)
        cells = [f"<td class=name>{html.escape(str(v))}</td>" for v in keys]
        for c, v in zip(cols, row, strict=True):
            num = isinstance(v, int | float | np.number) and not isinstance(v, bool)
            is_best = (best is not None and num and np.isfinite(v) and v == best.get(c)
                       and not set(map(str, c if isinstance(c, tuple) else (c,))) & _NOT_SCORES)
            text = (f"{v:.4g}" if num and np.isfinite(v) else "–" if num
                    else html.escape(str(v)))
            cls = " class=best" if is_best else "" if num else " class=name"
            cells.append(f"<td{cls}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table class=tbl>{''.join(head)}{''.join(body)}</table>"


def _series_label(key: Any) -> str:
    parts = key if isinstance(key, tuple) else (key,)
    return " · ".join(str(p) for p in parts if str(p))


def _eval_section(name: str, sub: pd.DataFrame) -> str:
    title = _EVAL_TITLES.get(name, f"Evaluation: {name}")
    head = (f"<section id=\"eval-{_slug(name)}\"><h2>{html.escape(title)}</h2>"
            f"<p class=muted>{len(sub)} rows · datasets: "
            f"{html.escape(', '.join(sorted(sub['dataset'].astype(str).unique())))}</p>")
    try:
        table = _wide(sub, ("metric", "param"))
        higher_better = name in ("knn", "linear", "attention")
        tables = f"<div class=scroll>{_table_html(table, highlight_max=higher_better)}</div>"
    except Exception as err:  # a malformed table still renders the rest of the page
        tables = f"<p class=muted>could not pivot: {html.escape(str(err))}</p>"
    plots = []
    try:
        plots = _eval_plots(name, _latest(sub))
    except Exception as err:
        plots = [f"<p class=muted>could not plot: {html.escape(str(err))}</p>"]
    return head + tables + f"<div class=plots>{''.join(plots)}</div></section>"


_ONE_NUMBER = re.compile(r"^[A-Za-z_]\w*=-?\d+(\.\d+)?(e-?\d+)?$")  # k=20, not lr=1,wd=0


def _eval_plots(name: str, sub: pd.DataFrame) -> list[str]:
    sub = _shorten_backbones(sub[np.isfinite(sub["value"].astype(float))
                                 & ~sub["metric"].astype(str).isin(_NOT_SCORES)])
    if sub.empty:
        return []
    series = ["backbone"] + [c for c in ("feature", "dataset")
                             if sub[c].astype(str).nunique() > 1]
    out = []
    metrics = list(dict.fromkeys(sub["metric"].astype(str)))
    params_numeric = sub["param"].astype(str).map(lambda p: bool(_ONE_NUMBER.match(p)))
    if params_numeric.all() and (name == "knn" or sub["param"].astype(str).nunique() > 2):
        for metric in metrics[:4]:
            m = sub[sub["metric"].astype(str) == metric]
            if m["param"].astype(str).nunique() < 2:
                continue
            xs, ys = {}, {}
            for key, g in m.groupby(series, sort=True):
                g = g.assign(_x=g["param"].astype(str).map(lambda p: _param_key(p)[0]))
                g = g.sort_values("_x")
                lab = _series_label(key)
                xs[lab], ys[lab] = g["_x"].to_numpy(), g["value"].to_numpy()
            xlabel = re.sub(r"[=\d.\-e]+$", "", str(m["param"].iloc[0])) or "param"
            fig = F.plot_lines(xs, ys, xlabel=xlabel, ylabel=metric, title=f"{name}: {metric}",
                               logx=name == "knn")
            out.append(img_tag(png_data_uri(F.figure_png(fig)), f"{name} {metric}", "plot"))
        if out:
            return out
    # Bars: one small chart per score (metrics have different scales); constants, settings and
    # per-class rows are not bars, a score's *_std rows are its error bars.
    for metric in [m for m in metrics if is_score(m)][:12]:
        m = sub[sub["metric"].astype(str) == metric]
        if m["param"].astype(str).nunique() > 6:  # a grid (lr x wd, ...): the table says it
            continue
        m = _with_std(m.assign(_series=m[series].astype(str).agg(" · ".join, axis=1),
                               param=m["param"].astype(str)),
                      sub[sub["metric"].astype(str) == f"{metric}_std"], series)
        if m["param"].nunique() > 1 and m.groupby("_series")["param"].nunique().max() == 1:
            # One setting per backbone (the one a grid chose): one bar each, setting in the name.
            m = m.assign(_series=m["_series"] + " (" + m["param"] + ")", param="")
        params = sorted(m["param"].unique(), key=_param_key)
        cats = list(dict.fromkeys(m["_series"]))
        values = {p or metric: [_cell(m, c, p, "value") for c in cats] for p in params[:12]}
        errors = {p or metric: [_cell(m, c, p, "_err") for c in cats] for p in params[:12]}
        fig = F.plot_bars(cats, values, xlabel=metric, title=f"{name}: {metric}", errors=errors)
        out.append(img_tag(png_data_uri(F.figure_png(fig)), f"{name} {metric}", "plot"))
    return out


def _cell(m: pd.DataFrame, series: str, param: str, col: str) -> float:
    hit = m[(m["_series"] == series) & (m["param"] == param)]
    return float(hit[col].iloc[-1]) if len(hit) else np.nan


def _with_std(m: pd.DataFrame, std: pd.DataFrame, series: list[str]) -> pd.DataFrame:
    """``m`` with an ``_err`` column: the matching ``<metric>_std`` row's value (or NaN)."""
    if std.empty:
        return m.assign(_err=np.nan)
    std = std.assign(_series=std[series].astype(str).agg(" · ".join, axis=1),
                     param=std["param"].astype(str))
    err = (std.drop_duplicates(["_series", "param"], keep="last")
           .set_index(["_series", "param"])["value"])
    return m.assign(_err=[err.get((a, b), np.nan) for a, b in zip(m["_series"], m["param"],
                                                                   strict=True)])


# ------------------------------------------------------------------------------- pretrain log

_X_CANDIDATES = ("step", "global_step", "iteration", "iter", "it", "epoch")
_CURVES = (
    ("Loss", re.compile(r"loss")),
    ("Teacher entropy", re.compile(r"entropy")),
    ("KL(teacher ‖ student)", re.compile(r"(^|[^a-z])kl([^a-z]|$)|kl_?div")),
    ("Online k-NN", re.compile(r"knn|k_nn|nn_acc")),
)
_NOT_CURVES = re.compile(r"(^|_)k$|_k_|(^|_)n$")  # settings logged beside a metric (knn_k)
_LOG_NAMES = ("log.csv", "epochs.csv")  # what `pretrain` writes into its run folder


def pretrain_log_files(path: Path) -> list[Path]:
    """The logs to read for ``path``: a run folder's ``log.csv`` (per step) and ``epochs.csv``
    (per epoch, with the online k-NN), or one file plus its sibling of those names."""
    if path.is_dir():
        files = [path / n for n in _LOG_NAMES if (path / n).is_file()]
        if not files:
            raise DinoevalError(f"pretrain run folder {path} has no {' or '.join(_LOG_NAMES)}")
        return files
    if not path.exists():
        raise DinoevalError(f"pretrain log {path} not found; pass the log.csv (or the run "
                            "folder) that pretrain wrote")
    siblings = [path.with_name(n) for n in _LOG_NAMES] if path.name in _LOG_NAMES else []
    return [path] + [p for p in siblings if p != path and p.is_file()]


def read_pretrain_log(path: Path) -> pd.DataFrame:
    """Read one pretraining log (CSV, or JSON lines for ``.jsonl``); numeric columns only."""
    try:
        json_lines = path.suffix in (".jsonl", ".json")
        log = pd.read_json(path, lines=True) if json_lines else pd.read_csv(path)
    except Exception as err:
        raise DinoevalError(f"pretrain log {path} cannot be read: {err}") from err
    log.columns = [str(c).strip() for c in log.columns]
    return log.apply(pd.to_numeric, errors="coerce").dropna(axis=1, how="all")


def check_pretrain_log(path: Path) -> Path:
    """``path`` when it holds a pretraining log with at least one curve (loss, entropy, KL,
    k-NN, ...), else an error: a wrong file would otherwise give an empty section."""
    for f in pretrain_log_files(path):
        log = read_pretrain_log(f)
        if any(p.search(str(c).lower()) and not _NOT_CURVES.search(str(c).lower())
               for c in log.columns for _, p in _CURVES):
            return path
    raise DinoevalError(f"pretrain log {path} has no loss, entropy, KL or k-NN column; pass the "
                        "log.csv (or the run folder) that pretrain wrote")


def _x_column(log: pd.DataFrame) -> str | None:
    lower = {c.lower(): c for c in log.columns}
    return next((lower[c] for c in _X_CANDIDATES if c in lower), None)


def _pretrain_section(path: Path) -> str:
    logs = [(f, read_pretrain_log(f)) for f in pretrain_log_files(path)]
    desc = " · ".join(f"{html.escape(f.name)}: {len(log)} rows ({html.escape(', '.join(log.columns))})"
                      for f, log in logs)
    head = (f"<section id=pretrain><h2>Pretraining</h2><p class=muted>{html.escape(str(path))}"
            f"</p><p class=muted>{desc}</p>")
    plots = []
    for title, pattern in _CURVES:
        xs: dict[str, np.ndarray] = {}
        ys: dict[str, np.ndarray] = {}
        xlabels = []
        for f, log in logs:
            xcol = _x_column(log)
            for c in log.columns:
                name = c.lower()
                if c == xcol or not pattern.search(name) or _NOT_CURVES.search(name):
                    continue
                key = c if c not in ys else f"{c} ({f.stem})"
                xs[key] = (log[xcol].to_numpy(dtype=float) if xcol
                           else np.arange(len(log), dtype=float))
                ys[key] = log[c].to_numpy(dtype=float)
                xlabels.append(xcol or "row")
        if not ys or all(not np.isfinite(v).any() for v in ys.values()):
            plots.append(f"<p class=muted>{html.escape(title)}: no column in the log</p>")
            continue
        fig = F.plot_lines(xs, ys, xlabel=" / ".join(dict.fromkeys(xlabels)), ylabel=title,
                           title=title)
        plots.append(img_tag(png_data_uri(F.figure_png(fig)), title, "plot"))
    return head + f"<div class=plots>{''.join(plots)}</div></section>"

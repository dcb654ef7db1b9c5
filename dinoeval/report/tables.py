"""Paper tables from the long results table (pure pandas and text; no rich, no matplotlib).

The long table (:mod:`dinoeval.results`) holds one number per row. A paper wants one row per
backbone and one column per score. This module:

* :func:`normalize` reads old and new tables alike: a linear probe's *chosen* setting is row
  metadata (the ``setting`` column), never part of a column key, so three backbones that chose
  three learning rates share one "linear top1" column;
* :func:`resolve_evals` maps ``--eval`` names (stored names, or aliases such as ``linear``) onto
  the stored evaluations and lists what exists when nothing matches;
* :func:`build_table` pivots rows into a :class:`Table` (columns in numeric parameter order,
  mean ± std over runs, ``*_std`` rows folded into their score), :func:`paper_table` picks the
  ``paper`` preset's columns (k-NN@20 top-1, linear top-1, k-means NMI, NC1, RankMe);
* :func:`render` writes markdown, booktabs LaTeX, CSV or JSON text.

Labels: each backbone spec gets a short label (:func:`default_labels`: the shortest unique tail of
its path, never an absolute path), or the one given by ``NAME=SPEC`` (:func:`apply_labels`).
Several specs under one label are several runs of one model: their values are averaged.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePath

import numpy as np
import pandas as pd

from dinoeval.errors import DinoevalError

# Stored evaluation names, in the order tables show them.
EVAL_NAMES: tuple[str, ...] = (
    "knn", "linear-grid", "linear-logreg", "kmeans", "kmeans-spherical", "collapse",
    "neural_collapse", "dino_head", "dino_prototypes", "attention",
)
EVAL_ALIASES: dict[str, tuple[str, ...]] = {
    "linear": ("linear-grid", "linear-logreg"),
    "logreg": ("linear-logreg",),
    "clusters": ("kmeans", "kmeans-spherical"),
    "nc": ("neural_collapse",),
    "head": ("dino_head", "dino_prototypes"),
    "stats": ("collapse", "neural_collapse", "dino_head", "dino_prototypes"),
}
# A linear probe's chosen setting, stored as numbers: chosen_lr, chosen_wd, chosen_C.
CHOSEN_PREFIX = "chosen_"
_SELECTED_METRICS = ("top1", "top5", "val_top1_chosen")

# Fractions shown as percent (and their *_std).
PERCENT_METRICS = frozenset({"top1", "top5", "val_top1", "val_top1_chosen", "accuracy", "purity",
                             "nmi", "ari", "ncc_top1", "jaccard"})
HIGHER_BETTER = PERCENT_METRICS | {"rankme", "rankme_over_dim", "silhouette"}
LOWER_BETTER = frozenset({"nc1", "nc2_equinorm", "nc2_equiangularity", "nc2_max_angle",
                          "nc3_self_duality", "nc4_ncc_disagreement", "alignment", "uniformity",
                          "kl_teacher_student"})
_RUN_KEYS = ("backbone", "ckpt_hash", "timestamp")


def _canon(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def is_percent(metric: str) -> bool:
    """Whether ``metric`` is a fraction in [0, 1] that tables show in percent."""
    base = metric[:-4] if metric.endswith("_std") else metric
    return base in PERCENT_METRICS or base.startswith("recall[")


def direction(metric: str) -> int:
    """+1 when higher is better, -1 when lower is better, 0 for settings and constants."""
    if metric.startswith("recall["):
        return 1
    return 1 if metric in HIGHER_BETTER else -1 if metric in LOWER_BETTER else 0


# ------------------------------------------------------------------------------- rows in


def param_key(param: str) -> tuple:
    """Sort key of a parameter text: numbers compare as numbers (``k=20`` before ``k=100``).

    ``"lr=0.5,wd=0.001"`` -> ``(("lr", 0.5, ""), ("wd", 0.001, ""))``; empty text first."""
    parts = [p for p in re.split(r"[,;\s]+", str(param)) if p]
    key = []
    for p in parts:
        name, _, val = p.partition("=")
        try:
            key.append((name, float(val), ""))
        except ValueError:
            key.append((name, math.inf, val))
    return tuple(key)


def normalize(df: pd.DataFrame) -> pd.DataFrame:
    """The results rows with a ``setting`` column: a selected setting moved out of ``param``.

    Old tables wrote a linear probe's chosen setting into the ``param`` of its ``top1``, ``top5``
    and ``val_top1_chosen`` rows (``lr=0.5,wd=0.001``); new ones write ``param=""`` plus
    ``chosen_*`` rows. Both come out the same: ``param`` empty, ``setting`` the chosen setting
    text, the ``chosen_*`` rows dropped.
    """
    df = df.copy()
    df["param"] = df["param"].fillna("").astype(str)
    df["setting"] = ""
    linear = df["eval"].astype(str).str.startswith("linear-")
    old = linear & df["metric"].isin(_SELECTED_METRICS) & (df["param"] != "")
    df.loc[old, "setting"] = df.loc[old, "param"]
    df.loc[old, "param"] = ""
    chosen = df["metric"].astype(str).str.startswith(CHOSEN_PREFIX)
    if chosen.any():
        keys = ["backbone", "ckpt_hash", "dataset", "split", "feature", "eval", "timestamp"]
        text = (df[chosen].assign(_t=lambda d: d["metric"].str[len(CHOSEN_PREFIX):] + "="
                                  + d["value"].map(lambda v: f"{v:g}"))
                .groupby(keys, dropna=False, sort=False)["_t"].agg(",".join))
        scores = linear & df["metric"].isin(_SELECTED_METRICS) & (df["setting"] == "")
        idx = pd.MultiIndex.from_frame(df.loc[scores, keys].astype(object))
        found = text.reindex(idx)
        df.loc[scores, "setting"] = [t if isinstance(t, str) else "" for t in found]
        df = df[~chosen]
    return df.reset_index(drop=True)


def resolve_evals(requested: Sequence[str], present: Sequence[str]) -> list[str]:
    """Stored evaluation names for ``--eval`` names (stored names or :data:`EVAL_ALIASES`).

    ``_`` and ``-`` are interchangeable. Raises :class:`DinoevalError` naming what the tables
    hold when a name is unknown or matches nothing stored."""
    present = list(dict.fromkeys(map(str, present)))
    by_canon = {_canon(p): p for p in present}
    out: list[str] = []
    for name in requested:
        c = _canon(name)
        if c in by_canon:
            out.append(by_canon[c])
            continue
        alias = EVAL_ALIASES.get(c) or EVAL_ALIASES.get(c.replace("-", "_"))
        hits = [by_canon[_canon(a)] for a in alias or () if _canon(a) in by_canon]
        if hits:
            out += hits
            continue
        known = alias is not None or c in {_canon(e) for e in EVAL_NAMES}
        what = f"--eval {name!r} has no rows in these tables" if known else \
            f"unknown --eval {name!r}"
        raise DinoevalError(f"{what}; they hold: {', '.join(present) or 'nothing'}"
                            f" (aliases: {_alias_text()})")
    return list(dict.fromkeys(out))


def _alias_text() -> str:
    return "; ".join(f"{a} = {'+'.join(v)}" for a, v in EVAL_ALIASES.items())


def select(df: pd.DataFrame, *, evals: Sequence[str] = (), metrics: Sequence[str] = ()
           ) -> pd.DataFrame:
    """Rows of the given evaluations (names or aliases) and metrics; an error that lists what
    exists when nothing is left."""
    if evals:
        df = df[df["eval"].astype(str).isin(resolve_evals(evals, df["eval"].unique()))]
    if not metrics:  # a grid's per-setting held-out scores: diagnostics, shown on request
        df = df[df["metric"].astype(str) != "val_top1"]
    if metrics:
        present = list(dict.fromkeys(df["metric"].astype(str)))
        wanted = set(metrics) | {f"{m}_std" for m in metrics}
        missing = [m for m in metrics if m not in present]
        df = df[df["metric"].astype(str).isin(wanted)]
        if missing:
            raise DinoevalError(f"--metric {', '.join(missing)}: no such rows"
                                f"{' for these --eval' if evals else ''}; there are: "
                                f"{', '.join(present) or 'none'}")
    if df.empty:
        raise DinoevalError("no rows left to report; check --eval/--metric and the files")
    return df


# ------------------------------------------------------------------------------- labels


def default_labels(specs: Sequence[str]) -> dict[str, str]:
    """A short, unique label per backbone spec: the shortest tail of its path that tells it
    apart (``runs/a/checkpoint.pth`` -> ``a/checkpoint.pth``), its ``kind:`` prefix kept
    (``random:…``); never an absolute path."""
    specs = list(dict.fromkeys(map(str, specs)))
    parts = {s: _spec_parts(s) for s in specs}

    def tail(s: str, n: int) -> tuple[str, tuple[str, ...]]:
        return parts[s][0], parts[s][1][-n:]

    out = {}
    for s in specs:
        prefix, p = parts[s]
        n = 2 if len(p) > 1 and re.match(r"(checkpoint|teacher|model)", p[-1]) else 1
        while n < len(p) and sum(tail(o, n) == tail(s, n) for o in specs) > 1:
            n += 1
        out[s] = prefix + "/".join(p[-n:])
    return out


def _spec_parts(spec: str) -> tuple[str, tuple[str, ...]]:
    """``(prefix, path parts)``: ``random:runs/a.pth`` -> ``("random:", ("runs", "a.pth"))``."""
    prefix = ""
    m = re.match(r"^([a-z]+:)", spec)
    if m and not re.match(r"^[A-Za-z]:[\\/]", spec):
        prefix, spec = m.group(1), spec[len(m.group(1)):]
    parts = tuple(p for p in PurePath(spec).parts if p not in ("/", ""))
    return prefix, parts or (spec,)


def latest_checkpoints(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Rows of each backbone's latest checkpoint hash only, and a note per backbone whose file
    changed (older rows measured a file that is no longer there)."""
    if df.empty:
        return df, []
    last = df.sort_values("timestamp", kind="stable").groupby("backbone")["ckpt_hash"].last()
    keep = df["ckpt_hash"].astype(str) == df["backbone"].map(last).astype(str)
    notes = [f"{b}: {n} rows of older checkpoint versions (other hashes) left out"
             for b, n in df[~keep].groupby("backbone").size().items()]
    return df[keep], notes


def parse_labels(items: Sequence[str]) -> list[tuple[str, str]]:
    """``NAME=SPEC`` strings as ``(name, spec)`` pairs (SPEC: a backbone spec, a path tail or a
    checkpoint-hash prefix)."""
    pairs = []
    for item in items:
        name, sep, spec = item.partition("=")
        if not sep or not name.strip() or not spec.strip():
            raise DinoevalError(f"--label {item!r} must read NAME=SPEC, e.g. "
                                "DINO=runs/a/checkpoint.pth")
        pairs.append((name.strip(), spec.strip()))
    return pairs


def apply_labels(df: pd.DataFrame, pairs: Sequence[tuple[str, str]] = ()) -> pd.DataFrame:
    """``df`` with a ``label`` column: the given ``(name, spec)`` labels, else the defaults.

    A spec matches a backbone equal to it, a backbone path ending in it, or a checkpoint hash
    starting with it; one that matches nothing is an error naming the stored backbones."""
    backbones = list(dict.fromkeys(df["backbone"].astype(str)))
    labels = default_labels(backbones)
    for name, spec in pairs:
        hit = [b for b in backbones if b == spec or b.endswith("/" + spec.lstrip("./"))]
        hashes = df.loc[df["ckpt_hash"].astype(str).str.startswith(spec), "backbone"]
        hit += [b for b in hashes.astype(str).unique() if b not in hit]
        if not hit:
            raise DinoevalError(f"--label {name}={spec}: no backbone matches; the tables hold "
                                f"{', '.join(labels.values())}")
        labels.update(dict.fromkeys(hit, name))
    return df.assign(label=df["backbone"].astype(str).map(labels))


# ------------------------------------------------------------------------------- the table


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


# ------------------------------------------------------------------------------- text out


def _number(v: float, percent: bool, digits: int) -> str:
    if percent:
        return f"{100 * v:.{digits}f}"
    return f"{v:.4g}"


def cell_text(table: Table, i: int, j: int, *, digits: int = 1, pm: str = " ± ") -> str:
    """A cell as text: ``84.5``, ``84.5 ± 0.3`` (several runs or seeds), ``–`` when missing."""
    c = table.columns[j]
    if c.text:
        return table.text.get((i, j), "–")
    v, s = table.mean[i, j], table.std[i, j]
    if not np.isfinite(v):
        return "–"
    out = _number(v, c.percent, digits)
    return out + pm + _number(s, c.percent, digits) if np.isfinite(s) else out


def _title(c: Column) -> str:
    arrow = " ↓" if c.direction < 0 else ""
    return f"{c.title}{' (%)' if c.percent else ''}{arrow}"


def render_markdown(table: Table, *, digits: int = 1) -> str:
    """A GitHub-flavoured markdown table; the best value of each scored column in bold."""
    best = table.best()
    head = [*table.index_names, *(_title(c) for c in table.columns)]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join([":---"] * len(table.index_names)
                            + [":---" if c.text else "---:" for c in table.columns]) + "|"]
    for i, rk in enumerate(table.index):
        cells = [cell_text(table, i, j, digits=digits) for j in range(len(table.columns))]
        cells = [f"**{t}**" if best[i, j] else t for j, t in enumerate(cells)]
        lines.append("| " + " | ".join([*(x.replace("|", "\\|") for x in rk), *cells]) + " |")
    return "\n".join(lines) + "\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
        "±": r"$\pm$", "↓": r"$\downarrow$", "–": "--", "…": r"\ldots{}"}


def tex_escape(text: str) -> str:
    """``text`` safe inside a LaTeX table cell."""
    return "".join(_TEX.get(ch, ch) for ch in str(text))


def render_latex(table: Table, *, digits: int = 1) -> str:
    """A booktabs ``tabular`` (``\\usepackage{booktabs}``): ``\\toprule``, one ``\\midrule``,
    ``\\bottomrule``; grouped headers with ``\\cmidrule``; the best value of each scored column
    in bold; ``--`` for a missing value; mean ± std as ``84.5 $\\pm$ 0.3``."""
    best = table.best()
    ni, nc = len(table.index_names), len(table.columns)
    lines = [r"% dinoeval report; needs \usepackage{booktabs}",
             r"\begin{tabular}{" + "l" * ni + "".join("l" if c.text else "r"
                                                        for c in table.columns) + "}",
             r"\toprule"]
    levels = len(table.columns[0].key) if table.columns else 1
    for lvl in range(levels - 1):  # grouped upper header levels (dataset, eval)
        cells, rules, j = [""] * ni, [], 0
        while j < nc:
            k = j
            top = table.columns[j].key[:lvl + 1]
            while k + 1 < nc and table.columns[k + 1].key[:lvl + 1] == top:
                k += 1
            name = table.columns[j].key[lvl]
            cells.append(rf"\multicolumn{{{k - j + 1}}}{{c}}{{{tex_escape(name)}}}")
            if name:
                rules.append(rf"\cmidrule(lr){{{ni + j + 1}-{ni + k + 1}}}")
            j = k + 1
        lines += [" & ".join(cells) + r" \\", " ".join(rules)] if rules else []
    bottom = [tex_escape(n.capitalize()) for n in table.index_names]
    for c in table.columns:
        sub = (c.key[-1] if levels > 1 else c.title)
        t = Column(c.key, sub, c.percent, c.direction)
        bottom.append(tex_escape(_title(t)))
    lines += [" & ".join(bottom) + r" \\", r"\midrule"]
    for i, rk in enumerate(table.index):
        cells = [tex_escape(x) for x in rk]
        for j in range(nc):
            t = cell_text(table, i, j, digits=digits)
            head, sep, tail = t.partition(" ± ")
            head = tex_escape(head)
            cells.append((rf"\textbf{{{head}}}" if best[i, j] else head)
                         + (r" $\pm$ " + tex_escape(tail) if sep else ""))
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def render_csv(table: Table, *, digits: int = 1) -> str:
    """CSV: the index columns, then per column its shown value (and ``<title> std``)."""
    out = pd.DataFrame(table.index, columns=table.index_names)
    for j, c in enumerate(table.columns):
        if c.text:
            out[_title(c)] = [table.text.get((i, j), "") for i in range(len(table.index))]
            continue
        scale = 100.0 if c.percent else 1.0
        out[_title(c)] = np.round(table.mean[:, j] * scale, 6)
        if np.isfinite(table.std[:, j]).any():
            out[f"{_title(c)} std"] = np.round(table.std[:, j] * scale, 6)
    return out.to_csv(index=False)


def table_records(table: Table) -> list[dict]:
    """The table as JSON-ready records, one per non-empty cell, in stored units (fractions)."""
    recs = []
    for i, rk in enumerate(table.index):
        for j, c in enumerate(table.columns):
            base = {**dict(zip(table.index_names, rk, strict=True)), "column": c.title,
                    "key": list(c.key)}
            if c.text:
                if (i, j) in table.text:
                    recs.append({**base, "text": table.text[(i, j)]})
                continue
            if not np.isfinite(table.mean[i, j]):
                continue
            s = table.std[i, j]
            recs.append({**base, "mean": float(table.mean[i, j]),
                         "std": float(s) if np.isfinite(s) else None, "runs": int(table.runs[i, j]),
                         "unit": "fraction" if c.percent else "",
                         "higher_is_better": {1: True, -1: False}.get(c.direction)})
    return recs


def render(table: Table, fmt: str, *, digits: int = 1) -> str:
    """``markdown``, ``latex``, ``csv`` or ``json`` text of ``table``."""
    if fmt == "json":
        return json.dumps({"columns": [c.title for c in table.columns], "notes": table.notes,
                           "cells": table_records(table)}, indent=2) + "\n"
    renderers = {"markdown": render_markdown, "latex": render_latex, "csv": render_csv}
    if fmt not in renderers:
        raise DinoevalError(f"--format must be markdown, latex, csv or json, got {fmt!r}")
    return renderers[fmt](table, digits=digits)


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


def labelled_rows(frames: Sequence[pd.DataFrame], *, labels: Sequence[str] = (),
                  evals: Sequence[str] = (), metrics: Sequence[str] = ()) -> pd.DataFrame:
    """The rows a report shows: normalised (:func:`normalize`), each backbone's latest
    checkpoint (:func:`latest_checkpoints`), a ``label`` column, the selected evals/metrics.
    ``attrs["notes"]`` says what was left out."""
    df = pd.concat([normalize(f) for f in frames], ignore_index=True)
    df, notes = latest_checkpoints(df.sort_values("timestamp", kind="stable"))
    df = select(apply_labels(df, parse_labels(labels)), evals=evals, metrics=metrics)
    df.attrs["notes"] = notes
    return df

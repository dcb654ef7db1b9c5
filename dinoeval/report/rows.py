"""Rows in: the stored long results table read back for a report (pure pandas).

The long table (:mod:`dinoeval.results`) holds one number per row. Before any table or page:

* :func:`normalize` reads old and new tables alike: a linear probe's *chosen* setting is row
  metadata (the ``setting`` column), never part of a column key, so three backbones that chose
  three learning rates share one "linear top1" column;
* :func:`resolve_evals` maps ``--eval`` names (stored names, or aliases such as ``linear``) onto
  the stored evaluations and lists what exists when nothing matches; :func:`select` keeps the
  asked evaluations and metrics;
* the metric vocabulary: which metrics are fractions shown in percent (:func:`is_percent`) and
  which way is better (:func:`direction`);
* :func:`labelled_rows` does all of it plus the labels of :mod:`dinoeval.report.labels`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import pandas as pd

from dinoeval.errors import DinoevalError
from dinoeval.report.labels import apply_labels, latest_checkpoints, parse_labels

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

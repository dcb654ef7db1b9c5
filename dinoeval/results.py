"""The one long-format result table every command writes.

Each evaluation returns a typed result with ``to_rows()`` giving :class:`Row` objects (metric,
param, value, n). A runner attaches a :class:`Context` (which backbone, which data, which feature)
and :func:`to_frame` turns them into a DataFrame with the fixed :data:`COLUMNS`. A paper's table is
one ``pivot`` away (:func:`pivot`).
"""

from __future__ import annotations

import datetime as _dt
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from dinoeval.errors import DinoevalError

COLUMNS: tuple[str, ...] = (
    "backbone", "ckpt_hash", "arch", "dataset", "split", "feature", "eval", "metric", "param",
    "value", "n", "seconds", "version", "timestamp",
)
_DTYPES = {"value": "float64", "n": "Int64", "seconds": "float64"}


@dataclass(frozen=True)
class Row:
    """One number. ``param`` is the metric's parameter as text (``"k=20"``, ``"lr=0.01"``, ``""``)."""

    eval: str
    metric: str
    value: float
    param: str = ""
    n: int | None = None


@dataclass(frozen=True)
class Context:
    """Where a number comes from."""

    backbone: str
    ckpt_hash: str
    arch: str
    dataset: str
    split: str
    feature: str


def to_frame(rows: Iterable[Row], context: Context, *, seconds: float | None = None) -> pd.DataFrame:
    """Rows plus their context as a DataFrame with exactly :data:`COLUMNS`."""
    from dinoeval import __version__

    now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    records = [
        {**asdict(context), **asdict(r), "seconds": seconds, "version": __version__,
         "timestamp": now}
        for r in rows
    ]
    df = pd.DataFrame.from_records(records, columns=list(COLUMNS))
    return df.astype(_DTYPES)


def concat(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate result frames, keeping the schema even when empty."""
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=list(COLUMNS)).astype(_DTYPES)
    return pd.concat(frames, ignore_index=True)[list(COLUMNS)].astype(_DTYPES)


def read_results(path: str | Path) -> pd.DataFrame:
    """Read a results file written by :func:`append_results` (CSV or parquet)."""
    path = Path(path)
    if not path.exists():
        raise DinoevalError(f"results file {path} not found; write one with --out FILE")
    try:
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(
            path, dtype={"param": str, "ckpt_hash": str}, keep_default_na=False,
            na_values={"value": ["", "nan", "NaN"], "n": [""], "seconds": [""]})
    except Exception as err:
        raise DinoevalError(f"results file {path} cannot be read: {err}") from err
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DinoevalError(f"{path} is not a dinoeval results table (missing columns "
                            f"{', '.join(missing)})")
    return df[list(COLUMNS)].astype(_DTYPES)


def check_results_path(path: str | Path) -> Path:
    """Validate an ``--out`` results file before any work: a ``.csv``/``.parquet`` name whose
    folder can exist and, when the file exists, a dinoeval results table (rows get appended)."""
    from dinoeval.checks import check_output_path

    path = check_output_path(Path(path))
    if path.suffix not in (".csv", ".parquet"):
        raise DinoevalError(f"results file {path} must end in .csv or .parquet")
    if path.exists():
        read_results(path)
    return path


def append_results(path: str | Path, df: pd.DataFrame) -> Path:
    """Append ``df`` to ``path`` (CSV or ``.parquet``), atomically: the old rows are never lost."""
    path = Path(path)
    if path.suffix not in (".csv", ".parquet"):
        raise DinoevalError(f"results file {path} must end in .csv or .parquet")
    combined = concat([read_results(path), df]) if path.exists() else concat([df])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise DinoevalError(f"cannot write results file {path}: {err.strerror or err}; choose "
                            "a writable --out") from None
    os.close(fd)
    try:
        if path.suffix == ".parquet":
            combined.to_parquet(tmp, index=False)
        else:
            combined.to_csv(tmp, index=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def pivot(df: pd.DataFrame, *, rows: Sequence[str] = ("backbone", "arch", "feature"),
          columns: Sequence[str] = ("dataset", "eval", "metric", "param")) -> pd.DataFrame:
    """A wide table: one row per backbone, one column per (dataset, eval, metric, param).

    Repeated measurements keep the latest value.
    """
    df = df.sort_values("timestamp", kind="stable")
    cols = [c for c in columns if df[c].astype(str).nunique() > 1] or [columns[-2]]
    table = df.pivot_table(index=list(rows), columns=cols, values="value", aggfunc="last")
    return table


def render(df: pd.DataFrame, fmt: str, *, floatfmt: str = ".4g") -> str:
    """Render a (pivoted) table as ``markdown``, ``latex`` or ``csv`` text."""
    if fmt == "csv":
        return df.to_csv()
    if fmt == "markdown":
        flat = df.copy()
        if isinstance(flat.columns, pd.MultiIndex):
            flat.columns = [" ".join(str(x) for x in c if str(x)) for c in flat.columns]
        return flat.reset_index().to_markdown(index=False, floatfmt=floatfmt)
    if fmt == "latex":
        return df.to_latex(float_format=lambda v: format(v, floatfmt), na_rep="--",
                           multicolumn=True, escape=True)
    raise DinoevalError(f"unknown format {fmt!r}; use markdown, latex or csv")

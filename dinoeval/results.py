"""The one long-format result table every command writes.

Each evaluation returns a typed result with ``to_rows()`` giving :class:`Row` objects (metric,
param, value, n). A runner attaches a :class:`Context` (which backbone, which data, which feature)
and :func:`to_frame` turns them into a DataFrame with the fixed :data:`COLUMNS`. A paper's table is
one ``pivot`` away (:func:`pivot`).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from dinoeval.errors import DinoevalError

IDENTITY_COLUMNS: tuple[str, ...] = (
    "network", "resolution", "train_data", "train_n", "data", "data_n",
)
"""What else a row was measured with, beside backbone/arch/dataset/split/feature: ``network`` (which
network of a training checkpoint: ``teacher``/``student``, empty for a plain backbone),
``resolution`` (the input side, e.g. ``224``, or ``native`` for pixels at the images' size),
``train_data``/``train_n`` (the train or bank spec and its image count, for k-NN and linear
probes) and ``data``/``data_n`` (the spec and image count of the data the row is measured on).
Tables written before these columns existed load with them missing (empty)."""

LABEL_COLUMN = "label"
"""The name the user gave a backbone (``--ckpt NAME=SPEC``), empty when none: rows, plots and
reports show it instead of the spec. Not part of any identity or cache key; tables written
before it existed load with it empty."""

COLUMNS: tuple[str, ...] = (
    "backbone", LABEL_COLUMN, "ckpt_hash", "arch", "dataset", "split", "feature", *IDENTITY_COLUMNS, "eval",
    "metric", "param", "value", "n", "seconds", "version", "timestamp",
)
REQUIRED_COLUMNS: tuple[str, ...] = tuple(c for c in COLUMNS
                                         if c not in (*IDENTITY_COLUMNS, LABEL_COLUMN))
_DTYPES = {"value": "float64", "n": "Int64", "seconds": "float64", "train_n": "Int64",
           "data_n": "Int64"}


def resolution_text(img_size: Sequence[int] | None) -> str:
    """The ``resolution`` column of an input size ``(H, W)``: ``224``, ``224x320``, or
    ``native`` (``None``: images at their own size)."""
    if img_size is None:
        return "native"
    h, w = (int(v) for v in img_size)
    return str(h) if h == w else f"{h}x{w}"


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
    """Where a number comes from (see :data:`IDENTITY_COLUMNS` for the last six)."""

    backbone: str
    ckpt_hash: str
    arch: str
    dataset: str
    split: str
    feature: str
    network: str = ""
    resolution: str = ""
    train_data: str = ""
    train_n: int | None = None
    data: str = ""
    data_n: int | None = None
    label: str = ""


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


def _ordered(columns: Iterable[str]) -> list[str]:
    """:data:`COLUMNS` first, then any other column in order of first appearance."""
    extra = [c for c in dict.fromkeys(columns) if c not in COLUMNS]
    return [*COLUMNS, *extra]


def concat(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate result frames, keeping the schema even when empty.

    Columns beyond :data:`COLUMNS` are kept (after them); rows of a frame without such a column
    get a missing value there.
    """
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=list(COLUMNS)).astype(_DTYPES)
    cols = _ordered(c for f in frames for c in f.columns)
    return pd.concat(frames, ignore_index=True).reindex(columns=cols).astype(_DTYPES)


def read_results(path: str | Path) -> pd.DataFrame:
    """Read a results file written by :func:`append_results` (CSV or parquet).

    Columns beyond :data:`COLUMNS` are kept, after them. Raises :class:`DinoevalError` when the
    file is missing, unreadable, lacks a column of :data:`COLUMNS`, or (CSV) has a row whose
    number of fields differs from the header's (a line cut short by a crash or an editor).
    """
    path = Path(path)
    if not path.exists():
        raise DinoevalError(f"results file {path} not found; write one with --out FILE")
    try:
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
        else:
            header = _check_csv_rows(path)
            extra_na = {c: ["", "nan", "NaN"] for c in header if c not in COLUMNS}
            df = pd.read_csv(
                path, dtype={"param": str, "ckpt_hash": str}, keep_default_na=False,
                na_values={**extra_na, "value": ["", "nan", "NaN"], "n": [""], "seconds": [""],
                           "train_n": [""], "data_n": [""]})
    except DinoevalError:
        raise
    except Exception as err:
        raise DinoevalError(f"results file {path} cannot be read: {err}") from err
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DinoevalError(f"{path} is not a dinoeval results table (missing columns "
                            f"{', '.join(missing)})")
    for c in (*IDENTITY_COLUMNS, LABEL_COLUMN):  # a table from before these: missing values
        if c not in df.columns:
            df[c] = pd.NA if c in _DTYPES else ""
        elif c not in _DTYPES:
            df[c] = df[c].astype(str).replace({"nan": "", "<NA>": ""})
    return df[_ordered(df.columns)].astype(_DTYPES)


def _check_csv_rows(path: Path) -> list[str]:
    """The header of a CSV table; refuses a row with the wrong number of fields, naming its line."""
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return []
        for row in reader:
            if row and len(row) != len(header):
                cut = "" if f.read(1) else " (the last line, cut short?)"
                raise DinoevalError(
                    f"results file {path} line {reader.line_num} has {len(row)} fields where the "
                    f"header has {len(header)}{cut}; repair or delete that line, then rerun")
    return header


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
    """Append ``df`` to ``path`` (CSV or ``.parquet``); returns ``path``.

    Safe with concurrent writers: the read-append-replace cycle holds an exclusive lock on the
    sibling ``.<name>.lock`` file, and the new table replaces the old one atomically
    (:func:`dinoeval._io.atomic_write`), so no row of any writer is ever lost and a reader sees
    a complete table. A column only ``df`` (or only the old table) has is kept; the other rows
    get a missing value there. Raises :class:`DinoevalError` for a bad name, an unreadable table
    (see :func:`read_results`) or a full disk.
    """
    from dinoeval._io import atomic_write, locked

    path = Path(path)
    if path.suffix not in (".csv", ".parquet"):
        raise DinoevalError(f"results file {path} must end in .csv or .parquet")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with locked(path):
            combined = concat([read_results(path), df]) if path.exists() else concat([df])
            if path.suffix == ".parquet":
                atomic_write(path, lambda tmp: combined.to_parquet(tmp, index=False))
            else:
                atomic_write(path, lambda tmp: combined.to_csv(tmp, index=False))
    except DinoevalError:
        raise
    except OSError as err:
        raise DinoevalError(f"cannot write results file {path}: {err.strerror or err}; choose "
                            "a writable --out") from None
    return path


def append_run_config(path: str | Path, entry: dict[str, object]) -> Path:
    """Append ``entry`` to the ``<results>.config.json`` sidecar of results file ``path``.

    The sidecar holds ``{"runs": [...]}``, oldest first. Like :func:`append_results` the update
    holds the table's sidecar lock and replaces the file atomically, so concurrent commands keep
    every entry. An unreadable old sidecar is kept aside as ``.bak`` (never fail after the work).
    """
    import json

    from dinoeval._io import atomic_write_text, locked

    out = Path(path).with_name(Path(path).name + ".config.json")
    with locked(out):
        runs: list[object] = []
        if out.exists():
            try:
                old = json.loads(out.read_text())
                runs = old["runs"] if isinstance(old, dict) and "runs" in old else [old]
            except (OSError, ValueError):
                out.replace(out.with_name(out.name + ".bak"))
        atomic_write_text(out, json.dumps({"runs": [*runs, entry]}, indent=1, default=str))
    return out


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

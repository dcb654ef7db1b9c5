"""Shared CLI plumbing: error handling, progress, tables, output files."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from dinoeval.errors import DinoevalError

console = Console(stderr=True)
out_console = Console()


DEBUG_ENV = "DINOEVAL_DEBUG"


def say(text: object, style: str = "", *, lead: str = "", lead_style: str = "") -> None:
    """One line on stderr: ``lead`` (e.g. ``"wrote "``) in ``lead_style``, then ``text`` in
    ``style``. Nothing is read as rich markup, so user strings (``digits:train[:200]``, paths,
    class names) print as given; commands print through this, never an f-string rich would parse."""
    line = Text.assemble((lead, lead_style), (str(text), style))
    console.print(line, highlight=False, soft_wrap=True)


# --json: tables are collected and printed as one JSON document on stdout at the end.
_JSON_ROWS: contextvars.ContextVar[list[dict[str, Any]] | None] = contextvars.ContextVar(
    "dinoeval_json_rows", default=None)


@contextlib.contextmanager
def json_output(enabled: bool) -> Iterator[None]:
    """While active with ``enabled``, :func:`print_results` (and every other table a command
    prints) collects its rows instead of drawing; on a clean exit the rows are printed to stdout
    as one JSON array, and nothing else is. Notes and progress stay on stderr."""
    if not enabled:
        yield
        return
    rows: list[dict[str, Any]] = []
    token = _JSON_ROWS.set(rows)
    try:
        yield
    finally:
        _JSON_ROWS.reset(token)
    out_console.file.write(json.dumps(rows, indent=1, default=str, allow_nan=False) + "\n")
    out_console.file.flush()


def json_rows() -> list[dict[str, Any]] | None:
    """The rows being collected by an active ``--json`` (None without one)."""
    return _JSON_ROWS.get()


def emit_table(df: pd.DataFrame) -> bool:
    """Under ``--json``: add ``df``'s rows (missing values as null) and return True."""
    rows = json_rows()
    if rows is None:
        return False
    clean = df.astype(object).where(pd.notna(df), None)
    rows.extend(clean.to_dict(orient="records"))
    return True


def _error_line(message: str, code: int) -> typer.Exit:
    # Messages hold paths and class names such as "photo[1].jpg": never parse them as markup.
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """One red line and a non-zero exit instead of a traceback.

    :class:`DinoevalError` (bad input) and file-system errors exit with code 2; anything else is
    a bug in dinoeval or its libraries: one line naming the exception and exit code 1, with the
    full traceback when the environment variable ``DINOEVAL_DEBUG`` is set.
    """
    logging.basicConfig(level=logging.WARNING, handlers=[RichHandler(console=console,
                        show_path=False)], format="%(message)s", force=True)
    try:
        yield
    except DinoevalError as err:
        raise _error_line(str(err), 2) from None
    except FileNotFoundError as err:
        raise _error_line(f"file not found: {err.filename}", 2) from None
    except OSError as err:  # a folder where a file should be, no permission, disk full, ...
        where = f" ({err.filename})" if err.filename else ""
        raise _error_line(f"{err.strerror or err}{where}", 2) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception as err:
        if os.environ.get(DEBUG_ENV):  # print it here: click turns some (EOFError) into "Aborted."
            import traceback

            traceback.print_exc()
            raise typer.Exit(1) from None
        first = (str(err).splitlines() or [""])[0]
        raise _error_line(f"unexpected {type(err).__name__}: {first} (a dinoeval bug; rerun "
                          f"with {DEBUG_ENV}=1 for the traceback and report it)", 1) from None


def make_progress() -> Progress:
    """A rich progress bar with counts, rate and time left (on stderr)."""
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, transient=False,
    )


def print_results(df: pd.DataFrame, *, title: str, drop_constant: bool = True) -> None:
    """Print a results frame as a rich table (constant context columns shown in the caption).

    Backbones show as short labels (full specs in the caption), text never ends in "…" (long
    cells fold), and a probe's per-setting held-out rows stay in ``--out`` only."""
    if emit_table(df.drop(columns=["version", "timestamp"], errors="ignore")):
        return
    show = df.drop(columns=["version", "timestamp", "ckpt_hash"], errors="ignore")
    caption = []
    grid = show["metric"].astype(str) == "val_top1" if "metric" in show else None
    if grid is not None and grid.any() and not grid.all():
        caption.append(f"{int(grid.sum())} per-setting val_top1 rows not shown (in --out)")
        show = show[~grid]
    if "backbone" in show and len(show):
        show, legend = _named_backbones(show)
        caption += legend
    if drop_constant and len(show) > 1:
        for c in list(show.columns):
            if c not in ("metric", "value", "param") and show[c].astype(str).nunique() == 1:
                caption.append(f"{c}={_caption_value(c, show[c].iloc[0])}")
                show = show.drop(columns=c)
    table = Table(title=title, caption=escape(" · ".join(caption)) or None,
                  header_style="bold cyan")
    for c in show.columns:
        table.add_column(escape(str(c)), overflow="fold",
                         justify="right" if c in ("value", "n", "seconds") else "left")
    for _, r in show.iterrows():
        table.add_row(*[escape(_caption_value(c, v).removesuffix(" s") if c == "seconds"
                               else _fmt(v)) for c, v in r.items()])
    out_console.print(table)


def _named_backbones(show: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Rows with ``backbone`` replaced by its label (``--ckpt NAME=SPEC``) or a short name, and
    the legend lines ``name = spec`` for the caption; the ``label`` column is dropped."""
    from dinoeval.report.labels import default_labels

    specs = show["backbone"].astype(str)
    given = (show["label"].fillna("").astype(str).replace({"nan": "", "<NA>": ""})
             if "label" in show else pd.Series("", index=show.index))
    short = default_labels(specs.unique())
    names = given.where(given != "", specs.map(short))
    legend = [f"{n} = {s}" for n, s in dict.fromkeys(zip(names, specs, strict=True)) if n != s]
    return show.assign(backbone=names).drop(columns="label", errors="ignore"), legend


def _caption_value(column: str, v: object) -> str:
    """A constant column in the caption: seconds as ``12.3 s``, numbers as in the table."""
    if column == "seconds" and isinstance(v, int | float) and not pd.isna(v):
        return f"{v:.1f} s"
    return _fmt(v)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return "" if pd.isna(v) else f"{v:.4f}" if abs(v) < 1e4 else f"{v:.4g}"
    return "" if v is None or v is pd.NA else str(v)


def check_out(out: Path | None) -> None:
    """Fail on a bad ``--out`` results file before the work (see ``check_results_path``)."""
    if out is not None:
        from dinoeval.results import check_results_path

        check_results_path(out)


def write_results(df: pd.DataFrame, out: Path | None) -> None:
    """Append to ``--out`` when given and say where the rows went.

    When the write fails after all (the folder became read-only, the disk filled), the rows are
    printed first, so no result of the work is lost, and the error is raised."""
    if out is None:
        return
    from dinoeval.results import append_results

    try:
        path = append_results(out, df)
    except (DinoevalError, OSError):
        print_results(df, title=f"NOT written to {out}")
        raise
    say(path, lead=f"appended {len(df)} rows to ", lead_style="green")


# Options that are not fields of a config (those are generated: dinoeval.cli._options).
CkptOpt = Annotated[list[str], typer.Option(
    "--ckpt", "-c", help="Backbone: a checkpoint file or folder (DINO v1, DINOv2, DINOv3, "
    "XCiT, ResNet-50, Hugging Face exports, pretrain runs; `dinoeval inspect --families`), "
    "timm:NAME, random:ARCH or pixels; NAME=SPEC names it in tables, plots and reports "
    "(a path that exists is never split). Repeat to compare several side by side.")]


def parse_ckpt(value: str) -> tuple[str, str]:
    """``(label, spec)`` of one ``--ckpt`` value; the label is ``""`` when none is given.

    The rule: a value naming a file or folder that exists is a spec as given (so a path holding
    ``=`` still works); otherwise ``NAME=SPEC`` when the text before the first ``=`` is non-empty
    and holds no ``/`` or ``\\`` (``runs/lr=0.1/checkpoint.pth`` and ``C:\\runs\\a=b.pth`` stay
    whole specs, and fail as missing files if they are). Raises :class:`DinoevalError` for
    ``NAME=`` with nothing after it."""
    if "=" not in value or Path(value).exists():
        return "", value
    name, _, spec = value.partition("=")
    if not name.strip() or "/" in name or "\\" in name:
        return "", value
    if not spec.strip():
        raise DinoevalError(f"--ckpt {value!r}: no backbone after the label; write NAME=SPEC, "
                            "e.g. DINO=runs/a/checkpoint.pth")
    return name.strip(), spec.strip()


def labelled_specs(values: list[str]) -> tuple[list[str], dict[str, str]]:
    """The de-duplicated backbone specs of ``--ckpt`` values and their labels (spec -> label,
    only for those given one). One spec under two labels is an error."""
    specs: list[str] = []
    labels: dict[str, str] = {}
    for value in values:
        label, spec = parse_ckpt(value)
        if spec in specs and labels.get(spec, "") != label:
            raise DinoevalError(f"--ckpt {spec} is given twice with different labels "
                                f"({labels.get(spec, '') or 'none'} and {label or 'none'}); "
                                "give it once")
        if spec not in specs:
            specs.append(spec)
        if label:
            labels[spec] = label
    return specs, labels


def with_label(frame: pd.DataFrame, label: str) -> pd.DataFrame:
    """``frame`` with its ``label`` column set (rows of one backbone)."""
    return frame.assign(label=label) if len(frame) else frame
OUT_HELP = "Append the result rows to this .csv or .parquet results table."
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help=OUT_HELP)]
"""``--out``: the one long results table, in every command that has the option (folders have
their own names: ``--cache-dir``, ``--report-dir``, ``--run-dir``; ``report`` writes its
rendered table to ``--save``). Old spellings are hidden aliases listed in :data:`RENAMED`."""

RENAMED: dict[tuple[str, str], str] = {
    ("extract", "--out"): "--cache-dir",
    ("extract-sharded", "--out"): "--cache-dir",
    ("attention", "--results"): "--out",
    ("attention", "--out"): "--report-dir",  # only for a value that is not a .csv/.parquet table
    ("demo", "--out"): "--report-dir",  # likewise
    ("pretrain", "--out"): "--run-dir",
    ("report", "--output"): "--save",
}
"""``(command, old option) -> new option``: the hidden, deprecated spellings still accepted."""


def renamed(new_value: Any, old_value: Any, *, old: str, new: str) -> Any:
    """The value of option ``new``, or of its deprecated spelling ``old`` (with a one-line note
    on stderr); giving both is an error."""
    if old_value is None:
        return new_value
    if new_value is not None:
        raise DinoevalError(f"{old} is the old name of {new}; give only {new}")
    say(f"{old} is deprecated here; use {new} (same meaning)", lead="note: ",
        lead_style="yellow")
    return old_value


def is_table_path(path: Path | None) -> bool:
    """Does ``path`` name a results table (``.csv``/``.parquet``)? Decides whether an old-style
    ``--out FOLDER`` of ``attention``/``demo`` means the report folder (see :data:`RENAMED`)."""
    return path is not None and path.suffix in (".csv", ".parquet")


def _field_help(cls: type, name: str) -> str:
    import dataclasses

    return next(f for f in dataclasses.fields(cls) if f.name == name).metadata["help"]


# For `inspect`, which takes two backbone options without running an evaluation: the help comes
# from the config field, so it is still written once. Commands use dinoeval.cli._options.
def _hand_aliases() -> dict[str, Any]:
    from dinoeval.pipeline.setup import BackboneOptions

    return {
        "CheckpointKeyOpt": Annotated[str, typer.Option(
            help=_field_help(BackboneOptions, "checkpoint_key"))],
        "NumHeadsOpt": Annotated[int | None, typer.Option(
            help=_field_help(BackboneOptions, "num_heads"))],
    }


def __getattr__(name: str) -> Any:
    aliases = _hand_aliases()
    if name in aliases:
        return aliases[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run_each(ckpts: list[str], out: Path | None, title: str,
             run: Callable[[str, Any], Any], *, data: tuple[Any, ...] = (),
             **configs: object) -> list[Any]:
    """Run ``run(spec, progress)`` for each backbone spec, print its notes, append its rows to
    ``--out`` as soon as they exist, then print the table and save the configs beside ``--out``.
    Returns the runs (for pages drawn from them).

    ``--out``, the backbone specs (``configs["backbone"]``) and, for ``pixels``, the image sizes
    of the ``data`` specs are checked first, before any backbone runs.
    """
    from dinoeval.pipeline import save_config
    from dinoeval.pipeline.setup import check_pixel_sizes
    from dinoeval.results import concat

    with user_errors():
        ckpts, labels = labelled_specs(ckpts)
        backbone = configs.get("backbone")
        check_out(out)
        if backbone is not None:
            backbone.check_specs(ckpts)
            check_pixel_sizes(ckpts, backbone, data)
        frames, results = [], []
        for spec in ckpts:
            with progress_factory() as pf:
                result = run(spec, pf)  # the label stays out of the run (and the cache key)
            for note in result.notes:
                say(f"{labels.get(spec, spec)}: {note}", "dim")
            frame = with_label(result.frame, labels.get(spec, ""))
            frames.append(frame)
            results.append(result)
            write_results(frame, out)  # each backbone's rows are saved at once
        print_results(concat(frames), title=title)
        if out is not None:
            save_config(out, **configs)
    return results


@contextlib.contextmanager
def progress_factory():  # -> Iterator[ProgressFactory]
    """A rich progress display; yields ``factory(description, total) -> update(done)``.

    When stderr is not a terminal (a batch job's log), plain periodic lines instead (see
    :mod:`dinoeval.cli._logprogress`)."""
    if not console.is_terminal:
        import sys

        from dinoeval.cli._logprogress import LogProgress

        with LogProgress(sys.stderr) as plain:
            yield plain
        return
    with make_progress() as progress:
        def factory(description: str, total: int):
            task = progress.add_task(escape(description), total=total, rate="")
            start = [None]

            def update(done: int) -> None:
                import time

                now = time.perf_counter()
                if start[0] is None:
                    start[0] = now
                    progress.update(task, completed=done)
                    return
                rate = done / max(now - start[0], 1e-9)
                progress.update(task, completed=done, rate=f"{rate:,.0f} img/s")
            return update
        yield factory

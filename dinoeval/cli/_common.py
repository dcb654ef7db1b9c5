"""Shared CLI plumbing: error handling, progress, tables, output files."""

from __future__ import annotations

import contextlib
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

from dinoeval.errors import DinoevalError

console = Console(stderr=True)
out_console = Console()


DEBUG_ENV = "DINOEVAL_DEBUG"


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
    show = df.drop(columns=["version", "timestamp", "ckpt_hash"], errors="ignore")
    caption = []
    grid = show["metric"].astype(str) == "val_top1" if "metric" in show else None
    if grid is not None and grid.any() and not grid.all():
        caption.append(f"{int(grid.sum())} per-setting val_top1 rows not shown (in --out)")
        show = show[~grid]
    if "backbone" in show and len(show):
        from dinoeval.report.labels import default_labels

        labels = default_labels(show["backbone"].astype(str).unique())
        caption += [f"{short} = {spec}" for spec, short in labels.items() if short != spec]
        show = show.assign(backbone=show["backbone"].astype(str).map(labels))
    if drop_constant and len(show) > 1:
        for c in list(show.columns):
            if c not in ("metric", "value", "param") and show[c].astype(str).nunique() == 1:
                caption.append(f"{c}={show[c].iloc[0]}")
                show = show.drop(columns=c)
    table = Table(title=title, caption=escape(" · ".join(caption)) or None,
                  header_style="bold cyan")
    for c in show.columns:
        table.add_column(escape(str(c)), overflow="fold",
                         justify="right" if c in ("value", "n", "seconds") else "left")
    for _, r in show.iterrows():
        table.add_row(*[escape(_fmt(v)) for v in r])
    out_console.print(table)


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
    """Append to ``--out`` when given and say where the rows went."""
    if out is None:
        return
    from dinoeval.results import append_results

    path = append_results(out, df)
    console.print(f"[green]appended {len(df)} rows to[/] {path}")


# Options that are not fields of a config (those are generated: dinoeval.cli._options).
CkptOpt = Annotated[list[str], typer.Option(
    "--ckpt", "-c", help="Backbone: a checkpoint file or folder (DINO v1, DINOv2, DINOv3, "
    "XCiT, ResNet-50, Hugging Face exports, pretrain runs; `dinoeval inspect --families`), "
    "timm:NAME, random:ARCH or pixels. Repeat to compare several side by side.")]
OutOpt = Annotated[Path | None, typer.Option(
    "--out", "-o", help="Append the result rows to this .csv or .parquet table.")]


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
             run: Callable[[str, Any], Any], **configs: object) -> list[Any]:
    """Run ``run(spec, progress)`` for each backbone spec, print its notes, append its rows to
    ``--out`` as soon as they exist, then print the table and save the configs beside ``--out``.
    Returns the runs (for pages drawn from them).

    ``--out`` and the backbone specs are checked first (``configs["backbone"]``), before any work.
    """
    from dinoeval.pipeline import save_config, specs
    from dinoeval.results import concat

    with user_errors():
        backbone = configs.get("backbone")
        if backbone is not None:
            backbone.check_specs(ckpts)
        check_out(out)
        frames, results = [], []
        for spec in specs(ckpts):
            with progress_factory() as pf:
                result = run(spec, pf)
            for note in result.notes:
                console.print(f"[dim]{spec}: {note}[/]")
            frames.append(result.frame)
            results.append(result)
            write_results(result.frame, out)  # each backbone's rows are saved at once
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
            task = progress.add_task(description, total=total, rate="")
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

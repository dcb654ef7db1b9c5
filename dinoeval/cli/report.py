"""``dinoeval report``: stored result rows as paper tables, figures and an HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dinoeval.cli._common import out_console, renamed, say, user_errors

_FORMATS = ("markdown", "latex", "csv", "json")


def report(
    results: Annotated[list[Path], typer.Argument(
        help="Result tables (.csv/.parquet) to combine.", show_default=False)],
    format: Annotated[str, typer.Option(
        "--format", "-f", help="markdown, latex (booktabs), csv or json.")] = "markdown",
    json_: Annotated[bool, typer.Option(
        "--json", help="Same as --format json.")] = False,
    preset: Annotated[str | None, typer.Option(
        help="paper: k-NN@20 top-1, linear top-1, k-means NMI, NC1, RankMe per backbone, in %, "
             "best in bold, mean ± std over runs.", show_default=False)] = None,
    eval: Annotated[list[str] | None, typer.Option(
        "--eval", help="Keep these evaluations: knn, linear-grid, linear-logreg, kmeans, "
                       "kmeans-spherical, collapse, neural_collapse, dino_head, attention; "
                       "aliases linear, clusters, nc, head, stats. Repeat.",
        show_default=False)] = None,
    metric: Annotated[list[str] | None, typer.Option(
        help="Keep these metrics (top1, nmi, nc1, rankme, ...). Repeat.", show_default=False)]
        = None,
    label: Annotated[list[str] | None, typer.Option(
        help="NAME=SPEC: call a backbone NAME (SPEC: its spec, path tail or hash prefix). Give "
             "one NAME to several runs (seeds) to get mean ± std. Repeat.", show_default=False)]
        = None,
    digits: Annotated[int, typer.Option(help="Decimals of percentages.")] = 1,
    save: Annotated[Path | None, typer.Option(
        help="Write the rendered table to this file instead of the terminal.",
        show_default=False)] = None,
    old_output: Annotated[Path | None, typer.Option("--output", "-o", hidden=True)] = None,
    html: Annotated[Path | None, typer.Option(
        help="Also write a self-contained HTML page with tables and plots.",
        show_default=False)] = None,
    figures: Annotated[Path | None, typer.Option(
        help="Also write each figure as PNG and PDF into this folder (for papers).",
        show_default=False)] = None,
    pretrain_log: Annotated[Path | None, typer.Option(
        help="A pretrain run folder or its log.csv: loss/entropy/KL/k-NN curves for --html.",
        show_default=False)] = None,
) -> None:
    """Pivot stored rows into one table: a row per backbone, a column per score.

    A paper table:
    dinoeval report results.csv --preset paper --format latex --save table.tex

    An HTML page:
    dinoeval report results.csv --html reports/summary.html --pretrain-log runs/fm
    """
    from dinoeval.report import render
    from dinoeval.report.tables import report_table

    with user_errors():
        fmt = "json" if json_ else format
        output = renamed(save, old_output, old="--output", new="--save")
        _check_paths(results, output=output, html=html, figures=figures,
                     pretrain_log=pretrain_log, fmt=fmt, digits=digits)
        from dinoeval.results import read_results

        frames = [read_results(p) for p in results]
        table = report_table(frames, evals=eval or (), metrics=metric or (),
                               labels=label or (), preset=preset)
        for note in table.notes:
            say(note, lead="note: ", lead_style="yellow")
        text = render.render(table, fmt, digits=digits)
        if html is not None or figures is not None:
            _write_pictures(frames, html=html, figures=figures, pretrain_log=pretrain_log,
                            labels=label or (), evals=eval or (), metrics=metric or ())
        if output is None:
            out_console.print(text, markup=False, highlight=False, soft_wrap=True, end="")
        else:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(text)
            say(output, lead="wrote ", lead_style="green")


def _check_paths(results: list[Path], *, output: Path | None, html: Path | None,
                 figures: Path | None, pretrain_log: Path | None, fmt: str, digits: int) -> None:
    """Every option checked before any work: formats, output paths that would destroy inputs."""
    from dinoeval.checks import check_output_path
    from dinoeval.errors import DinoevalError
    from dinoeval.report.results_page import check_pretrain_log

    if fmt not in _FORMATS:
        raise DinoevalError(f"--format must be {', '.join(_FORMATS)}; got {fmt!r}")
    if not 0 <= digits <= 6:
        raise DinoevalError(f"--digits must be between 0 and 6, got {digits}")
    for path, option in ((output, "--save"), (html, "--html")):
        if path is None:
            continue
        check_output_path(path, option)
        if any(path.resolve() == p.resolve() for p in results):
            raise DinoevalError(f"{option} {path} is one of the input tables; writing there "
                                "would destroy its rows: choose another file")
    if figures is not None and figures.exists() and not figures.is_dir():
        raise DinoevalError(f"--figures {figures} is a file; give a folder")
    if figures is not None:
        check_output_path(figures / "figure.png", "--figures")
    if pretrain_log is not None:
        check_pretrain_log(pretrain_log)


def _write_pictures(frames: list, *, html: Path | None, figures: Path | None,
                    pretrain_log: Path | None, labels: list[str] | tuple, evals, metrics) -> None:
    from dinoeval.report.figure_set import save_figures, table_figures
    from dinoeval.report.rows import labelled_rows

    df = labelled_rows(frames, labels=labels, evals=evals, metrics=metrics)
    figs = table_figures(df)
    if figures is not None:
        paths = save_figures(figs, figures)
        say(f"{len(paths)} files ({len(figs)} figures, PNG and PDF) to {figures}",
            lead="wrote ", lead_style="green")
    if html is not None:
        from dinoeval.report.results_page import write_results_report

        per_class = {k: v for k, v in figs.items() if k.startswith("knn_per_class")}
        page = write_results_report(df.assign(backbone=df["label"]).drop(
            columns=["label", "setting"]), html, pretrain_log=pretrain_log, figures=per_class)
        say(page, lead="wrote ", lead_style="green")


def register(app: typer.Typer) -> None:
    app.command("report")(report)

"""``dinoeval report``: stored result rows as paper tables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dinoeval.cli._common import console, out_console, user_errors


def report(
    results: Annotated[list[Path], typer.Argument(help="Result tables (.csv/.parquet) to combine.")],
    format: Annotated[str, typer.Option(
        "--format", "-f", help="markdown, latex or csv.")] = "markdown",
    eval: Annotated[list[str] | None, typer.Option(
        "--eval", help="Keep only these evaluations (knn, linear, clusters, collapse, ...).")]
        = None,
    metric: Annotated[list[str] | None, typer.Option(help="Keep only these metrics.")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write the table here instead of the terminal.")] = None,
    html: Annotated[Path | None, typer.Option(
        help="Also write a self-contained HTML page: pivot tables and plots of the rows.")] = None,
    pretrain_log: Annotated[Path | None, typer.Option(
        help="A pretrain run folder or log.csv: adds loss/entropy/KL/k-NN curves to --html.")]
        = None,
) -> None:
    """Pivot stored rows into one table: a row per backbone, a column per metric.

    Examples: dinoeval report results.csv --format latex --eval knn -o table.tex;
    dinoeval report results.csv --html reports/summary.html --pretrain-log runs/fm
    """
    from dinoeval.checks import check_output_path
    from dinoeval.errors import DinoevalError
    from dinoeval.report.html import check_pretrain_log
    from dinoeval.results import concat, pivot, read_results, render

    with user_errors():
        if format not in ("markdown", "latex", "csv"):
            raise DinoevalError(f"--format must be markdown, latex or csv, got {format!r}")
        for path, option in ((output, "--output"), (html, "--html")):
            if path is None:
                continue
            check_output_path(path, option)
            if any(path.resolve() == p.resolve() for p in results):
                raise DinoevalError(f"{option} {path} is one of the input tables; writing there "
                                    "would destroy its rows: choose another file")
        if pretrain_log is not None:
            check_pretrain_log(pretrain_log)
        df = concat([read_results(p) for p in results])
        if eval:
            df = df[df["eval"].isin(eval)]
        if metric:
            df = df[df["metric"].isin(metric)]
        if df.empty:
            raise DinoevalError("no rows left to report (check --eval/--metric and the files)")
        if html is not None:
            from dinoeval.report.html import write_results_report

            console.print(f"[green]wrote[/] {write_results_report(df, html, pretrain_log=pretrain_log)}")
        text = render(pivot(df), format)
        if output is None:
            out_console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(text)
            console.print(f"[green]wrote[/] {output}")


def register(app: typer.Typer) -> None:
    app.command("report")(report)

"""``dinoeval demo``: the shipped DINO checkpoint vs random init vs pixels, on every evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from dinoeval.cli._common import (
    OutOpt,
    check_out,
    console,
    emit_table,
    is_table_path,
    json_rows,
    out_console,
    progress_factory,
    renamed,
    say,
    user_errors,
    write_results,
)
from dinoeval.cli._options import with_options
from dinoeval.demo import DemoConfig


@with_options(config=DemoConfig)
def demo(
    report_dir: Annotated[Path | None, typer.Option(
        help="Folder for results.csv, results.md, report.html, attention/ (default: "
             "results/demo, or results/demo_fmnist with --data fashion-mnist).",
        show_default=False)] = None,
    out: OutOpt = None,
    *, config: DemoConfig,
) -> None:
    """Show DINO's two emerging properties in minutes on a laptop CPU.

    Evaluates a small DINO ViT (shipped in the package, trained by `dinoeval pretrain`), the same
    architecture with random weights, and raw pixels: weighted k-NN, linear probe, k-means,
    collapse and neural-collapse statistics, retrieval and copy detection, and the Jaccard of
    attention masks against the objects' true masks. Prints one table and writes results/demo/
    (results/demo_fmnist/ for Fashion-MNIST). Examples:

      dinoeval demo

      dinoeval demo --data fashion-mnist

      dinoeval demo --pretrain --pretrain-epochs 10 --pretrain-minutes 6
      --report-dir runs/demo
    """
    from dinoeval.demo import run_demo

    with user_errors():
        if out is not None and not is_table_path(out):  # the old --out FOLDER
            report_dir = renamed(report_dir, out, old="--out FOLDER", new="--report-dir")
            out = None
        check_out(out)
        cfg = config
        ds = cfg.dataset()
        say(f" on {ds.title}", lead="dinoeval demo", lead_style="bold")
        with progress_factory() as pf:
            events = _pretrain_events(cfg.pretrain_minutes) if cfg.pretrain else None
            result = run_demo(cfg, report_dir or Path(ds.out), progress=pf,
                              on_pretrain_event=events)
        for note in result.notes:
            say(note, "dim")
        write_results(result.frame, out)
        _print_summary(result.summary, title=f"dinoeval demo — {ds.title}")
        for t in result.targets:  # under --json these go to stderr with the notes
            line = Text(t.text(), style="green" if t.passed else "yellow")
            (console if json_rows() is not None else out_console).print(line, highlight=False)
        say(f"{', '.join(str(p) for p in result.files.values())} in {result.seconds:.0f} s",
            lead="wrote ", lead_style="green")


def _pretrain_events(minutes: float) -> Any:
    """A pretrain ``on_event`` callback: one line per logged step, against the time budget."""
    budget = minutes * 60

    def on_event(kind: str, row: dict[str, Any]) -> None:
        if kind == "step":
            say(f"pretraining {float(row.get('elapsed_s', 0.0)):.0f}/{budget:.0f} s"
                f" · step {row['step']} · loss {row['loss']:.3f} · teacher entropy "
                f"{row['teacher_entropy']:.2f} · {row['images_per_s']:.0f} img/s", "dim")
        elif kind == "stop":
            say(f"pretraining stopped ({row['reason']}) at step {row['step']}")
    return on_event


def _print_summary(summary: Any, *, title: str) -> None:
    """The demo's summary, one column per backbone and one row per headline metric: three
    backbones and a dozen metrics fit an 80-column terminal that way (a column per metric
    needed ~200 columns and rich cut every cell). Under ``--json``: the summary rows."""
    from rich.markup import escape
    from rich.table import Table

    if emit_table(summary):
        return
    table = Table(title=title, header_style="bold cyan",
                  caption="k-NN: k=20 · Jaccard of attention masks (60% mass) vs object masks")
    table.add_column("metric", overflow="fold")
    names = [str(b) for b in summary["backbone"]]
    for name in names:
        table.add_column(escape(name), justify="right", overflow="fold")
    for col in summary.columns:
        if col == "backbone":
            continue
        cells = [_summary_cell(v) for v in summary[col]]
        table.add_row(escape(str(col)), *[escape(c) for c in cells])
    out_console.print(table)


def _summary_cell(v: Any) -> str:
    import math

    if isinstance(v, float):
        return "—" if math.isnan(v) else f"{v:.4f}" if abs(v) < 100 else f"{v:.1f}"
    return str(v)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)

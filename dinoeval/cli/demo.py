"""``dinoeval demo``: the shipped DINO checkpoint vs random init vs pixels, on every evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from dinoeval.cli._common import console, out_console, progress_factory, user_errors
from dinoeval.cli._options import with_options
from dinoeval.demo import DemoConfig


@with_options(config=DemoConfig)
def demo(
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Folder for results.csv, results.md, report.html, attention/ "
                            "(default: results/demo, or results/demo_fmnist with --data "
                            "fashion-mnist).")] = None,
    *, config: DemoConfig,
) -> None:
    """Show DINO's two emerging properties in minutes on a laptop CPU.

    Evaluates a small DINO ViT (shipped in the package, trained by `dinoeval pretrain`), the same
    architecture with random weights, and raw pixels: weighted k-NN, linear probe, k-means,
    collapse and neural-collapse statistics, and the Jaccard of attention masks against the
    objects' true masks. Prints one table and writes results/demo/ (results/demo_fmnist/ for
    Fashion-MNIST). Examples:

      dinoeval demo

      dinoeval demo --data fashion-mnist

      dinoeval demo --pretrain --pretrain-epochs 10 --pretrain-minutes 6 --out runs/demo
    """
    from dinoeval.demo import run_demo

    with user_errors():
        cfg = config
        ds = cfg.dataset()
        console.print(f"[bold]dinoeval demo[/] on {ds.title}")
        with progress_factory() as pf:
            events = _pretrain_events(cfg.pretrain_minutes) if cfg.pretrain else None
            result = run_demo(cfg, out or Path(ds.out), progress=pf, on_pretrain_event=events)
        for note in result.notes:
            console.print(f"[dim]{note}[/]")
        _print_summary(result.summary, title=f"dinoeval demo — {ds.title}")
        for t in result.targets:
            colour = "green" if t.passed else "yellow"
            out_console.print(f"[{colour}]{t.text()}[/]", highlight=False)
        console.print(f"[green]wrote[/] {', '.join(str(p) for p in result.files.values())} "
                      f"in {result.seconds:.0f} s")


def _pretrain_events(minutes: float) -> Any:
    """A pretrain ``on_event`` callback: one line per logged step, against the time budget."""
    budget = minutes * 60

    def on_event(kind: str, row: dict[str, Any]) -> None:
        if kind == "step":
            console.print(f"[dim]pretraining {float(row.get('elapsed_s', 0.0)):.0f}/{budget:.0f} s"
                          f" · step {row['step']} · loss {row['loss']:.3f} · teacher entropy "
                          f"{row['teacher_entropy']:.2f} · {row['images_per_s']:.0f} img/s[/]",
                          highlight=False)
        elif kind == "stop":
            console.print(f"pretraining stopped ({row['reason']}) at step {row['step']}")
    return on_event


# Narrow headers so the table fits an 80-column terminal (files keep the long names).
_SHORT = {"k-NN top-1": "k-NN", "linear top-1": "linear", "k-means NMI": "NMI",
          "k-means acc": "k-means acc", "attn Jaccard (mean of heads)": "Jaccard mean",
          "attn Jaccard (best head)": "Jaccard best"}


def _print_summary(summary: Any, *, title: str) -> None:
    from rich.table import Table

    table = Table(title=title, header_style="bold cyan",
                  caption="k-NN: k=20 · Jaccard of attention masks (60% mass) vs object masks")
    for c in summary.columns:
        table.add_column(_SHORT.get(str(c), str(c)),
                         justify="left" if c in ("backbone", "arch") else "right")
    for _, r in summary.iterrows():
        table.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in r])
    out_console.print(table)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)

"""``dinoeval demo``: the shipped DINO checkpoint vs random init vs pixels, on every evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from dinoeval.cli._common import console, out_console, progress_factory, user_errors


def demo(
    data: Annotated[str, typer.Option(
        help="shapes (procedural, with masks; no download) or fashion-mnist (needs the Debian "
             "package dataset-fashion-mnist).")] = "shapes",
    ckpt: Annotated[str | None, typer.Option(
        "--ckpt", "-c", help="Evaluate this checkpoint instead of the shipped one.")] = None,
    pretrain: Annotated[bool, typer.Option(
        "--pretrain", help="Train the checkpoint from scratch first (the shipped recipe on a "
                           "--pretrain-epochs schedule), within --pretrain-minutes.")] = False,
    pretrain_epochs: Annotated[int, typer.Option(
        help="Schedule length of --pretrain in epochs of 3,200 images. 6 takes about 3 "
             "minutes on 2 CPU cores and shows only the start of learning (shapes k-NN 22% vs "
             "18% for random init); the shipped shapes checkpoint ran 120 (about 100 minutes), "
             "the shipped Fashion-MNIST one 1080 (about 3 hours on 2 cores).")] = 6,
    pretrain_minutes: Annotated[float, typer.Option(
        help="Time budget of --pretrain, in minutes: it stops there even if the schedule has "
             "steps left.")] = 3.0,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Folder for results.csv, results.md, report.html, attention/ "
                            "(default: results/demo, or results/demo_fmnist with --data "
                            "fashion-mnist).")] = None,
    train: Annotated[str | None, typer.Option(
        help="Override the train split (e.g. shapes:train@n=1000).")] = None,
    test: Annotated[str | None, typer.Option(
        help="Override the test split (e.g. shapes:test@n=200).")] = None,
    attention_images: Annotated[int, typer.Option(
        help="Test images whose attention masks are scored (0: skip attention).")] = 200,
    linear_epochs: Annotated[int, typer.Option(help="Epochs of the linear probe.")] = 10,
    device: Annotated[str, typer.Option(help="Torch device (cpu, cuda, cuda:1).")] = "cpu",
    seed: Annotated[int, typer.Option(help="Seed of every random choice of the run.")] = 0,
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
    from dinoeval.demo import DemoConfig, run_demo

    with user_errors():
        cfg = DemoConfig(data=data, ckpt=ckpt, train=train, test=test, pretrain=pretrain,
                         pretrain_epochs=pretrain_epochs, pretrain_minutes=pretrain_minutes,
                         attention_images=attention_images, linear_epochs=linear_epochs,
                         device=device, seed=seed)
        ds = cfg.dataset()
        console.print(f"[bold]dinoeval demo[/] on {ds.title}")
        with progress_factory() as pf:
            events = _pretrain_events(pretrain_minutes) if pretrain else None
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

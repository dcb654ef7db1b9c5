"""``dinoeval pretrain`` (also ``python -m dinoeval pretrain``, which ``torchrun`` launches).

Its options are generated from :class:`pretrain.config.PretrainConfig`'s fields (those with a
``help``); every other field is reachable with ``--set KEY=VALUE``."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from dinoeval.cli._common import console, renamed, say, user_errors
from dinoeval.cli._options import with_overrides
from dinoeval.errors import DinoevalError
from pretrain.config import RECIPE_DESCRIPTIONS, RECIPES, PretrainConfig

Opt = typer.Option


@with_overrides("given", PretrainConfig)
def pretrain(
    run_dir: Annotated[Path | None, Opt(help="Run folder to write (checkpoint.pth, "
                                        "backbone.safetensors, log.csv, epochs.csv).")] = None,
    old_out: Annotated[Path | None, Opt("--out", hidden=True)] = None,
    resume: Annotated[Path | None, Opt(help="Continue the run in this directory exactly where "
                                       "its last checkpoint stopped (bit-identical to an "
                                       "uninterrupted run only with the same --threads and "
                                       "device).")] = None,
    recipe: Annotated[str | None, Opt(help=f"Named starting config ({', '.join(RECIPES)}; "
                                      "listed above); options given explicitly override "
                                      "it.")] = None,
    set_: Annotated[list[str] | None, Opt("--set", help="Any other PretrainConfig field: "
                                          "KEY=VALUE (JSON value), repeatable.")] = None,
    *, given: dict[str, Any],
) -> None:
    """DINO self-distillation pretraining; writes checkpoints dinoeval reads.

      dinoeval pretrain --recipe fmnist-cpu --run-dir runs/fm     (the shipped F-MNIST ViT)
      dinoeval pretrain --recipe shapes-cpu --run-dir runs/shapes (the demo ViT, ~100 min)
      dinoeval pretrain --data fashion-mnist:train --arch vit_tiny --patch-size 4 --epochs 50
          --run-dir runs/fm2
      dinoeval pretrain --resume runs/fm
      torchrun --nproc-per-node 8 -m dinoeval pretrain --data imagefolder:/data/in1k/train
          --arch vit_small --run-dir runs/in1k
    """
    from pretrain.config import recipe_config
    from pretrain.distributed import distributed_cleanup
    from pretrain.loop import train_loop
    from pretrain.state import resume_config

    with user_errors(), distributed_cleanup():
        out = renamed(run_dir, old_out, old="--out", new="--run-dir")
        overrides = {**given, **parse_set(set_ or [])}
        if resume is not None:
            if out is not None and out != resume:
                raise DinoevalError("--resume DIR continues DIR; drop --run-dir (or make it DIR)")
            if recipe:
                raise DinoevalError("--resume uses the saved config; drop --recipe")
            cfg, run_dir = resume_config(resume, **overrides), resume
        else:
            if out is None:
                raise DinoevalError("give --run-dir DIR for a new run (or --resume DIR)")
            cfg, run_dir = recipe_config(recipe, **overrides), out
        stop = _StopFlag()
        with _Reporter(cfg.epochs) as rep:
            result = train_loop(cfg, run_dir, resume=resume is not None, on_event=rep,
                                should_stop=stop)
        if int(os.environ.get("RANK", "0")) == 0:
            knn = "" if result.knn_top1 is None else f", teacher k-NN top-1 {result.knn_top1:.4f}"
            say(f": step {result.step}, epoch {result.epoch}{knn}; checkpoint "
                f"{result.checkpoint}", lead=result.stop_reason, lead_style="green")


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["lr=1e-3", "global_crops_scale=[0.3,1]"]`` -> ``{"lr": 0.001, ...}`` (JSON values,
    bare words as strings)."""
    out: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise DinoevalError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip().replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip().replace("-", "_")] = value
    known = set(PretrainConfig.__dataclass_fields__)
    unknown = sorted(set(out) - known)
    if unknown:
        raise DinoevalError(f"--set: unknown config fields {unknown}; see pretrain/config.py")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in out.items()}


class _StopFlag:
    """SIGTERM / first Ctrl-C ask the loop to save and stop; a second Ctrl-C interrupts."""

    def __init__(self) -> None:
        self.stop = False
        try:
            signal.signal(signal.SIGTERM, self._handle)
            signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread (e.g. a test runner): no signals
            pass

    def _handle(self, signum: int, frame: object) -> None:
        if self.stop and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stop = True

    def __call__(self) -> bool:
        return self.stop


class _Reporter:
    """Renders the loop's events: a progress bar whose text is the latest step's numbers."""

    def __init__(self, epochs: int) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("[bold]epoch {task.completed:.2f}/{task.total:.0f}"),
                                 BarColumn(), TimeElapsedColumn(), TextColumn("{task.fields[line]}"),
                                 console=console, disable=int(os.environ.get("RANK", "0")) != 0)
        self.task = self.progress.add_task("pretrain", total=epochs, line="")

    def __enter__(self) -> _Reporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, kind: str, row: dict[str, Any]) -> None:
        if kind == "step":
            line = (f"step {row['step']} loss {row['loss']:.3f} H(Pt) {row['teacher_entropy']:.2f}"
                    f" KL {row['kl']:.3f} |c| {row['center_norm']:.2f} lr {row['lr']:.2e}"
                    f" wd {row['wd']:.3f} m {row['momentum']:.4f} τt {row['teacher_temp']:.3f}"
                    f" {row['images_per_s']:.0f} img/s")
            self.progress.update(self.task, completed=row["epoch"], line=line)
        elif kind == "epoch":
            knn = (f" k-NN top-1 {row['knn_top1']:.4f}" if row.get("knn_top1") is not None
                   else "")
            loss = "" if row["step"] == 0 else f" loss {row['loss']:.3f}"
            self.progress.console.print(Text(f"epoch {row['epoch']} (step {row['step']}){loss}{knn}"))
            self.progress.update(self.task, completed=row["epoch"])
        elif kind == "checkpoint":
            self.progress.update(self.task, line=f"saved {row['path']} at step {row['step']}")


def recipes_help() -> str:
    """The ``--help`` paragraph listing every recipe with its one-line description."""
    lines = [f"--recipe {name}: {RECIPE_DESCRIPTIONS.get(name, '(no description)')}"
             for name in RECIPES]
    return "Recipes (each option given explicitly overrides the recipe's value):\n\n" + \
        "\n\n".join(lines)


def register(app: typer.Typer) -> None:
    import inspect

    doc = inspect.cleandoc(pretrain.__doc__ or "")
    app.command("pretrain", no_args_is_help=True,
                help=f"{doc}\n\n{recipes_help()}")(pretrain)

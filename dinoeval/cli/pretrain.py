"""``dinoeval pretrain`` (also ``python -m dinoeval pretrain``, which ``torchrun`` launches)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from dinoeval.cli._common import console, user_errors
from dinoeval.errors import DinoevalError

Opt = typer.Option


def pretrain(
    data: Annotated[str | None, Opt(help="Training images, e.g. fashion-mnist:train, "
                                    "imagefolder:/data/imagenet/train, shapes:train.")] = None,
    out: Annotated[Path | None, Opt(help="Run directory (checkpoint.pth, backbone.safetensors, "
                                    "log.csv, epochs.csv).")] = None,
    resume: Annotated[Path | None, Opt(help="Continue the run in this directory exactly where "
                                       "its last checkpoint stopped (bit-identical to an "
                                       "uninterrupted run only with the same --threads and "
                                       "device).")] = None,
    recipe: Annotated[str | None, Opt(help="Named starting config (fmnist-cpu); options given "
                                      "explicitly override it.")] = None,
    arch: Annotated[str | None, Opt(help="vit_tiny | vit_small | vit_base | vit_large.")] = None,
    patch_size: Annotated[int | None, Opt(help="ViT patch size.")] = None,
    img_size: Annotated[int | None, Opt(help="Global crop size (default: the data's native "
                                        "size, else 224).")] = None,
    embed_dim: Annotated[int | None, Opt(help="Override the arch's width.")] = None,
    depth: Annotated[int | None, Opt(help="Override the arch's depth.")] = None,
    num_heads: Annotated[int | None, Opt(help="Override the arch's heads.")] = None,
    out_dim: Annotated[int | None, Opt(help="Prototypes K of the DINO head.")] = None,
    local_crops_number: Annotated[int | None, Opt(help="Local crops per image.")] = None,
    epochs: Annotated[int | None, Opt(help="Epochs (the schedules' length).")] = None,
    epoch_images: Annotated[int | None, Opt(help="Images per epoch (default: all).")] = None,
    batch_size: Annotated[int | None, Opt(help="Global batch size (split over ranks).")] = None,
    lr: Annotated[float | None, Opt(help="Base learning rate (scaled by batch/256).")] = None,
    momentum_teacher: Annotated[float | None, Opt(help="Start of the teacher EMA momentum "
                                                  "cosine schedule to 1.")] = None,
    teacher_temp: Annotated[float | None, Opt(help="Teacher temperature after warm-up.")] = None,
    no_centering: Annotated[bool, Opt("--no-centering", help="Collapse ablation: never "
                                      "subtract the center.")] = False,
    no_sharpening: Annotated[bool, Opt("--no-sharpening", help="Collapse ablation: teacher "
                                       "temperature = student temperature.")] = False,
    amp: Annotated[str | None, Opt(help="none | bf16 (autocast).")] = None,
    seed: Annotated[int | None, Opt(help="Seed of weights, data order and augmentation.")] = None,
    device: Annotated[str | None, Opt(help="auto | cpu | cuda | cuda:N.")] = None,
    num_workers: Annotated[int | None, Opt(help="Decoding workers (image folders).")] = None,
    threads: Annotated[int | None, Opt(help="torch CPU threads (0: default).")] = None,
    time_budget_minutes: Annotated[float | None, Opt(help="Stop cleanly (saving a checkpoint) "
                                                     "after this many minutes.")] = None,
    save_every_minutes: Annotated[float | None, Opt(help="Checkpoint interval within "
                                                    "epochs.")] = None,
    log_every: Annotated[int | None, Opt(help="Steps between log rows.")] = None,
    knn_every: Annotated[int | None, Opt(help="Epochs between online k-NN (0: never).")] = None,
    skip_bad_images: Annotated[bool, Opt("--skip-bad-images", help="Leave unreadable image "
                                         "files out of training (counted) instead of "
                                         "stopping.")] = False,
    set_: Annotated[list[str] | None, Opt("--set", help="Any other PretrainConfig field: "
                                          "KEY=VALUE (JSON value), repeatable.")] = None,
) -> None:
    """DINO self-distillation pretraining; writes checkpoints dinoeval reads.

      dinoeval pretrain --recipe fmnist-cpu --out runs/fm       (the shipped Fashion-MNIST ViT)
      dinoeval pretrain --recipe shapes-cpu --out runs/shapes   (the shipped demo ViT, ~100 min)
      dinoeval pretrain --data fashion-mnist:train --arch vit_tiny --patch-size 4 --epochs 50
          --out runs/fm2
      dinoeval pretrain --resume runs/fm
      torchrun --nproc-per-node 8 -m dinoeval pretrain --data imagefolder:/data/in1k/train
          --arch vit_small --out runs/in1k
    """
    from pretrain.config import recipe_config
    from pretrain.distributed import distributed_cleanup
    from pretrain.loop import resume_config, train_loop

    with user_errors(), distributed_cleanup():
        given: dict[str, Any] = {
            "data": data, "arch": arch, "patch_size": patch_size, "img_size": img_size,
            "embed_dim": embed_dim, "depth": depth, "num_heads": num_heads, "out_dim": out_dim,
            "local_crops_number": local_crops_number, "epochs": epochs,
            "epoch_images": epoch_images, "batch_size": batch_size, "lr": lr,
            "momentum_teacher": momentum_teacher, "teacher_temp": teacher_temp, "amp": amp,
            "seed": seed, "device": device, "num_workers": num_workers, "num_threads": threads,
            "time_budget_minutes": time_budget_minutes,
            "save_every_minutes": save_every_minutes, "log_every": log_every,
            "knn_every": knn_every,
        }
        overrides = {k: v for k, v in given.items() if v is not None}
        if no_centering:
            overrides["centering"] = False
        if no_sharpening:
            overrides["sharpening"] = False
        if skip_bad_images:
            overrides["skip_bad_images"] = True
        overrides.update(parse_set(set_ or []))
        if resume is not None:
            if out is not None and out != resume:
                raise DinoevalError("--resume DIR continues DIR; drop --out (or make it DIR)")
            if recipe:
                raise DinoevalError("--resume uses the saved config; drop --recipe")
            cfg, run_dir = resume_config(resume, **overrides), resume
        else:
            if out is None:
                raise DinoevalError("give --out DIR for a new run (or --resume DIR)")
            cfg, run_dir = recipe_config(recipe, **overrides), out
        stop = _StopFlag()
        with _Reporter(cfg.epochs) as rep:
            result = train_loop(cfg, run_dir, resume=resume is not None, on_event=rep,
                                should_stop=stop)
        if int(os.environ.get("RANK", "0")) == 0:
            knn = "" if result.knn_top1 is None else f", teacher k-NN top-1 {result.knn_top1:.4f}"
            console.print(f"[green]{result.stop_reason}[/]: step {result.step}, epoch "
                          f"{result.epoch}{knn}; checkpoint {result.checkpoint}")


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
    from pretrain.config import PretrainConfig

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
            self.progress.console.print(f"epoch {row['epoch']} (step {row['step']}){loss}{knn}")
            self.progress.update(self.task, completed=row["epoch"])
        elif kind == "checkpoint":
            self.progress.update(self.task, line=f"saved {row['path']} at step {row['step']}")


def register(app: typer.Typer) -> None:
    app.command("pretrain", no_args_is_help=True)(pretrain)

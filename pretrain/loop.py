"""The DINO training run: ``train_loop`` over the steps of :mod:`pretrain.step`, with logs,
online k-NN, checkpoints (:mod:`pretrain.state`) and the run-folder lock.

Runs as one process on a CPU or a GPU without any process group, or under ``torchrun`` with DDP
(``gloo`` on CPUs, ``nccl`` on GPUs). The global batch is split evenly over the ranks, so the
data order and the schedules do not depend on the number of processes.

Determinism and resuming: the epoch's data order is a permutation seeded by ``(seed, epoch)``;
each step's augmentation uses a generator seeded by ``(seed, step, rank)``; the global RNG (drop
path) is saved per rank in every checkpoint; schedules are closed-form functions of the step. A
resumed run therefore replays exactly what an uninterrupted one would have done.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from dinoeval._io import try_lock_exclusive
from dinoeval.data import get_source
from dinoeval.errors import DinoevalError
from pretrain.checkpoint import CHECKPOINT_NAME, RUN_LOCK, load_checkpoint, save_checkpoint
from pretrain.config import PretrainConfig
from pretrain.data import TrainData, build_data, iter_batches, steps_per_epoch
from pretrain.distributed import DistEnv, init_distributed, resolve_device
from pretrain.monitor import EPOCH_COLUMNS, STEP_COLUMNS, CsvLog, online_knn
from pretrain.schedules import Schedules
from pretrain.state import RUN_CONTROL_FIELDS, checkpoint_state, restore
from pretrain.step import (
    Trainer,
    build_augment,
    build_loss,
    build_models,
    build_optimizer,
    step_seed,
    train_step,
)

log = logging.getLogger(__name__)

EventFn = Callable[[str, dict[str, Any]], None]


# ----------------------------------------------------------------------------- the loop
_SAVE, _STOP = 1, 2


@dataclass(frozen=True)
class RunResult:
    """How a run ended.

    Attributes:
        out_dir: the run directory.
        step, epoch: position reached (completed steps, completed epochs).
        stop_reason: ``"done"``, ``"time budget"`` or ``"stopped"``.
        knn_top1: the last online k-NN top-1 of the teacher (``None`` without labels).
        checkpoint: the last checkpoint written (on rank 0).
    """

    out_dir: Path
    step: int
    epoch: int
    stop_reason: str
    knn_top1: float | None
    checkpoint: Path | None


def build_trainer(cfg: PretrainConfig, env: DistEnv, device: torch.device,
                  data: TrainData) -> Trainer:
    """Models, optimiser, schedules, loss and augmentation of a resolved config."""
    student, teacher = build_models(cfg)
    student.to(device)
    teacher.to(device)
    wrapped: nn.Module = student
    if env.distributed:
        ids = [device.index] if device.type == "cuda" else None
        wrapped = nn.parallel.DistributedDataParallel(student, device_ids=ids)
    sched = Schedules(steps_per_epoch(cfg, data, env.world_size), cfg.epochs, cfg.lr_scaled, cfg.min_lr,
                      cfg.warmup_epochs, cfg.weight_decay, cfg.weight_decay_end,
                      cfg.momentum_teacher)
    return Trainer(cfg, env, device, wrapped, student, teacher, build_loss(cfg).to(device),
                   build_optimizer(student), sched, build_augment(cfg), data)


def train_loop(cfg: PretrainConfig, out_dir: str | Path, *, resume: bool = False,
               on_event: EventFn | None = None,
               should_stop: Callable[[], bool] | None = None) -> RunResult:
    """Train (or continue) a DINO run in ``out_dir``.

    Writes ``checkpoint.pth`` + ``backbone.safetensors`` (every epoch, every
    ``save_every_minutes``, at a stop), ``log.csv`` (every ``log_every`` steps), ``epochs.csv``
    (every epoch, with the online k-NN) and ``config.json``. ``on_event(kind, row)`` receives the
    same rows on rank 0 (kinds ``step``, ``epoch``, ``checkpoint``, ``stop``). ``should_stop``
    is polled every step; when it returns true the run saves and returns.

    The caller's global RNG state is left untouched.
    """
    threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    try:
        return _train(cfg, Path(out_dir), resume, on_event, should_stop)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: PretrainConfig, out: Path, resume: bool, on_event: EventFn | None,
           should_stop: Callable[[], bool] | None) -> RunResult:
    env = init_distributed(cfg.device)
    device = resolve_device(cfg.device, env)
    lock = try_lock_exclusive(out / RUN_LOCK, f"run folder {out}") if env.is_main else None
    try:
        return _train_locked(cfg, env, device, out, resume, on_event, should_stop)
    finally:
        if lock is not None:
            lock.close()


def _train_locked(cfg: PretrainConfig, env: DistEnv, device: torch.device, out: Path,
                  resume: bool, on_event: EventFn | None,
                  should_stop: Callable[[], bool] | None) -> RunResult:
    source = get_source(cfg.data)
    cfg = cfg.resolved(source.native_size)
    ckpt = _check_resume(cfg, out) if resume else None
    if ckpt is None and (out / "checkpoint.pth").exists():
        raise DinoevalError(f"{out} already holds a run; pass --resume to continue it or choose "
                            "another --run-dir")
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        data = build_data(cfg, source)
        tr = build_trainer(cfg, env, device, data)
        torch.manual_seed(step_seed(cfg.seed, 0, env.rank) + 1)  # per-rank drop-path stream
        elapsed = 0.0
        if ckpt is not None:
            restore(tr, ckpt)
            elapsed = float(ckpt.get("elapsed_seconds", 0.0))
        return _Run(tr, out, resumed=ckpt is not None, emit=on_event or _ignore,
                    should_stop=should_stop or _never, elapsed_before=elapsed).run()


def _ignore(kind: str, row: dict[str, Any]) -> None:
    pass


def _never() -> bool:
    return False


def _check_resume(cfg: PretrainConfig, out: Path) -> dict[str, Any]:
    ckpt = load_checkpoint(out)
    saved = PretrainConfig.from_dict(ckpt["config"])
    diff = [f.name for f in dataclasses.fields(cfg) if f.name not in RUN_CONTROL_FIELDS
            and getattr(cfg, f.name) != getattr(saved, f.name)]
    if diff:
        raise DinoevalError(f"cannot resume {out}: the config differs in {', '.join(diff)}; "
                            "resume with the saved config (dinoeval pretrain --resume DIR)")
    return ckpt


class _Run:
    """The mutable book-keeping of one invocation of :func:`train_loop`."""

    def __init__(self, tr: Trainer, out: Path, *, resumed: bool, emit: EventFn,
                 should_stop: Callable[[], bool], elapsed_before: float) -> None:
        self.tr, self.out, self.resumed, self.emit = tr, out, resumed, emit
        self.should_stop = should_stop
        self.elapsed_before = elapsed_before
        self.start = self.last_save = time.monotonic()
        self.steps_log = CsvLog(out / "log.csv", STEP_COLUMNS)
        self.epochs_log = CsvLog(out / "epochs.csv", EPOCH_COLUMNS)
        self._reset_window()
        self.knn_top1: float | None = None
        self.checkpoint: Path | None = None

    def _reset_window(self) -> None:
        self.window = {"t": time.perf_counter(), "cpu": time.process_time(), "steps": 0,
                       "aug": 0.0, "busy": 0.0}

    @property
    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.start

    def run(self) -> RunResult:
        tr, cfg = self.tr, self.tr.cfg
        if self.resumed and tr.epoch >= cfg.epochs:  # nothing to train: leave the folder as it is
            self.checkpoint = self.out / CHECKPOINT_NAME
            return self._finish(f"already finished ({cfg.epochs} epochs, nothing to do)")
        self._prepare_dir()
        if not self.resumed and tr.data.probe is not None:
            self._epoch_row(knn=True)  # the random-init baseline, at step 0
        spe = tr.schedules.steps_per_epoch
        while tr.epoch < cfg.epochs:
            for images in iter_batches(cfg, tr.data, tr.env, tr.epoch, tr.step_in_epoch, spe):
                self._one_step(images, spe)
                flags = self._flags()
                if flags & _STOP:
                    self._save()
                    budget = cfg.time_budget_minutes is not None and not self.should_stop()
                    return self._finish("time budget" if budget else "stopped")
                if flags & _SAVE:
                    self._save()
            tr.epoch += 1
            tr.step_in_epoch = 0
            due = cfg.knn_every > 0 and (tr.epoch % cfg.knn_every == 0 or tr.epoch == cfg.epochs)
            self._epoch_row(knn=due and tr.data.probe is not None)
            self._save()
        return self._finish("done")

    def _prepare_dir(self) -> None:
        tr = self.tr
        if not tr.env.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        for csv_log in (self.steps_log, self.epochs_log):
            if self.resumed:
                csv_log.truncate_after(tr.step)
            else:  # a run killed before its first checkpoint left logs of nothing
                csv_log.path.unlink(missing_ok=True)
        import json

        (self.out / "config.json").write_text(json.dumps(tr.cfg.to_dict(), indent=1) + "\n")

    def _one_step(self, images: torch.Tensor, spe: int) -> None:
        tr, cfg, w = self.tr, self.tr.cfg, self.window
        stats, times = train_step(tr, images)
        tr.step += 1
        tr.step_in_epoch += 1
        sums = tr.epoch_sums
        for k in ("loss", "teacher_entropy", "kl", "center_norm"):
            sums[k] = sums.get(k, 0.0) + getattr(stats, k)
        sums["n"] = sums.get("n", 0.0) + 1
        w["steps"] += 1
        w["aug"] += times["aug_s"]
        w["busy"] += times["aug_s"] + times["fwd_bwd_s"] + times["update_s"]
        if not (tr.step % cfg.log_every == 0 or tr.step_in_epoch == spe) or not tr.env.is_main:
            return
        now = time.perf_counter()
        row = {"step": tr.step, "epoch": tr.epoch + tr.step_in_epoch / spe,
               **dataclasses.asdict(stats), "lr": times["lr"], "wd": times["wd"],
               "momentum": times["momentum"],
               "images_per_s": w["steps"] * cfg.batch_size / max(now - w["t"], 1e-9),
               "aug_fraction": w["aug"] / max(w["busy"], 1e-9),
               # CPU seconds per step of this process: the wall time it would take alone
               "cpu_s_per_step": (time.process_time() - w["cpu"]) / w["steps"],
               "elapsed_s": self.elapsed}
        self._reset_window()
        self.steps_log.append(row)
        self.emit("step", row)

    def _flags(self) -> int:
        tr, cfg = self.tr, self.tr.cfg
        now = time.monotonic()
        f = 0
        if cfg.save_every_steps and tr.step % cfg.save_every_steps == 0:
            f |= _SAVE
        if cfg.save_every_minutes and now - self.last_save >= 60 * cfg.save_every_minutes:
            f |= _SAVE
        budget = cfg.time_budget_minutes
        if (budget is not None and now - self.start >= 60 * budget) or self.should_stop():
            f |= _STOP
        if tr.env.distributed:  # every rank must take the same decision (the save gathers)
            t = torch.tensor([f], device=tr.device if dist.get_backend() == "nccl" else "cpu")
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            f = int(t.item())
        return f

    def _epoch_row(self, *, knn: bool) -> None:
        tr = self.tr
        sums = tr.epoch_sums
        n = sums.get("n", 0.0)
        row: dict[str, Any] = {"epoch": tr.epoch, "step": tr.step, "elapsed_s": self.elapsed}
        for k in ("loss", "teacher_entropy", "kl", "center_norm"):
            row[k] = sums[k] / n if n else float("nan")
        tr.epoch_sums = {}
        if knn:
            top = self._knn()
            if top is not None:
                row.update(knn_top1=top[0], knn_top5=top[1], knn_k=tr.cfg.knn_k)
                self.knn_top1 = top[0]
        if tr.env.is_main:
            self.epochs_log.append(row)
            self.emit("epoch", row)
        self._reset_window()

    def _knn(self) -> tuple[float, float] | None:
        tr = self.tr
        top = None
        if tr.env.is_main and tr.data.probe is not None:
            top = online_knn(tr.teacher.backbone, tr.data.probe, size=tr.cfg.img_size or 224,
                             device=tr.device, k=tr.cfg.knn_k)
        if tr.env.distributed:
            dist.barrier()
        return top

    def _save(self) -> None:
        state = checkpoint_state(self.tr, self.elapsed)  # every rank: gathers RNG states
        if self.tr.env.is_main:
            self.checkpoint = save_checkpoint(self.out, state)
            self.emit("checkpoint", {"path": str(self.checkpoint), "step": self.tr.step,
                                     "epoch": self.tr.epoch})
        if self.tr.env.distributed:
            dist.barrier()
        self.last_save = time.monotonic()
        self._reset_window()

    def _finish(self, reason: str) -> RunResult:
        tr = self.tr
        self.emit("stop", {"reason": reason, "step": tr.step, "epoch": tr.epoch})
        return RunResult(self.out, tr.step, tr.epoch, reason, self.knn_top1, self.checkpoint)



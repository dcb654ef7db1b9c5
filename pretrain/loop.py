"""The DINO training loop: ``build_*`` pieces, one ``train_step`` and ``train_loop``.

Runs as one process on a CPU or a GPU without any process group, or under ``torchrun`` with DDP
(``gloo`` on CPUs, ``nccl`` on GPUs). The global batch is split evenly over the ranks, so the
data order and the schedules do not depend on the number of processes.

Determinism and resuming: the epoch's data order is a permutation seeded by ``(seed, epoch)``;
each step's augmentation uses a generator seeded by ``(seed, step, rank)``; the global RNG (drop
path) is saved per rank in every checkpoint; schedules are closed-form functions of the step. A
resumed run therefore replays exactly what an uninterrupted one would have done.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from dinoeval._io import try_lock_exclusive
from dinoeval.data import get_source
from dinoeval.errors import DinoevalError
from dinoeval.models import DINOHead
from pretrain.augment import MultiCrop
from pretrain.checkpoint import CHECKPOINT_NAME, RUN_LOCK, load_checkpoint, save_checkpoint
from pretrain.config import PretrainConfig
from pretrain.data import TrainData, build_data, iter_batches, steps_per_epoch
from pretrain.distributed import DistEnv, init_distributed, resolve_device
from pretrain.loss import DINOLoss, LossStats
from pretrain.monitor import EPOCH_COLUMNS, STEP_COLUMNS, CsvLog, online_knn
from pretrain.schedules import Schedules

log = logging.getLogger(__name__)

# Fields a resumed run may change: they alter how the run is watched, never what it computes.
RUN_CONTROL_FIELDS = frozenset({"device", "num_workers", "log_every", "save_every_minutes",
                                "save_every_steps", "time_budget_minutes", "num_threads"})
EventFn = Callable[[str, dict[str, Any]], None]


# ----------------------------------------------------------------------------- models
class MultiCropWrapper(nn.Module):
    """Backbone + head over views of two resolutions: one backbone pass per resolution, one head
    pass over all. ``(2B,3,G,G)[, (NB,3,L,L)] -> ((2+N)B, K)``; keys ``backbone.*``, ``head.*``."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, globals_: torch.Tensor, locals_: torch.Tensor | None = None) -> torch.Tensor:
        feats = self.backbone(globals_)
        if locals_ is not None:
            feats = torch.cat([feats, self.backbone(locals_)])
        return self.head(feats)


def build_backbone(cfg: PretrainConfig, *, drop_path: float) -> VisionTransformer:
    """A timm ViT with the same constructor arguments as :func:`dinoeval.models.build_vit`, so its
    state dict loads there; any input size works (position embeddings are interpolated)."""
    assert cfg.img_size and cfg.embed_dim and cfg.depth and cfg.num_heads, "resolve the config"
    return VisionTransformer(
        img_size=cfg.img_size, patch_size=cfg.patch_size, in_chans=3, num_classes=0,
        embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads,
        drop_path_rate=drop_path, dynamic_img_size=True, global_pool="token",
    )


def build_models(cfg: PretrainConfig) -> tuple[MultiCropWrapper, MultiCropWrapper]:
    """Student (with drop path) and teacher (a copy of it, without drop path, no gradients, in
    train mode).
    Initialised from the current global RNG state."""
    assert cfg.embed_dim

    def head() -> DINOHead:
        return DINOHead(cfg.embed_dim, cfg.out_dim, hidden_dim=cfg.head_hidden_dim,
                        bottleneck_dim=cfg.head_bottleneck_dim, nlayers=cfg.head_nlayers,
                        use_bn=cfg.head_use_bn,
                        norm_last_layer=cfg.norm_last_layer)

    student = MultiCropWrapper(build_backbone(cfg, drop_path=cfg.drop_path), head())
    teacher = MultiCropWrapper(build_backbone(cfg, drop_path=0.0), copy.deepcopy(student.head))
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad_(False)
    # Like the official code, the teacher stays in train mode: a head with BatchNorm then
    # normalises with the batch's statistics (eval mode would use never-updated running stats).
    # Nothing else in the model depends on the mode (the teacher has no drop path).
    return student, teacher


def build_optimizer(model: nn.Module) -> torch.optim.AdamW:
    """AdamW with two groups: weights (weight decay follows the schedule) and biases/norms (none).
    The learning rate and weight decay are set by :func:`train_step` at every step."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if name.endswith(".bias") or p.ndim == 1 else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "apply_wd": True},
                              {"params": no_decay, "weight_decay": 0.0, "apply_wd": False}], lr=0.0)


def build_augment(cfg: PretrainConfig) -> MultiCrop:
    assert cfg.img_size and cfg.local_size
    return MultiCrop(
        global_size=cfg.img_size, local_size=cfg.local_size, local_number=cfg.local_crops_number,
        global_scale=cfg.global_crops_scale, local_scale=cfg.local_crops_scale,
        color_jitter=cfg.color_jitter, color_jitter_p=cfg.color_jitter_p,
        grayscale_p=cfg.grayscale_p, blur_sigma=cfg.blur_sigma, solarize_p=cfg.solarize_p,
    )


def build_loss(cfg: PretrainConfig) -> DINOLoss:
    return DINOLoss(cfg.out_dim, warmup_teacher_temp=cfg.warmup_teacher_temp,
                    teacher_temp=cfg.teacher_temp,
                    warmup_teacher_temp_epochs=cfg.warmup_teacher_temp_epochs, epochs=cfg.epochs,
                    student_temp=cfg.student_temp, center_momentum=cfg.center_momentum,
                    centering=cfg.centering, sharpening=cfg.sharpening)


# ----------------------------------------------------------------------------- data
# ----------------------------------------------------------------------------- the step
@dataclass
class Trainer:
    """Everything a step touches. ``student`` may be DDP-wrapped; ``student_module`` never is."""

    cfg: PretrainConfig
    env: DistEnv
    device: torch.device
    student: nn.Module
    student_module: MultiCropWrapper
    teacher: MultiCropWrapper
    loss_fn: DINOLoss
    optimizer: torch.optim.AdamW
    schedules: Schedules
    augment: MultiCrop
    data: TrainData
    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    epoch_sums: dict[str, float] = field(default_factory=dict)


def step_seed(seed: int, step: int, rank: int) -> int:
    """The augmentation seed of one rank's step (distinct for every (seed, step, rank))."""
    return (seed * 1_000_003 + step) * 1009 + rank


def train_step(tr: Trainer, images: torch.Tensor, *, sync_timing: bool = False
               ) -> tuple[LossStats, dict[str, float]]:
    """One DINO step on this rank's uint8 ``images (b, H, W[, 3])``.

    Returns the loss statistics and the seconds spent in augmentation, forward+backward and the
    update (with ``sync_timing`` the GPU is synchronised between phases so the split is exact).
    """
    cfg, sched, opt = tr.cfg, tr.schedules, tr.optimizer
    lr, wd, mom = sched.lr_at(tr.step), sched.wd_at(tr.step), sched.momentum_at(tr.step)
    for g in opt.param_groups:
        g["lr"] = lr
        if g["apply_wd"]:
            g["weight_decay"] = wd

    def mark() -> float:
        if sync_timing and tr.device.type == "cuda":
            torch.cuda.synchronize(tr.device)
        return time.perf_counter()

    t0 = mark()
    gen = torch.Generator().manual_seed(step_seed(cfg.seed, tr.step, tr.env.rank))
    globals_, locals_ = tr.augment(images.to(tr.device, non_blocking=True), gen)
    t1 = mark()
    amp = torch.autocast(tr.device.type, dtype=torch.bfloat16, enabled=cfg.amp == "bf16")
    with amp:
        with torch.no_grad():
            teacher_out = tr.teacher(globals_)
        student_out = tr.student(globals_, locals_)
    loss, stats = tr.loss_fn(student_out, teacher_out, tr.epoch)
    if not math.isfinite(stats.loss):
        raise DinoevalError(f"loss is {stats.loss} at step {tr.step}; lower --lr or use --amp none")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    t2 = mark()
    clip_gradients(tr.student_module, cfg.clip_grad)
    if tr.epoch < cfg.freeze_last_layer:
        for p in tr.student_module.head.last_layer.parameters():
            p.grad = None
    opt.step()
    ema_update(tr.teacher, tr.student_module, mom)
    t3 = mark()
    return stats, {"aug_s": t1 - t0, "fwd_bwd_s": t2 - t1, "update_s": t3 - t2,
                   "lr": lr, "wd": wd, "momentum": mom}


def clip_gradients(model: nn.Module, clip: float) -> None:
    """Scale each parameter's gradient to norm at most ``clip`` (the official per-parameter
    clipping; 0 disables)."""
    if clip <= 0:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    norms = torch._foreach_norm(grads)
    scale = [(clip / (n + 1e-6)).clamp(max=1.0) for n in norms]
    torch._foreach_mul_(grads, scale)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``teacher <- m * teacher + (1 - m) * student`` for every parameter."""
    tp = list(teacher.parameters())
    sp = [p.detach() for p in student.parameters()]
    torch._foreach_mul_(tp, momentum)
    torch._foreach_add_(tp, sp, alpha=1 - momentum)


# ----------------------------------------------------------------------------- checkpoints
def _gather(t: torch.Tensor, env: DistEnv, device: torch.device) -> torch.Tensor:
    """``(world, ...)`` stack of every rank's copy of ``t`` (on the CPU)."""
    if not env.distributed:
        return t[None].clone()
    comm = t.to(device) if dist.get_backend() == "nccl" else t
    parts = [torch.empty_like(comm) for _ in range(env.world_size)]
    dist.all_gather(parts, comm)
    return torch.stack(parts).cpu()


def rng_states(env: DistEnv, device: torch.device) -> dict[str, torch.Tensor]:
    out = {"cpu": _gather(torch.get_rng_state(), env, device)}
    if device.type == "cuda":
        out["cuda"] = _gather(torch.cuda.get_rng_state(device), env, device)
    return out


def checkpoint_state(tr: Trainer, elapsed: float) -> dict[str, Any]:
    """The checkpoint dict (call on every rank: the RNG states are gathered)."""
    def cpu(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in sd.items()}

    rng = rng_states(tr.env, tr.device)
    return {
        "student": cpu(tr.student_module.state_dict()),
        "teacher": cpu(tr.teacher.state_dict()),
        "optimizer": tr.optimizer.state_dict(),
        "epoch": tr.epoch,
        "step": tr.step,
        "step_in_epoch": tr.step_in_epoch,
        "dino_loss": {"center": tr.loss_fn.center.detach().cpu().clone()},
        "config": tr.cfg.to_dict(),
        "rng": rng,
        "schedule": {"lr": tr.schedules.lr_at(tr.step), "wd": tr.schedules.wd_at(tr.step),
                     "momentum": tr.schedules.momentum_at(tr.step),
                     "teacher_temp": tr.loss_fn.teacher_temp(tr.epoch),
                     "total_steps": tr.schedules.total_steps},
        "epoch_sums": dict(tr.epoch_sums),
        "world_size": tr.env.world_size,
        "elapsed_seconds": float(elapsed),
    }


def restore(tr: Trainer, ckpt: dict[str, Any]) -> None:
    """Load model, optimiser, center, position and this rank's RNG state from ``ckpt``."""
    tr.student_module.load_state_dict(ckpt["student"])
    tr.teacher.load_state_dict(ckpt["teacher"])
    tr.optimizer.load_state_dict(ckpt["optimizer"])
    tr.loss_fn.center.copy_(ckpt["dino_loss"]["center"].to(tr.device))
    tr.epoch, tr.step = int(ckpt["epoch"]), int(ckpt["step"])
    tr.step_in_epoch = int(ckpt["step_in_epoch"])
    tr.epoch_sums = {k: float(v) for k, v in ckpt.get("epoch_sums", {}).items()}
    rng = ckpt["rng"]
    if int(ckpt["world_size"]) == tr.env.world_size:
        torch.set_rng_state(rng["cpu"][tr.env.rank])
        if tr.device.type == "cuda" and "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"][tr.env.rank], tr.device)
    else:
        log.warning("checkpoint was written by %d processes, resuming with %d: drop-path "
                    "randomness is reseeded (not bit-identical to an uninterrupted run)",
                    ckpt["world_size"], tr.env.world_size)
        torch.manual_seed(step_seed(tr.cfg.seed, tr.step, tr.env.rank))


def resume_config(out_dir: str | Path, **overrides: Any) -> PretrainConfig:
    """The config of the run in ``out_dir`` with run-control fields replaced by ``overrides``."""
    ckpt = load_checkpoint(out_dir)
    cfg = PretrainConfig.from_dict(ckpt["config"])
    bad = sorted(k for k, v in overrides.items() if k not in RUN_CONTROL_FIELDS
                 and v != getattr(cfg, k))
    if bad:
        raise DinoevalError(f"--resume continues the saved run; these options would change what it "
                            f"computes: {', '.join(bad)} (start a new --run-dir instead)")
    return dataclasses.replace(cfg, **{k: v for k, v in overrides.items()
                                       if k in RUN_CONTROL_FIELDS})


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



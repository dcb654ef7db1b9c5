"""What a pretrain checkpoint holds of a run, and putting it back: models, optimiser, DINO
center, position in the schedule, and every rank's RNG state (so a resumed run replays exactly
what an uninterrupted one would have done). Files themselves: :mod:`pretrain.checkpoint`.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from dinoeval.errors import DinoevalError
from pretrain.checkpoint import load_checkpoint
from pretrain.config import PretrainConfig
from pretrain.distributed import DistEnv
from pretrain.step import Trainer, step_seed

log = logging.getLogger(__name__)

# Fields a resumed run may change: they alter how the run is watched, never what it computes.
RUN_CONTROL_FIELDS = frozenset({"device", "num_workers", "log_every", "save_every_minutes",
                                "save_every_steps", "time_budget_minutes", "num_threads"})


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

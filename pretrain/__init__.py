"""DINO self-distillation pretraining that writes checkpoints dinoeval reads.

Build blocks: :mod:`pretrain.augment` (batched multi-crop), :mod:`pretrain.loss` (DINO loss with
centering and sharpening), :mod:`pretrain.schedules`, :mod:`pretrain.step` (``build_*``,
``train_step``), :mod:`pretrain.loop` (``train_loop``), :mod:`pretrain.data` (epoch order,
shards, probe), :mod:`pretrain.distributed` (torchrun), :mod:`pretrain.state` (what a
checkpoint holds, restore, resume), :mod:`pretrain.checkpoint` (atomic save and load),
:mod:`pretrain.monitor` (CSV logs, online k-NN).
"""

from pretrain.augment import MultiCrop
from pretrain.checkpoint import load_checkpoint, save_checkpoint
from pretrain.config import PretrainConfig
from pretrain.loop import RunResult, train_loop
from pretrain.loss import DINOLoss, LossStats
from pretrain.schedules import Schedules, cosine_schedule, teacher_temperature
from pretrain.state import resume_config
from pretrain.step import build_models, train_step

__all__ = [
    "DINOLoss", "LossStats", "MultiCrop", "PretrainConfig", "RunResult", "Schedules",
    "build_models", "cosine_schedule", "load_checkpoint", "resume_config", "save_checkpoint",
    "teacher_temperature", "train_loop", "train_step",
]

"""One DINO step and what it is built from: the multi-crop student/teacher, optimiser,
augmentation and loss (``build_*``), the :class:`Trainer` state a step touches, ``train_step``,
per-parameter gradient clipping and the teacher's EMA update (Caron et al. 2021, the official
``main_dino.py``).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from dinoeval.errors import DinoevalError
from dinoeval.models import DINOHead
from pretrain.augment import MultiCrop
from pretrain.config import PretrainConfig
from pretrain.data import TrainData
from pretrain.distributed import DistEnv
from pretrain.loss import DINOLoss, LossStats
from pretrain.schedules import Schedules


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

"""The one configuration object of a pretraining run; its defaults are the DINO paper's.

Every default lives here and nowhere else. The command line maps options onto these fields, and the
resolved config (``img_size`` and the arch fields filled in) is saved in every checkpoint as a dict
of plain Python values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from dinoeval.checks import option
from dinoeval.errors import DinoevalError
from dinoeval.models.vit import HEADS_BY_WIDTH, parse_arch_name


@dataclass(frozen=True, kw_only=True)
class PretrainConfig:
    """A DINO pretraining run (paper defaults, see DESIGN.md).

    Attributes are grouped: data, model, multi-crop, loss, optimisation, run control.
    ``batch_size`` is the global batch (split evenly over the ranks); the learning rate is
    ``lr * batch_size / 256``. Epoch-valued schedules (warm-ups, frozen last layer) count epochs
    of ``epoch_images`` images (the whole source when ``None``).
    """

    # --- data
    data: str = option("fashion-mnist:train", help="Training images, e.g. fashion-mnist:train, "
                       "imagefolder:/data/imagenet/train, shapes:train.")
    epoch_images: int | None = option(None, help="Images per epoch (default: all).")
    knn_every: int = option(1, help="Epochs between online k-NN (0: never).")
    knn_train_size: int = 2000
    knn_test_size: int = 1000
    knn_k: int = 20
    # unreadable image files are left out of training (counted and logged) instead of stopping
    skip_bad_images: bool = option(
        False, help="Leave unreadable image files out of training (counted) instead of "
        "stopping.")
    # --- model
    arch: str = option("vit_small", help="vit_tiny | vit_small | vit_base | vit_large.")
    patch_size: int = option(16, help="ViT patch size.")
    img_size: int | None = option(
        None, help="Global crop size (default: the data's native size, else 224).")
    embed_dim: int | None = option(None, help="Override the arch's width.")
    depth: int | None = option(None, help="Override the arch's depth.")
    num_heads: int | None = option(None, help="Override the arch's heads.")
    drop_path: float = 0.1
    out_dim: int = option(65536, help="Prototypes K of the DINO head.")
    head_hidden_dim: int = 2048
    head_bottleneck_dim: int = 256
    head_nlayers: int = 3
    head_use_bn: bool = False  # BatchNorm in the head's MLP (the official use_bn_in_head)
    norm_last_layer: bool = True
    # --- multi-crop augmentation
    global_crops_scale: tuple[float, float] = (0.4, 1.0)
    local_crops_number: int = option(8, help="Local crops per image.")
    local_crops_scale: tuple[float, float] = (0.05, 0.4)
    local_size: int | None = None  # None: 96/224 of the global size, rounded to the patch size
    color_jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    color_jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # at 224 px; scaled with the crop size
    solarize_p: float = 0.2
    # --- loss
    warmup_teacher_temp: float = 0.04
    teacher_temp: float = option(0.07, help="Teacher temperature after warm-up.")
    warmup_teacher_temp_epochs: int = 30
    student_temp: float = 0.1
    center_momentum: float = 0.9
    centering: bool = option(
        True, help="Subtract the teacher center (--no-centering: the collapse ablation).")
    sharpening: bool = option(
        True, help="Sharpen the teacher (--no-sharpening: the collapse ablation, teacher "
        "temperature = student temperature).")
    # --- optimisation
    epochs: int = option(100, help="Epochs (the schedules' length).")
    batch_size: int = option(64, help="Global batch size (split over ranks).")
    lr: float = option(5e-4, help="Base learning rate (scaled by batch/256).")
    min_lr: float = 1e-6
    warmup_epochs: int = 10
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    momentum_teacher: float = option(
        0.996, help="Start of the teacher EMA momentum cosine schedule to 1.")
    clip_grad: float = 3.0
    freeze_last_layer: int = 1
    amp: str = option("none", help="none | bf16 (autocast).")
    # --- run control
    seed: int = option(0, help="Seed of weights, data order and augmentation.")
    device: str = option("auto", help="auto | cpu | cuda | cuda:N.")
    num_workers: int = option(0, help="Decoding workers (image folders).")
    num_threads: int = option(0, help="torch CPU threads (0: default).", flag="--threads")
    log_every: int = option(10, help="Steps between log rows.")
    save_every_minutes: float = option(10.0, help="Checkpoint interval within epochs.")
    save_every_steps: int = 0  # extra mid-epoch checkpoints (0: off); used by the tests
    time_budget_minutes: float | None = option(
        None, help="Stop cleanly (saving a checkpoint) after this many minutes.")

    def __post_init__(self) -> None:
        if self.batch_size < 2:
            raise DinoevalError(f"batch_size must be at least 2, got {self.batch_size}")
        if self.amp not in ("none", "bf16"):
            raise DinoevalError(f"amp must be 'none' or 'bf16', got {self.amp!r}")
        if self.local_crops_number < 0:
            raise DinoevalError("local_crops_number must be >= 0")
        if self.epochs < 1:
            raise DinoevalError(f"epochs must be >= 1, got {self.epochs}")

    def resolved(self, native_size: tuple[int, int] | None) -> PretrainConfig:
        """Fill ``img_size``, ``local_size`` and the arch fields (idempotent)."""
        kw = parse_arch_name(self.arch)
        img = self.img_size or (min(native_size) if native_size else 224)
        p = self.patch_size
        local = self.local_size or max(p, round(img * 96 / 224 / p) * p)
        width = self.embed_dim or kw["embed_dim"]
        # dinoeval infers heads from the width with this rule when a file carries no config
        heads = self.num_heads or (kw["num_heads"] if width == kw["embed_dim"]
                                   else HEADS_BY_WIDTH.get(width, max(1, width // 64)))
        if width % heads:
            if self.num_heads:
                raise DinoevalError(f"--num-heads {heads} does not divide the width {width}; "
                                    "pass a divisor of it")
            raise DinoevalError(f"width {width} is not divisible by the {heads} heads inferred "
                                f"for it; pass --num-heads N with N a divisor of {width}")
        for what, side, fix in (("global crop", img, "--img-size N"),
                                ("local crop", local, "--set local_size=N")):
            if side % p:
                raise DinoevalError(f"{what} side {side} px is not a multiple of patch size {p}; "
                                    f"pass {fix} with N a multiple of {p} (e.g. {max(p, side // p * p)})")
        return dataclasses.replace(self, img_size=img, local_size=local, embed_dim=width,
                                   depth=self.depth or kw["depth"], num_heads=heads)

    @property
    def lr_scaled(self) -> float:
        """Peak learning rate after the linear scaling rule."""
        return self.lr * self.batch_size / 256.0

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values only (tuples become lists) so ``weights_only`` loading works."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PretrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise so old runs fail loudly."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise DinoevalError(f"checkpoint config has unknown fields {unknown}; "
                                "it was written by another version of pretrain")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kw)


# Named starting points; explicit options override them. Each was measured (results/).
RECIPES: dict[str, dict[str, Any]] = {
    # Fashion-MNIST on a CPU (results/pretrain_fmnist.md), the checkpoint `dinoeval demo --data
    # fashion-mnist` ships: a small ViT (patch 7 -> 4x4 grid at 28 px, width 128, depth 3),
    # K=1024, 2x28 + 4x14 crops, 54,000 steps of 64 (1080 epochs of 3200 images; about 0.2 s per
    # step on the 2-core build machine, 3 hours). The last layer stays frozen the whole run (any
    # --epochs): trainable, short runs drifted to uniform collapse.
    # BatchNorm in the head and lr 2e-3 lifted the demo's full-split k-NN from 76.7% to 80.6% on
    # 6000 steps; tripling the schedule gave 82.1% with teacher momentum 0.99 and 82.9% with 0.996;
    # tripling it again (54,000 steps, this recipe) gave 84.5% (results/demo_fmnist/NOTES.md).
    # Raw pixels score 84.6%.
    "fmnist-cpu": dict(
        data="fashion-mnist:train", arch="vit_tiny", patch_size=7, embed_dim=128, depth=3,
        num_heads=2, drop_path=0.0, out_dim=1024, head_hidden_dim=512, head_bottleneck_dim=128,
        head_use_bn=True, local_crops_number=4, local_size=14, local_crops_scale=(0.1, 0.4),
        warmup_teacher_temp=0.04, teacher_temp=0.04, warmup_teacher_temp_epochs=0,
        epochs=1080, epoch_images=3200, batch_size=64, lr=2e-3, min_lr=1e-5, warmup_epochs=1,
        weight_decay=0.04, weight_decay_end=0.1, momentum_teacher=0.996, freeze_last_layer=1_000_000,
        knn_every=10, knn_train_size=1500, knn_test_size=500, num_threads=1,
    ),
    # The procedural shapes (64 px RGB, with masks; trained at 32 px, patch 4 -> 8x8 grid) that
    # `dinoeval demo` ships (dinoeval/assets/checkpoints/README.md). Against the Fashion-MNIST
    # settings: BatchNorm in the head (the official use_bn_in_head), K=256, a higher lr, much
    # stronger colour augmentation (hue 0.4, grayscale p=0.5: every object has a random colour,
    # and with DINO's default colour jitter the runs matched views by colour and learned no shape)
    # and larger local crops (25-60% of the image, so most of them hold part of the object: the
    # attention Jaccard at the end was 0.335 against 0.236 with 10-40%).
    # 6000 steps of 64 (120 epochs of 3200 images); 1.0 s per step on one core of the 2-core
    # build machine (101 min). Half the schedule (60 epochs) reached k-NN 37% on the demo; this
    # one 51% (results/demo/NOTES.md).
    "shapes-cpu": dict(
        data="shapes:train@n=5000,size=64,classes=6,seed=0", arch="vit_tiny", patch_size=4,
        img_size=32, embed_dim=128, depth=3, num_heads=2, drop_path=0.0, out_dim=256,
        head_hidden_dim=256, head_bottleneck_dim=64, head_use_bn=True,
        local_crops_number=4, local_size=16, local_crops_scale=(0.25, 0.6),
        color_jitter=(0.4, 0.4, 0.4, 0.4), grayscale_p=0.5,
        warmup_teacher_temp=0.04, teacher_temp=0.04, warmup_teacher_temp_epochs=0,
        epochs=120, epoch_images=3200, batch_size=64, lr=2e-3, min_lr=1e-5, warmup_epochs=1,
        weight_decay=0.04, weight_decay_end=0.1, momentum_teacher=0.99, freeze_last_layer=1_000_000,
        knn_every=4, knn_train_size=2500, knn_test_size=1000, time_budget_minutes=150.0,
        num_threads=1,
    ),
}


# One line per recipe for `dinoeval pretrain --help` (tests check every recipe has one).
RECIPE_DESCRIPTIONS: dict[str, str] = {
    "fmnist-cpu": "Fashion-MNIST, ViT width 128 depth 3 patch 7 at 28 px, 54,000 steps on one "
                  "CPU core (about 3 h); the checkpoint `demo --data fashion-mnist` ships.",
    "shapes-cpu": "procedural shapes with masks, ViT width 128 depth 3 patch 4 at 32 px, 6000 "
                  "steps (about 100 min); the checkpoint `dinoeval demo` ships.",
}


def recipe_config(name: str | None, **overrides: Any) -> PretrainConfig:
    """``PretrainConfig`` from a named recipe (or the paper defaults) plus ``overrides``."""
    base: dict[str, Any] = {}
    if name:
        if name not in RECIPES:
            raise DinoevalError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
        base = dict(RECIPES[name])
    return PretrainConfig(**{**base, **overrides})

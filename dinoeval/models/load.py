"""Backbone specs -> a ready-to-run :class:`Backbone`.

A spec is one of:

* a checkpoint path (any format :mod:`dinoeval.models.checkpoints` reads, of any family in
  :mod:`dinoeval.models.registry`);
* ``timm:NAME`` (a timm ViT, DINOv3 ``vit_*_patch16_dinov3`` or ``xcit_*``; weights from
  ``weights=FILE`` or random init);
* ``random:ARCH`` (``random:vit_small_patch16_224``, ``random:vit_tiny_p4_28``, or a checkpoint's
  architecture when ``ARCH`` is a path), the random-init baseline;
* ``pixels`` (raw pixels at the source's native resolution, or ``pixel_size``), the other baseline.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dinoeval.checks import parse_img_size, positive
from dinoeval.models.backbone import Backbone, assemble, backbone_from_raw
from dinoeval.models.checkpoints import RawCheckpoint, read_checkpoint
from dinoeval.models.registry import BuildOptions, detect_family
from dinoeval.models.timm_models import timm_backbone
from dinoeval.models.vit import (
    ViTArch,
    build_vit,
    check_img_size,
    heads_from_meta,
    infer_arch,
    parse_arch_name,
    size_pair,
)


def load_backbone(
    spec: str,
    *,
    checkpoint_key: str = "teacher",
    weights: str | Path | None = None,
    img_size: int | tuple[int, int] | str | None = None,
    num_heads: int | None = None,
    pixel_size: int | None = None,
    seed: int = 0,
) -> Backbone:
    """Resolve a backbone spec (see the module docstring).

    Args:
        spec: checkpoint path, ``timm:NAME``, ``random:ARCH`` or ``pixels``.
        checkpoint_key: which network of a training checkpoint (``teacher`` or ``student``).
        weights: a state-dict file for ``timm:NAME``.
        img_size: input size ``N``, ``(H, W)`` or ``"HxW"``; default: the family's evaluation resolution
            (224 for DINOv2/DINOv3), else the native one. Position tables are resampled by the
            family's rule.
        num_heads: override the heads-from-width table.
        pixel_size: resize images to this side for ``pixels`` (default: native size).
        seed: initialisation seed for ``random:``/``timm:`` without weights.

    Raises:
        DinoevalError: unreadable/unsafe file, no family recognises it, or bad sizes.
    """
    img_size = parse_img_size(img_size)
    for option, value in (("--num-heads", num_heads), ("--pixel-size", pixel_size)):
        if value is not None:
            positive(option, value)
    if spec == "pixels":
        size = (pixel_size, pixel_size) if pixel_size else None
        return Backbone(spec=spec, kind="pixels", model=None, arch=None, name="pixels",
                        content_hash=f"pixels-{pixel_size or 'native'}", img_size=size,
                        family="pixels")
    if spec.startswith("random:"):
        return _random_backbone(spec, spec.split(":", 1)[1], img_size, num_heads, seed)
    if spec.startswith("timm:"):
        return timm_backbone(spec, spec.split(":", 1)[1], weights, img_size, num_heads, seed)
    raw = read_checkpoint(spec, checkpoint_key=checkpoint_key)
    return backbone_from_raw(spec, raw, img_size=img_size, num_heads=num_heads)


def _random_backbone(spec: str, arch_name: str, img_size: int | tuple[int, int] | None,
                     num_heads: int | None, seed: int) -> Backbone:
    if Path(arch_name).exists():  # random init with a checkpoint's architecture
        raw = read_checkpoint(arch_name)
        fam = detect_family(raw.backbone, raw, arch_name)
        if fam.name not in ("dino", "dinov2", "dinoeval"):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                built = fam.build(raw.backbone, raw, BuildOptions(num_heads=num_heads))
                _reinit(built.model)
            raw = RawCheckpoint(backbone={}, format="random", content_hash="")
            bb = assemble(spec, raw, built, fam.name, img_size, native=fam.native)
            bb.content_hash = f"random-{fam.name}-{bb.name}-seed{seed}"
            return bb
        arch = infer_arch(raw.backbone, num_heads=num_heads or heads_from_meta(raw.meta))
    else:
        kw = parse_arch_name(arch_name)
        if num_heads:
            kw["num_heads"] = num_heads
        s = kw.pop("img_size")
        arch = ViTArch(img_size=(s, s), **kw)
    check_img_size(img_size, arch.patch_size, arch.name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_vit(arch, img_size=img_size).eval()
    size = size_pair(img_size) if img_size else arch.img_size
    return Backbone(spec=spec, kind="vit", model=model, arch=arch, name=arch.name,
                    content_hash=f"random-{arch.name}-seed{seed}", img_size=size,
                    meta={"format": "random"})


def _reinit(model: nn.Module) -> None:
    """Re-initialise every submodule that can (the random-init baseline of a non-ViT family)."""
    for m in model.modules():
        if m is not model and hasattr(m, "reset_parameters"):
            m.reset_parameters()

"""Backbone specs -> a ready-to-run :class:`Backbone`.

A spec is one of:

* a checkpoint path (any format :mod:`dinoeval.models.checkpoints` reads);
* ``timm:NAME`` (a timm ViT; weights from ``weights=FILE`` or random init);
* ``random:ARCH`` (``random:vit_small_patch16_224``, ``random:vit_tiny_p4_28``, or a checkpoint's
  architecture when ``ARCH`` is a path), the random-init baseline;
* ``pixels`` (raw pixels at the source's native resolution, or ``pixel_size``), the other baseline.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dinoeval.checks import positive
from dinoeval.errors import DinoevalError
from dinoeval.models.checkpoints import RawCheckpoint, read_checkpoint
from dinoeval.models.head import DINOHead, head_from_state_dict
from dinoeval.models.vit import ViTArch, infer_arch, load_vit, parse_arch_name

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Backbone:
    """A model ready for feature extraction.

    Attributes:
        spec: what the user typed.
        kind: ``"vit"`` or ``"pixels"``.
        model: the timm ViT (``None`` for pixels), in eval mode.
        arch: architecture (``None`` for pixels).
        name: short architecture name for tables (``ViT-S/16``, ``pixels``).
        content_hash: hash of the checkpoint bytes, or of the spec for random/pixels.
        img_size: the input size features are computed at (``None``: the source's native size).
        head: the DINO head when the checkpoint carries one.
        center: the DINO loss center ``(1, K)`` when present.
        notes: what the loader ignored or converted.
    """

    spec: str
    kind: str
    model: nn.Module | None
    arch: ViTArch | None
    name: str
    content_hash: str
    img_size: tuple[int, int] | None
    head: DINOHead | None = None
    center: torch.Tensor | None = None
    notes: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def patch_size(self) -> int:
        return self.arch.patch_size if self.arch else 1

    @property
    def num_prefix_tokens(self) -> int:
        return 1 + (self.arch.reg_tokens if self.arch else 0)

    def to(self, device: torch.device | str) -> Backbone:
        if self.model is not None:
            self.model.to(device)
        if self.head is not None:
            self.head.to(device)
        return self


def load_backbone(
    spec: str,
    *,
    checkpoint_key: str = "teacher",
    weights: str | Path | None = None,
    img_size: int | None = None,
    num_heads: int | None = None,
    pixel_size: int | None = None,
    seed: int = 0,
) -> Backbone:
    """Resolve a backbone spec (see the module docstring).

    Args:
        spec: checkpoint path, ``timm:NAME``, ``random:ARCH`` or ``pixels``.
        checkpoint_key: which network of a training checkpoint (``teacher`` or ``student``).
        weights: a state-dict file for ``timm:NAME``.
        img_size: input size; position embeddings are interpolated when it differs.
        num_heads: override the heads-from-width table.
        pixel_size: resize images to this side for ``pixels`` (default: native size).
        seed: initialisation seed for ``random:``/``timm:`` without weights.
    """
    for option, value in (("--img-size", img_size), ("--num-heads", num_heads),
                          ("--pixel-size", pixel_size)):
        if value is not None:
            positive(option, value)
    if spec == "pixels":
        size = (pixel_size, pixel_size) if pixel_size else None
        return Backbone(spec=spec, kind="pixels", model=None, arch=None, name="pixels",
                        content_hash=f"pixels-{pixel_size or 'native'}", img_size=size)
    if spec.startswith("random:"):
        return _random_backbone(spec, spec.split(":", 1)[1], img_size, num_heads, seed)
    if spec.startswith("timm:"):
        return _timm_backbone(spec, spec.split(":", 1)[1], weights, img_size, num_heads, seed)
    raw = read_checkpoint(spec, checkpoint_key=checkpoint_key)
    return backbone_from_raw(spec, raw, img_size=img_size, num_heads=num_heads)


def backbone_from_raw(spec: str, raw: RawCheckpoint, *, img_size: int | None = None,
                      num_heads: int | None = None) -> Backbone:
    """Build a :class:`Backbone` from an already-read checkpoint."""
    heads = num_heads or _heads_from_meta(raw.meta)
    arch = infer_arch(raw.backbone, num_heads=heads)
    model, unexpected = load_vit(raw.backbone, arch, img_size=img_size)
    notes = list(raw.notes)
    if unexpected:
        notes.append(f"unexpected keys ignored: {', '.join(unexpected[:10])}"
                     f"{' ...' if len(unexpected) > 10 else ''}")
    head = head_from_state_dict(raw.head).eval() if raw.head else None
    for n in notes:
        log.info("%s: %s", spec, n)
    size = (img_size, img_size) if img_size else arch.img_size
    return Backbone(spec=spec, kind="vit", model=model, arch=arch, name=arch.name,
                    content_hash=raw.content_hash, img_size=size, head=head, center=raw.center,
                    notes=notes, meta={"format": raw.format, **raw.meta})


def _heads_from_meta(meta: dict[str, Any]) -> int | None:
    if isinstance(meta.get("num_heads"), int):
        return meta["num_heads"]
    arch = meta.get("arch")
    if isinstance(arch, str) and arch.startswith("vit_"):
        try:
            return parse_arch_name(arch.split("_patch")[0])["num_heads"]
        except DinoevalError:
            return None
    return None


def _random_backbone(spec: str, arch_name: str, img_size: int | None, num_heads: int | None,
                     seed: int) -> Backbone:
    if Path(arch_name).exists():  # random init with a checkpoint's architecture
        raw = read_checkpoint(arch_name)
        arch = infer_arch(raw.backbone, num_heads=num_heads or _heads_from_meta(raw.meta))
    else:
        kw = parse_arch_name(arch_name)
        if num_heads:
            kw["num_heads"] = num_heads
        s = kw.pop("img_size")
        arch = ViTArch(img_size=(s, s), **kw)
    from dinoeval.models.vit import build_vit

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_vit(arch, img_size=img_size).eval()
    size = (img_size, img_size) if img_size else arch.img_size
    return Backbone(spec=spec, kind="vit", model=model, arch=arch, name=arch.name,
                    content_hash=f"random-{arch.name}-seed{seed}", img_size=size,
                    meta={"format": "random"})


def _timm_backbone(spec: str, name: str, weights: str | Path | None, img_size: int | None,
                   num_heads: int | None, seed: int) -> Backbone:
    import timm

    if not timm.is_model(name):
        raise DinoevalError(f"timm has no model {name!r}; see timm.list_models('vit_*')")
    if weights is not None:
        raw = read_checkpoint(weights)
        bb = backbone_from_raw(spec, raw, img_size=img_size, num_heads=num_heads)
        bb.meta["timm_name"] = name
        return bb
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ref = timm.create_model(name, pretrained=False, num_classes=0)
    state = ref.state_dict()
    arch = infer_arch(state, num_heads=num_heads or getattr(ref.blocks[0].attn, "num_heads", None))
    model, _ = load_vit(state, arch, img_size=img_size)
    size = (img_size, img_size) if img_size else arch.img_size
    return Backbone(spec=spec, kind="vit", model=model, arch=arch, name=arch.name,
                    content_hash=f"timm-{name}-random-seed{seed}", img_size=size,
                    meta={"format": "timm-random", "timm_name": name})

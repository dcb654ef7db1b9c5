"""The :class:`Backbone`: a built network with its input size, head and provenance.

:func:`backbone_from_raw` builds one from a read checkpoint (family detected, input size chosen,
head rebuilt); resolving a spec string (checkpoint path, ``timm:NAME``, ``random:ARCH``,
``pixels``) is :func:`dinoeval.models.load.load_backbone`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dinoeval.errors import DinoevalError
from dinoeval.models.checkpoints import RawCheckpoint
from dinoeval.models.head import DINOHead, head_from_state_dict
from dinoeval.models.registry import Adapter, BuildOptions, Built, detect_family, family_names
from dinoeval.models.vit import (
    VIT_ADAPTER,
    check_img_size,
    size_pair,
)

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPEC_HELP = ("a checkpoint file or folder (families: {families}), timm:NAME, random:ARCH "
             "or pixels")


def spec_help() -> str:
    """What ``--ckpt`` accepts, naming the registered checkpoint families."""
    return SPEC_HELP.format(families=family_names())


@dataclass
class Backbone:
    """A model ready for feature extraction.

    Attributes:
        spec: what the user typed.
        kind: ``"vit"`` (any network with tokens) or ``"pixels"``.
        model: the network (``None`` for pixels), in eval mode.
        arch: architecture (``None`` for pixels): ``name``, ``patch_size``, ``img_size`` (native),
            ``reg_tokens``, ``embed_dim``, ``depth``, ``in_chans``.
        name: short architecture name for tables (``ViT-S/16``, ``pixels``).
        content_hash: hash of the checkpoint bytes, or of the spec for random/pixels.
        img_size: the input size features are computed at (``None``: the source's native size).
        head: the DINO head when the checkpoint carries one.
        center: the DINO loss center ``(1, K)`` when present.
        notes: what the loader ignored or converted.
        family: the checkpoint family (see :mod:`dinoeval.models.registry`).
        adapter: how to get tokens and attention from ``model``.
    """

    spec: str
    kind: str
    model: nn.Module | None
    arch: Any
    name: str
    content_hash: str
    img_size: tuple[int, int] | None
    head: DINOHead | None = None
    center: torch.Tensor | None = None
    notes: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    family: str = "dino"
    adapter: Adapter = VIT_ADAPTER

    @property
    def patch_size(self) -> int:
        return self.arch.patch_size if self.arch else 1

    @property
    def num_prefix_tokens(self) -> int:
        return 1 + (self.arch.reg_tokens if self.arch else 0)

    @property
    def in_chans(self) -> int:
        return int(getattr(self.arch, "in_chans", 3)) if self.arch else 3

    @property
    def depth(self) -> int:
        assert self.model is not None
        return self.adapter.depth(self.model)

    def to(self, device: torch.device | str) -> Backbone:
        if self.model is not None:
            self.model.to(device)
        if self.head is not None:
            self.head.to(device)
        return self

    def fit_channels(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        """A normalised RGB batch for a one-channel network: the channel mean, normalised with
        the mean of ``mean``/``std`` (how ``attention`` feeds one-channel ViTs); else ``x``."""
        if self.in_chans != 1 or x_BCHW.shape[1] == 1:
            return x_BCHW
        m = torch.tensor(self.mean, dtype=x_BCHW.dtype, device=x_BCHW.device).view(1, -1, 1, 1)
        s = torch.tensor(self.std, dtype=x_BCHW.dtype, device=x_BCHW.device).view(1, -1, 1, 1)
        raw = (x_BCHW * s + m).mean(dim=1, keepdim=True)
        return (raw - sum(self.mean) / 3) / (sum(self.std) / 3)

    def tokens(self, x_BCHW: torch.Tensor, n_last: int = 1) -> list[torch.Tensor]:
        """Final-norm tokens ``(B, T, D)`` of the last ``n_last`` blocks (class token first, then
        ``num_prefix_tokens - 1`` register/storage tokens, then patches, row-major)."""
        if self.model is None:
            raise DinoevalError(f"{self.spec} has no tokens")
        cap = self.adapter.max_blocks
        if cap is not None and n_last > cap:
            raise DinoevalError(f"{self.spec} ({self.family}) gives features of its last block "
                                f"only; use --feature cls or cls+avgpool")
        return self.adapter.tokens(self.model, self.fit_channels(x_BCHW), n_last)

    def cls_attention(self, x_BCHW: torch.Tensor, block: int = -1) -> torch.Tensor:
        """``(B, heads, H // p, W // p)`` CLS->patch attention of ``block`` (prefix tokens left
        out); a one-line error for families without it."""
        if self.model is None or self.adapter.no_attention:
            why = self.adapter.no_attention or "raw pixels"
            raise DinoevalError(f"{self.spec} has no attention maps ({why}); pass a ViT "
                                "checkpoint, random:ARCH or timm:NAME")
        return self.adapter.cls_attention(self.model, self.fit_channels(x_BCHW), block,
                                          self.num_prefix_tokens)


def backbone_from_raw(spec: str, raw: RawCheckpoint, *, img_size: int | tuple[int, int] | None = None,
                      num_heads: int | None = None) -> Backbone:
    """Build a :class:`Backbone` from an already-read checkpoint (its family detected)."""
    fam = detect_family(raw.backbone, raw, spec)
    built = fam.build(raw.backbone, raw, BuildOptions(num_heads=num_heads))
    return assemble(spec, raw, built, fam.name, img_size, native=fam.native)


def assemble(spec: str, raw: RawCheckpoint, built: Built, family: str,
             img_size: int | tuple[int, int] | None, native: str = "") -> Backbone:
    """The :class:`Backbone` of a built network: input size chosen, head rebuilt, notes logged."""
    arch = built.arch
    check_img_size(img_size, arch.patch_size, arch.name)
    notes = list(raw.notes) + list(built.notes)
    if img_size is not None:
        size = size_pair(img_size)
    elif built.eval_size is not None:
        size = built.eval_size
        where = (f"{arch.img_size[0]}x{arch.img_size[1]} px" if not native.startswith("any")
                 else native.split(" (")[0])
        chosen = (f"input {size[0]}x{size[1]} px: the {family} evaluation resolution "
                  f"(native: {where}); --img-size N to change")
        log.warning("%s: %s", spec, chosen)  # shown by every command: a default worth seeing
        notes.append(chosen)
    else:
        size = tuple(arch.img_size)
    head = None
    if raw.head:
        try:
            head = head_from_state_dict(raw.head).eval()
        except (KeyError, ValueError, RuntimeError, IndexError) as err:
            notes.append(f"the DINO head could not be rebuilt ({str(err).splitlines()[0][:120]});"
                         " commands that need it will say so")
    for n in notes:
        log.info("%s: %s", spec, n)
    return Backbone(spec=spec, kind="vit", model=built.model, arch=arch, name=arch.name,
                    content_hash=raw.content_hash, img_size=size, head=head, center=raw.center,
                    notes=notes, meta={"format": raw.format, "family": family, **raw.meta},
                    family=family, adapter=built.adapter)

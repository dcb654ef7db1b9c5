"""ViT families built with timm's ``VisionTransformer``: DINO v1, DINOv2 (with or without
registers, SwiGLU ViT-g) and this project's pretrain checkpoints.

Architecture is read off tensor shapes (:func:`infer_arch`). Position embeddings are resampled at
every forward to the input's patch grid, each family the way its official model does it
(:func:`interpolate_pos_embed`):

* DINO v1 (``vision_transformer.py`` ``interpolate_pos_encoding``) and DINOv2 without registers
  (``interpolate_offset=0.1``, ``interpolate_antialias=False``): bicubic with
  ``scale_factor = (g + 0.1) / G`` per side, no anti-aliasing, the table kept as is when the grid
  is the native square ``G x G``;
* DINOv2 with registers (hub ``dinov2_*_reg``: ``interpolate_offset=0``,
  ``interpolate_antialias=True``): bicubic to ``size=(gh, gw)`` with anti-aliasing;
* this project's pretrain checkpoints and ``timm:``/``random:`` ViTs: timm's own
  ``resample_abs_pos_embed`` (bicubic, anti-aliased), the rule they were trained with.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from timm.layers import SwiGLUPacked, resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from dinoeval.errors import DinoevalError
from dinoeval.models.attention import cls_attention as explicit_cls_attention
from dinoeval.models.registry import Adapter, BuildOptions, Built, Family, register_family

if TYPE_CHECKING:
    from dinoeval.models.checkpoints import RawCheckpoint

# Standard ViT widths -> heads (DeiT/ViT/DINOv2 tables); other widths use width // 64.
HEADS_BY_WIDTH = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1536: 24}
NAMED_ARCHS = {
    "vit_tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "vit_small": dict(embed_dim=384, depth=12, num_heads=6),
    "vit_base": dict(embed_dim=768, depth=12, num_heads=12),
    "vit_large": dict(embed_dim=1024, depth=24, num_heads=16),
}


@dataclass(frozen=True)
class ViTArch:
    """Everything needed to rebuild a timm ``VisionTransformer``.

    ``img_size`` is the grid the position embeddings were trained for, times the patch size.
    ``pos_embed_has_cls``: whether ``pos_embed`` carries an entry for the class token.
    ``mlp``: ``"mlp"`` (fc1-act-fc2) or ``"swiglu"`` (DINOv2 ViT-g's fused SwiGLU, ``w12``/``w3``).
    ``norm_eps``: every LayerNorm's epsilon (1e-6 in DINO and DINOv2; a Hugging Face export
    states its own ``layer_norm_eps``). ``act``: the MLP activation, a ``transformers``
    ``hidden_act`` name (``gelu`` is the exact erf GELU of DINO / DINOv2).
    """

    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int
    img_size: tuple[int, int]
    in_chans: int = 3
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    reg_tokens: int = 0
    layer_scale: bool = False
    pos_embed_has_cls: bool = True
    mlp: str = "mlp"
    norm_eps: float = 1e-6
    act: str = "gelu"

    @property
    def name(self) -> str:
        size = {192: "T", 384: "S", 768: "B", 1024: "L", 1536: "g"}.get(self.embed_dim,
                                                                      f"d{self.embed_dim}")
        reg = f"+reg{self.reg_tokens}" if self.reg_tokens else ""
        depth = "" if self.depth in (12, 24, 40) else f"x{self.depth}"
        return f"ViT-{size}/{self.patch_size}{depth}{reg}"

    def to_dict(self) -> dict:
        return asdict(self)


def parse_arch_name(name: str) -> dict:
    """``vit_small_patch16_224`` / ``vit_tiny`` / ``vit_small_p8`` -> timm kwargs (with defaults)."""
    m = re.match(r"^(vit_(?:tiny|small|base|large))(?:_patch(\d+))?(?:_p(\d+))?(?:_(\d+))?$", name)
    if not m:
        raise DinoevalError(f"unknown architecture {name!r}; use vit_tiny|vit_small|vit_base|"
                            "vit_large, optionally _patchP_SIZE (e.g. vit_small_patch16_224)")
    kw = dict(NAMED_ARCHS[m.group(1)])
    kw["patch_size"] = int(m.group(2) or m.group(3) or 16)
    kw["img_size"] = int(m.group(4) or 224)
    return kw


def heads_for(embed_dim: int, num_heads: int | None) -> int:
    """``num_heads`` when given (checked to divide the width), else the width table's."""
    heads = num_heads or HEADS_BY_WIDTH.get(embed_dim, max(1, embed_dim // 64))
    if embed_dim % heads:
        if num_heads:
            raise DinoevalError(f"--num-heads {heads} does not divide the width {embed_dim}; "
                                "pass a divisor of it")
        raise DinoevalError(f"width {embed_dim} is not divisible by {heads} heads; pass "
                            "--num-heads N (a divisor of the width)")
    return heads


def infer_arch(state: Mapping[str, torch.Tensor], *, num_heads: int | None = None) -> ViTArch:
    """Read the architecture off the shapes of a timm- or DINOv2-named ViT state dict."""
    for key in ("cls_token", "patch_embed.proj.weight", "pos_embed"):
        if key not in state:
            raise DinoevalError(f"not a ViT backbone: key {key!r} missing "
                                f"(found {sorted(state)[:6]}...)")
    embed_dim = int(state["cls_token"].shape[-1])
    proj = state["patch_embed.proj.weight"]
    patch = int(proj.shape[-1])
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    reg = 0
    for key in ("reg_token", "register_tokens"):
        if key in state:
            reg = int(state[key].shape[1])
    tokens = int(state["pos_embed"].shape[1])
    if _is_square(tokens - 1) and not _is_square(tokens):
        has_cls, grid = True, math.isqrt(tokens - 1)
    elif _is_square(tokens):
        has_cls, grid = False, math.isqrt(tokens)
    else:
        raise DinoevalError(f"cannot infer the patch grid from pos_embed with {tokens} tokens")
    mlp, hidden = "mlp", state.get("blocks.0.mlp.fc1.weight")
    if "blocks.0.mlp.w12.weight" in state:
        mlp, hidden = "swiglu", state["blocks.0.mlp.w12.weight"]
    # +0.5: timm takes int(dim * mlp_ratio), which must give the stored width exactly.
    mlp_ratio = (hidden.shape[0] + 0.5) / embed_dim if hidden is not None else 4.0
    return ViTArch(
        embed_dim=embed_dim, depth=depth, num_heads=heads_for(embed_dim, num_heads),
        patch_size=patch, img_size=(grid * patch, grid * patch), in_chans=int(proj.shape[1]),
        mlp_ratio=mlp_ratio, qkv_bias="blocks.0.attn.qkv.bias" in state, reg_tokens=reg,
        layer_scale="blocks.0.ls1.gamma" in state, pos_embed_has_cls=has_cls, mlp=mlp,
        act="silu" if mlp == "swiglu" else "gelu",
    )


def _is_square(n: int) -> bool:
    return n > 0 and math.isqrt(n) ** 2 == n


def interpolate_pos_embed(pos_1ND: torch.Tensor, old_grid: tuple[int, int],
                          new_grid: tuple[int, int], *, offset: float,
                          antialias: bool) -> torch.Tensor:
    """Resample a patch position table as the official DINO / DINOv2 models do.

    Args:
        pos_1ND: ``(1, G0*G1, D)`` patch position embeddings (no class entry), row-major.
        old_grid: ``(G0, G1)`` the table's grid.
        new_grid: ``(g0, g1)`` the input's patch grid (rows, columns).
        offset: ``> 0``: ``F.interpolate(scale_factor=((g0 + offset) / G0, (g1 + offset) / G1))``
            (DINO v1 and DINOv2 without registers: 0.1); ``0``: ``size=(g0, g1)`` (DINOv2 register
            models).
        antialias: passed to bicubic ``F.interpolate`` (only DINOv2 register models use it).

    Returns:
        ``(1, g0*g1, D)`` in the input's dtype (computed in float32, as DINOv2 does); the table
        itself when ``new_grid == old_grid``, as both official ``interpolate_pos_encoding`` do.
    """
    old, new = tuple(old_grid), tuple(new_grid)
    if new == old:
        return pos_1ND
    dim = pos_1ND.shape[-1]
    grid = pos_1ND.float().reshape(1, old[0], old[1], dim).permute(0, 3, 1, 2)
    if offset:
        kw: dict[str, Any] = {"scale_factor": ((new[0] + offset) / old[0],
                                               (new[1] + offset) / old[1])}
    else:
        kw = {"size": new}
    out = F.interpolate(grid, mode="bicubic", antialias=antialias, **kw)
    if tuple(out.shape[-2:]) != new:  # cannot happen for offset < 1; kept as a guard
        raise RuntimeError(f"position table resampled to {tuple(out.shape[-2:])}, not {new}")
    return out.permute(0, 2, 3, 1).reshape(1, -1, dim).to(pos_1ND.dtype)


class OfficialPosViT(VisionTransformer):
    """timm's ``VisionTransformer`` whose position table is resampled by an official rule
    (``pos_offset``, ``pos_antialias``: see :func:`interpolate_pos_embed`) at every forward."""

    pos_offset: float = 0.1
    pos_antialias: bool = False

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        x = x.reshape(B, H * W, C)
        prefix = 0 if self.no_embed_class else self.num_prefix_tokens
        pos = self.pos_embed
        patch_pos = interpolate_pos_embed(pos[:, prefix:], tuple(self.patch_embed.grid_size),
                                          (H, W), offset=self.pos_offset,
                                          antialias=self.pos_antialias)
        to_cat = [self.cls_token.expand(B, -1, -1)]
        if self.reg_token is not None:
            to_cat.append(self.reg_token.expand(B, -1, -1))
        if self.no_embed_class:
            x = torch.cat([*to_cat, x + patch_pos], dim=1)
        else:
            x = torch.cat([*to_cat, x], dim=1) + torch.cat([pos[:, :prefix], patch_pos], dim=1)
        return self.pos_drop(x)


def build_vit(arch: ViTArch, *, img_size: int | tuple[int, int] | None = None,
              pos_rule: tuple[float, bool] | None = None) -> VisionTransformer:
    """A timm ViT for ``arch`` with no classifier; any input size works at run time.

    ``pos_rule``: ``(offset, antialias)`` of an official resampling rule (the model is then built
    at the native size and resamples per input); ``None``: timm's own rule at ``img_size``.
    Register tokens use timm's ``no_embed_class`` layout; :func:`to_timm_layout` converts weights.
    """
    size = size_pair(img_size) if img_size is not None and pos_rule is None else arch.img_size
    from dinoeval.models.hf import activation_layer

    kw: dict[str, Any] = {"norm_layer": partial(nn.LayerNorm, eps=arch.norm_eps),
                          "act_layer": activation_layer(arch.act)}
    if arch.mlp == "swiglu":
        kw.update(mlp_layer=SwiGLUPacked, act_layer=nn.SiLU)
    cls = VisionTransformer if pos_rule is None else OfficialPosViT
    model = cls(
        img_size=size, patch_size=arch.patch_size, in_chans=arch.in_chans,
        num_classes=0, embed_dim=arch.embed_dim, depth=arch.depth, num_heads=arch.num_heads,
        mlp_ratio=arch.mlp_ratio, qkv_bias=arch.qkv_bias, reg_tokens=arch.reg_tokens,
        no_embed_class=arch.reg_tokens > 0 or not arch.pos_embed_has_cls,
        init_values=1e-5 if arch.layer_scale else None, dynamic_img_size=True,
        dynamic_img_pad=False, global_pool="token", **kw,
    )
    if pos_rule is not None:
        model.pos_offset, model.pos_antialias = pos_rule
    return model


def size_pair(x: int | tuple[int, int]) -> tuple[int, int]:
    """``N`` -> ``(N, N)``; ``(H, W)`` -> ``(H, W)`` as ints."""
    return (x, x) if isinstance(x, int) else (int(x[0]), int(x[1]))


def to_timm_layout(state: Mapping[str, torch.Tensor], arch: ViTArch,
                   img_size: int | tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
    """Convert DINOv2 names (``register_tokens``, SwiGLU ``w12``/``w3``), fold the class position
    into ``cls_token`` when timm keeps no class position (register models), and resample
    ``pos_embed`` to ``img_size`` with timm's rule (``None``: keep the native table)."""
    state = {k.replace(".mlp.w12.", ".mlp.fc1.").replace(".mlp.w3.", ".mlp.fc2."): v
             for k, v in state.items()}
    if "register_tokens" in state:
        state["reg_token"] = state.pop("register_tokens")
    state.pop("mask_token", None)
    pos = state["pos_embed"]
    no_embed_class = arch.reg_tokens > 0 or not arch.pos_embed_has_cls
    if arch.pos_embed_has_cls and no_embed_class:
        # DINOv2 adds pos[0] to the class token, registers get none: identical to this layout.
        state["cls_token"] = state["cls_token"] + pos[:, :1]
        pos = pos[:, 1:]
    prefix = 0 if no_embed_class else 1
    grid = (arch.img_size[0] // arch.patch_size, arch.img_size[1] // arch.patch_size)
    size = size_pair(img_size) if img_size is not None else arch.img_size
    new_grid = (size[0] // arch.patch_size, size[1] // arch.patch_size)
    if new_grid != grid:
        pos = resample_abs_pos_embed(pos, list(new_grid), list(grid), num_prefix_tokens=prefix)
    state["pos_embed"] = pos
    return state


def check_img_size(img_size: int | tuple[int, int] | None, patch: int, name: str) -> None:
    """``--img-size`` must be a positive multiple of the patch size."""
    if img_size is None:
        return
    sides = size_pair(img_size)
    if min(sides) < patch or any(s % patch for s in sides):
        near = [max(1, round(s / patch)) * patch for s in sides]
        given = "x".join(map(str, sides)) if sides[0] != sides[1] else str(sides[0])
        hint = "x".join(map(str, near)) if sides[0] != sides[1] else str(near[0])
        raise DinoevalError(f"--img-size {given} is not a multiple of the patch size "
                            f"{patch} of {name}; use e.g. {hint}")


def load_vit(state: Mapping[str, torch.Tensor], arch: ViTArch, *,
             img_size: int | tuple[int, int] | None = None,
             pos_rule: tuple[float, bool] | None = None) -> tuple[VisionTransformer, list[str]]:
    """Build the ViT and load ``state`` strictly: missing keys raise, unexpected ones are returned."""
    check_img_size(img_size, arch.patch_size, arch.name)
    model = build_vit(arch, img_size=img_size, pos_rule=pos_rule)
    converted = to_timm_layout(state, arch, img_size if pos_rule is None else None)
    expected = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} (model {tuple(expected[k].shape)})"
             for k, v in converted.items() if k in expected and v.shape != expected[k].shape]
    if wrong:
        raise DinoevalError(f"checkpoint tensors do not fit a {arch.name}: {'; '.join(wrong[:3])}"
                            f"{' ...' if len(wrong) > 3 else ''}; is it a ViT checkpoint of "
                            "this layout, or is --num-heads wrong?")
    result = model.load_state_dict(converted, strict=False)
    missing = [k for k in result.missing_keys]
    if missing:
        raise DinoevalError(f"checkpoint lacks {len(missing)} backbone keys: "
                            f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
    model.eval()
    return model, list(result.unexpected_keys)


class ViTAdapter(Adapter):
    """Tokens and attention of a timm ``VisionTransformer`` (pre-norm blocks, final ``norm``)."""

    def tokens(self, model: nn.Module, x: torch.Tensor, n_last: int) -> list[torch.Tensor]:
        depth = len(model.blocks)
        x = model.patch_embed(x)
        x = model._pos_embed(x)
        x = model.patch_drop(x)
        x = model.norm_pre(x)
        outs = []
        for i, blk in enumerate(model.blocks):
            x = blk(x)
            if i >= depth - n_last:
                outs.append(model.norm(x))
        return outs

    def cls_attention(self, model: nn.Module, x: torch.Tensor, block: int,
                      num_prefix_tokens: int) -> torch.Tensor:
        return explicit_cls_attention(model, x, block=block, num_prefix_tokens=num_prefix_tokens)


VIT_ADAPTER = ViTAdapter()
V1_RULE = (0.1, False)  # DINO v1 and DINOv2 without registers
REG_RULE = (0.0, True)  # DINOv2 with registers


def _has_vit_keys(state: Mapping[str, torch.Tensor]) -> bool:
    return "cls_token" in state and "patch_embed.proj.weight" in state and "pos_embed" in state


def _is_dinov2(state: Mapping[str, torch.Tensor], raw: RawCheckpoint) -> bool:
    return _has_vit_keys(state) and raw.format != "dinoeval-pretrain" and (
        "register_tokens" in state or "mask_token" in state or "blocks.0.ls1.gamma" in state
        or "blocks.0.mlp.w12.weight" in state)


def _build(state: dict[str, torch.Tensor], raw: RawCheckpoint, opts: BuildOptions,
           rule: tuple[float, bool] | None, eval_size: int | None = None) -> Built:
    arch = infer_arch(state, num_heads=opts.num_heads or heads_from_meta(raw.meta))
    notes = []
    if "hf-" in raw.format:  # what config.json states and the weights cannot
        eps = raw.meta.get("layer_norm_eps", arch.norm_eps)
        # transformers' DINOv2 SwiGLU is SiLU whatever hidden_act says
        act = raw.meta.get("hidden_act", arch.act) if arch.mlp == "mlp" else arch.act
        arch = replace(arch, norm_eps=eps, act=act)
        notes.append(f"from config.json: layer_norm_eps {eps:g}, hidden_act {act}")
    model, unexpected = load_vit(state, arch, pos_rule=rule)
    if unexpected:
        notes.append(f"unexpected keys ignored: {', '.join(unexpected[:10])}"
                     f"{' ...' if len(unexpected) > 10 else ''}")
    return Built(model=model, arch=arch, adapter=VIT_ADAPTER, notes=notes,
                 eval_size=(eval_size, eval_size) if eval_size else None)


def heads_from_meta(meta: Mapping[str, Any]) -> int | None:
    """Heads recorded by a training checkpoint (``num_heads``, or a ``vit_*`` ``arch`` name)."""
    if isinstance(meta.get("num_heads"), int):
        return meta["num_heads"]
    if isinstance(meta.get("num_heads"), str) and meta["num_heads"].isdigit():
        return int(meta["num_heads"])
    arch = meta.get("arch")
    if isinstance(arch, str) and arch.startswith("vit_"):
        try:
            return parse_arch_name(arch.split("_patch")[0])["num_heads"]
        except DinoevalError:
            return None
    return None


def _build_dinov2(state: dict[str, torch.Tensor], raw: RawCheckpoint,
                  opts: BuildOptions) -> Built:
    reg = "register_tokens" in state or "reg_token" in state
    return _build(state, raw, opts, REG_RULE if reg else V1_RULE, eval_size=224)


register_family(Family(
    name="dinov2",
    summary="DINOv2 ViT-S/B/L/g (LayerScale, mask_token; registers; SwiGLU w12/w3; chunked "
            "blocks; training checkpoints teacher.backbone.*)",
    matches=_is_dinov2,
    build=_build_dinov2,
    native="the position table's (518 px for the released models)",
    evaluation="224 px (the DINOv2 k-NN / linear protocol)",
    resampling="without registers: bicubic, scale_factor (g+0.1)/G, no anti-aliasing; with "
               "registers: bicubic to size, anti-aliased",
    order=20,
))

register_family(Family(
    name="dinoeval",
    summary="this project's pretrain checkpoints (checkpoint.pth with config, backbone.safetensors)",
    matches=lambda state, raw: _has_vit_keys(state) and raw.format == "dinoeval-pretrain",
    build=lambda state, raw, opts: _build(state, raw, opts, None),
    native="the position table's (the training crop)", evaluation="native",
    resampling="timm's resample_abs_pos_embed (bicubic, anti-aliased), as in training",
    order=10,
))

register_family(Family(
    name="dino",
    summary="DINO v1 ViT (official backbone or training checkpoint; any timm-named ViT)",
    matches=lambda state, raw: _has_vit_keys(state),
    build=lambda state, raw, opts: _build(state, raw, opts, V1_RULE),
    native="the position table's (224 px for the released models)", evaluation="native",
    resampling="bicubic, scale_factor (g+0.1)/G, no anti-aliasing",
    order=90,
))

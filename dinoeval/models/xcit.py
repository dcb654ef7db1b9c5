"""DINO XCiT backbones (El-Nouby et al. 2021, released by the official DINO repository), built
with timm's ``Xcit``.

Official layout (``facebookresearch/xcit``, ``xcit.py``): ``cls_token``,
``pos_embeder.token_projection`` (Fourier features), ``patch_embed.proj.{0,2,4[,6]}`` conv+BN
(2^n = patch size), blocks with ``attn.temperature (heads,1,1)``, ``local_mp`` (LPI), ``gamma1-3``,
then class-attention blocks ``cls_attn_blocks.*`` (``attn.qkv`` split into ``q``/``k``/``v`` by
timm's ``checkpoint_filter_fn``) and ``norm``. Any input size (Fourier position features).

Attention maps: the CLS row of the class-attention blocks' softmax over the patch keys
(:class:`XcitAdapter`); ``--block`` counts those blocks.

``tokens_norm`` is not stored in the weights: it is on for widths >= 384 (XCiT-S/M/L, the DINO
releases) and off for nano/tiny, as in timm's and the official model tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from torch import nn

from dinoeval.errors import DinoevalError
from dinoeval.models.dinov3 import load_strict
from dinoeval.models.registry import Adapter, Arch, BuildOptions, Built, Family, register_family

if TYPE_CHECKING:
    from dinoeval.models.checkpoints import RawCheckpoint

_SIZES = {128: "N", 192: "T", 384: "S", 512: "M", 768: "L"}


class XcitAdapter(Adapter):
    """CLS and patch tokens after the class-attention blocks and the final norm; CLS attention
    of the class-attention blocks.

    XCiT's own blocks attend across channels (cross-covariance), so they have no token-to-token
    map. Its last blocks (``cls_attn_blocks``, CaiT's class attention) attend from the class
    token to ``[CLS, patches]`` with a standard softmax: those rows are XCiT's token attention
    maps (for a ViT, DINO's ``visualize_attention.py`` shows the same row: the CLS query over
    the patch keys). ``depth``/``block`` count the class-attention blocks (2 in the released
    models; ``-1`` is the last).
    """

    max_blocks = 1

    def depth(self, model: nn.Module) -> int:
        return len(model.cls_attn_blocks)

    def tokens(self, model: nn.Module, x: torch.Tensor, n_last: int) -> list[torch.Tensor]:
        return [model.forward_features(x)]

    def cls_attention(self, model: nn.Module, x: torch.Tensor, block: int,
                      num_prefix_tokens: int) -> torch.Tensor:
        """``(B, heads, H // p, W // p)``: the softmax of ``q_cls . k / sqrt(d_head)`` of
        class-attention block ``block`` over all keys, the patch keys kept (the CLS key's
        share is left out, so a row sums to ``1 - a_cls``)."""
        blocks = model.cls_attn_blocks
        if not -len(blocks) <= block < len(blocks):
            raise DinoevalError(f"--block {block} out of range: XCiT has {len(blocks)} "
                                f"class-attention blocks (0..{len(blocks) - 1}, -1 the last)")
        with torch.no_grad():
            tokens, grid = _class_attention_input(model, x, block % len(blocks))
            ca = blocks[block % len(blocks)]
            attn = ca.attn
            h = ca.norm1(tokens)
            b, n, c = h.shape
            heads = attn.num_heads
            q = attn.q(h[:, 0]).reshape(b, heads, 1, c // heads)
            k = attn.k(h).reshape(b, n, heads, c // heads).transpose(1, 2)
            weights = ((q @ k.transpose(-2, -1)) * (c // heads) ** -0.5).softmax(dim=-1)
        rows = weights[:, :, 0, num_prefix_tokens:].float()
        return rows.reshape(b, heads, *grid)


def _class_attention_input(model: nn.Module, x: torch.Tensor,
                           index: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """``[CLS, patches]`` entering class-attention block ``index``, and the patch grid."""
    b = x.shape[0]
    x, (hp, wp) = model.patch_embed(x)
    if model.pos_embed is not None:
        x = x + model.pos_embed(b, hp, wp).reshape(b, -1, x.shape[1]).permute(0, 2, 1)
    x = model.pos_drop(x)
    for blk in model.blocks:
        x = blk(x, hp, wp)
    x = torch.cat((model.cls_token.expand(b, -1, -1), x), dim=1)
    for blk in model.cls_attn_blocks[:index]:
        x = blk(x)
    return x, (hp, wp)


XCIT_ADAPTER = XcitAdapter()


def xcit_arch(model: nn.Module) -> Arch:
    dim, depth = model.embed_dim, len(model.blocks)
    p = int(model.patch_embed.patch_size)
    name = f"XCiT-{_SIZES.get(dim, f'd{dim}')}{depth}/{p}"
    return Arch(name=name, embed_dim=dim, depth=depth, patch_size=p, img_size=(224, 224),
                num_heads=int(model.blocks[0].attn.num_heads),
                in_chans=int(model.patch_embed.proj[0][0].in_channels))


def _build_xcit(state: dict[str, torch.Tensor], raw: RawCheckpoint, opts: BuildOptions) -> Built:
    from timm.models.xcit import Xcit, checkpoint_filter_fn

    dim = int(state["cls_token"].shape[-1])
    convs = sorted({int(k.split(".")[2]) for k in state if k.startswith("patch_embed.proj.")
                    and k.endswith(".0.weight")})
    first = state["patch_embed.proj.0.0.weight"]
    model = Xcit(
        img_size=224, patch_size=2 ** len(convs), in_chans=int(first.shape[1]), num_classes=0,
        embed_dim=dim, depth=1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks.")),
        num_heads=opts.num_heads or int(state["blocks.0.attn.temperature"].shape[0]),
        mlp_ratio=(state["blocks.0.mlp.fc1.weight"].shape[0] + 0.5) / dim,
        qkv_bias="blocks.0.attn.qkv.bias" in state,
        cls_attn_layers=1 + max(int(k.split(".")[1]) for k in state
                                if k.startswith("cls_attn_blocks.")),
        use_pos_embed=any(k.startswith(("pos_embeder.", "pos_embed.")) for k in state),
        tokens_norm=dim >= 384,
    ).eval()
    conv = checkpoint_filter_fn(dict(state), model)
    load_strict(model, {k: v for k, v in conv.items() if not k.startswith("head.")}, "XCiT")
    return Built(model=model, arch=xcit_arch(model), adapter=XCIT_ADAPTER)


def is_xcit(state: Mapping[str, torch.Tensor]) -> bool:
    return "cls_token" in state and any(k.startswith("cls_attn_blocks.") for k in state) and \
        "blocks.0.attn.temperature" in state


register_family(Family(
    name="xcit",
    summary="DINO XCiT (official xcit layout; timm Xcit)",
    matches=lambda state, raw: is_xcit(state),
    build=_build_xcit,
    native="224 px (any size: Fourier position features)", evaluation="native (224 px)",
    resampling="none: Fourier features computed for the input's patch grid",
    order=30,
))

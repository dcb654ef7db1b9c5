"""``timm:NAME`` backbones: timm's own ViT, DINOv3 (``vit_*_patch16_dinov3``, Eva) and XCiT
models, random init (or a state-dict file read by family detection with ``weights=FILE``)."""

from __future__ import annotations

from pathlib import Path

import torch

from dinoeval.errors import DinoevalError
from dinoeval.models.backbone import Backbone, backbone_from_raw
from dinoeval.models.checkpoints import read_checkpoint
from dinoeval.models.registry import Built
from dinoeval.models.vit import check_img_size, infer_arch, load_vit, size_pair


def timm_backbone(spec: str, name: str, weights: str | Path | None,
                  img_size: int | tuple[int, int] | None, num_heads: int | None,
                  seed: int) -> Backbone:
    """The timm model ``name`` (see the module docstring)."""
    import timm
    from timm.models.eva import Eva
    from timm.models.vision_transformer import VisionTransformer
    from timm.models.xcit import Xcit

    if not timm.is_model(name):
        raise DinoevalError(f"timm has no model {name!r}; see timm.list_models('vit_*')")
    if weights is not None:
        raw = read_checkpoint(weights)
        bb = backbone_from_raw(spec, raw, img_size=img_size, num_heads=num_heads)
        bb.meta["timm_name"] = name
        return bb
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        kw = {"global_pool": "token"} if "dinov3" in name else {}
        ref = timm.create_model(name, pretrained=False, num_classes=0, **kw).eval()
    hash_ = f"timm-{name}-random-seed{seed}"
    meta = {"format": "timm-random", "timm_name": name}
    if type(ref) is VisionTransformer:
        state = ref.state_dict()
        arch = infer_arch(state, num_heads=num_heads or getattr(ref.blocks[0].attn, "num_heads",
                                                                 None))
        model, _ = load_vit(state, arch, img_size=img_size)
        size = size_pair(img_size) if img_size else arch.img_size
        return Backbone(spec=spec, kind="vit", model=model, arch=arch, name=arch.name,
                        content_hash=hash_, img_size=size, meta=meta)
    if isinstance(ref, Eva) and "dinov3" in name:
        from dinoeval.models.dinov3 import _SIZES, EVA_ADAPTER, eva_arch

        size_name = _SIZES.get(ref.embed_dim, f"d{ref.embed_dim}")
        built = Built(ref, eva_arch(ref, f"ViT-{size_name}/16-dinov3"), EVA_ADAPTER,
                      eval_size=(224, 224))
        family = "dinov3"
    elif isinstance(ref, Xcit):
        from dinoeval.models.xcit import XCIT_ADAPTER, xcit_arch

        built, family = Built(ref, xcit_arch(ref), XCIT_ADAPTER), "xcit"
    else:
        raise DinoevalError(f"timm:{name} is a {type(ref).__name__}; timm:NAME reads ViTs "
                            "(vit_*), DINOv3 (vit_*_patch16_dinov3) and XCiT (xcit_*)")
    check_img_size(img_size, built.arch.patch_size, built.arch.name)
    size = size_pair(img_size) if img_size else built.eval_size or built.arch.img_size
    return Backbone(spec=spec, kind="vit", model=built.model, arch=built.arch,
                    name=built.arch.name, content_hash=hash_, img_size=size, meta=meta,
                    family=family, adapter=built.adapter)

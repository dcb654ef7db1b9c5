"""What a checkpoint holds, for ``dinoeval inspect``: one JSON-ready dict."""

from __future__ import annotations

from typing import Any

from dinoeval.models.backbone import backbone_from_raw
from dinoeval.models.checkpoints import read_checkpoint, resolve_path
from dinoeval.models.registry import get_family


def describe_checkpoint(path: str, *, checkpoint_key: str = "teacher",
                        num_heads: int | None = None) -> dict[str, Any]:
    """Read ``path`` (file or folder) and describe it.

    Returns:
        ``family``, ``format``, ``architecture``, ``parameters`` (backbone), ``embed_dim``,
        ``depth``, ``num_heads``, ``patch_size``, ``in_chans``, ``native_resolution`` (``[H, W]`` px of
        the position table, ``None`` without one) with ``native`` (the rule in words),
        ``evaluation_resolution`` (``[H, W]`` px), ``resampling`` (the family's rule, words),
        ``prefix_tokens`` (registers / storage tokens after the class token), ``networks``
        (of a training checkpoint), ``network_read``, ``head`` (``None`` or its sizes),
        ``center`` (its shape or ``None``), ``epoch``, ``iteration``, ``notes`` (keys ignored,
        conversions), ``file`` and ``content_hash``.

    Raises:
        DinoevalError: the file cannot be read or no family recognises it.
    """
    file = resolve_path(path)
    raw = read_checkpoint(file, checkpoint_key=checkpoint_key)
    bb = backbone_from_raw(str(path), raw, num_heads=num_heads)
    fam = get_family(bb.family)
    arch = bb.arch
    head = None
    if bb.head is not None:
        mlp = [m for m in bb.head.mlp if hasattr(m, "weight") and m.weight.ndim == 2]
        head = {"layers": len(mlp), "bottleneck": int(mlp[-1].weight.shape[0]),
                "prototypes": int(bb.head.last_layer.weight_v.shape[0])}
    extra = int(getattr(arch, "reg_tokens", 0))
    storage = bb.family == "dinov3"
    return {
        "file": str(file), "content_hash": bb.content_hash,
        "family": bb.family, "family_summary": fam.summary, "format": raw.format,
        "architecture": bb.name,
        "parameters": int(sum(p.numel() for p in bb.model.parameters())) if bb.model else 0,
        "embed_dim": int(arch.embed_dim), "depth": int(arch.depth),
        "num_heads": int(getattr(arch, "num_heads", 0)), "patch_size": int(arch.patch_size),
        "in_chans": bb.in_chans,
        "native_resolution": list(arch.img_size) if not fam.native.startswith("any") else None,
        "native": fam.native, "evaluation_resolution": list(bb.img_size),
        "resampling": fam.resampling,
        "register_tokens": 0 if storage else extra, "storage_tokens": extra if storage else 0,
        "networks": raw.meta.get("networks", []),
        "network_read": checkpoint_key if raw.meta.get("networks") else None,
        "head": head,
        "center": list(bb.center.shape) if bb.center is not None else None,
        "epoch": raw.meta.get("epoch"), "iteration": raw.meta.get("iteration"),
        "notes": list(bb.notes),
    }

"""What a feature depends on, read from the objects that make it (never from CLI options).

:func:`network_identity` describes the network that was actually built: its class, architecture,
every scalar setting of the model object (prefix tokens, pooling, dynamic image size, ...), the
heads of every attention module, its structure and a hash of every weight and buffer, which
covers the network picked from a training checkpoint (teacher or student), interpolated
position embeddings and anything else loaded into it. :func:`~dinoeval.features.extract.
feature_meta` puts it, with the source fingerprint, the transform, the feature kind, the
precision and the code version, under ``meta["key"]``; the cache key hashes exactly that.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import torch
from torch import nn

_SCALARS = (bool, int, float, str)


def weights_hash(model: nn.Module) -> str:
    """16 hex digits over every parameter and buffer of ``model`` (names, dtypes, shapes and
    bytes, in state-dict order)."""
    h = hashlib.blake2b(digest_size=8)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            t = t.detach()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
            if t.numel():
                h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _settings(model: nn.Module) -> dict[str, Any]:
    """Public scalar (or tuple-of-scalar) attributes of the model object itself."""
    out: dict[str, Any] = {}
    for k, v in sorted(vars(model).items()):
        if k.startswith("_") or k == "training":
            continue
        if isinstance(v, _SCALARS) or (isinstance(v, tuple)
                                       and all(isinstance(x, _SCALARS) for x in v)):
            out[k] = list(v) if isinstance(v, tuple) else v
    return out


def _arch(arch: object) -> Any:
    if arch is None:
        return None
    if dataclasses.is_dataclass(arch) and not isinstance(arch, type):
        return json.loads(json.dumps(dataclasses.asdict(arch), default=str))
    return repr(arch)


def network_identity(backbone: Any) -> dict[str, Any]:
    """Everything about ``backbone``'s built network that its features depend on.

    Args:
        backbone: a :class:`~dinoeval.models.Backbone` (``pixels`` has no network: its identity
            is its input size and normalisation).

    Returns:
        A JSON-able dict; computed once per backbone (kept in ``backbone.meta``). Hashing the
        weights reads every tensor once (~0.1 s per 100 MB).
    """
    base = {"kind": backbone.kind,
            "img_size": list(backbone.img_size) if backbone.img_size else None,
            "mean": list(backbone.mean), "std": list(backbone.std)}
    model = backbone.model
    if model is None:
        return base
    cached = backbone.meta.get("network_identity")
    if cached is not None:
        return cached
    heads = {n: int(m.num_heads) for n, m in model.named_modules()
             if isinstance(getattr(m, "num_heads", None), int)}
    ident = {
        **base,
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "arch": _arch(backbone.arch),
        "num_prefix_tokens": backbone.num_prefix_tokens,
        "settings": _settings(model),
        "heads": hashlib.blake2b(json.dumps(heads, sort_keys=True).encode(),
                                 digest_size=8).hexdigest(),
        "structure": hashlib.blake2b(repr(model).encode(), digest_size=8).hexdigest(),
        "weights": weights_hash(model),
    }
    backbone.meta["network_identity"] = ident
    return ident

"""Batched feature extraction: a backbone over a source -> a :class:`FeatureSet`.

Feature kinds (``FEATURE_KINDS``):

* ``cls``: CLS token after the final norm (the DINO k-NN default), ``(N, D)``;
* ``cls-last4``: CLS of the last 4 blocks, each after the final norm, concatenated ``(N, 4D)``
  (DINO's ``get_intermediate_layers`` linear-eval features for ViT-S);
* ``cls+avgpool``: last-block CLS and mean patch token, DINOv1's interleaved order
  ``[c0, a0, c1, a1, ...]`` ``(N, 2D)``;
* ``cls+avgpool-v2``: the same two vectors concatenated ``[cls, avg]`` (DINOv2's order);
* ``patch``: patch tokens after the final norm, ``(N, T, D)`` (prefix/register tokens removed);
* ``cls+gem``: last-block CLS and the GeM (p = 4) of its patch tokens concatenated ``(N, 2D)``
  (DINO's copy-detection feature, :func:`dinoeval.features.pooling.gem`).

``pixels`` backbones give the raw image as ``[0, 1]`` floats, flattened, whatever the kind (one
channel for grayscale sources).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dinoeval.data._base import ImageSource
from dinoeval.data.builtin import BadImageError
from dinoeval.errors import DinoevalError
from dinoeval.features.cache import FeatureCache
from dinoeval.features.featureset import FeatureSet
from dinoeval.features.transforms import EvalTransform, default_crop_ratio, to_float_nchw
from dinoeval.models.backbone import Backbone

log = logging.getLogger(__name__)

FEATURE_KINDS = ("cls", "cls-last4", "cls+avgpool", "cls+avgpool-v2", "patch", "cls+gem")
FEATURE_CODE_VERSION = "4"  # 2: gray pixels 1 channel; 3: torchvision resize; 4: pos rules


def make_transform(backbone: Backbone, source: ImageSource,
                   crop_ratio: float | None = None, keep_aspect: str = ""
                   ) -> EvalTransform | None:
    """The eval transform for this backbone on this source (``None`` for native-size pixels).

    ``keep_aspect`` (``long``/``short``, ViTs only): aspect-preserving resize of that side to
    the backbone's input side, cut to whole patches (:func:`~dinoeval.features.transforms.
    resize_keep_aspect`)."""
    size = backbone.img_size
    if keep_aspect:
        if backbone.kind == "pixels" or size is None or size[0] != size[1]:
            raise DinoevalError("an aspect-preserving resize needs a ViT with a square input "
                                f"side; {backbone.spec} has {size or 'none'}")
        return EvalTransform(size=size, crop_ratio=1.0, mean=backbone.mean, std=backbone.std,
                             keep_aspect=keep_aspect, multiple=backbone.patch_size)
    if backbone.kind == "pixels":
        if size is None:
            if source.native_size is None:
                raise DinoevalError(f"pixels on {source.spec}: images differ in size; "
                                    "pass --pixel-size N")
            return None
        return EvalTransform(size=size, crop_ratio=crop_ratio or default_crop_ratio(
            source.native_size), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    assert size is not None
    return EvalTransform(size=size, crop_ratio=crop_ratio or default_crop_ratio(source.native_size),
                         mean=backbone.mean, std=backbone.std)


@torch.inference_mode()
def forward_features(backbone: Backbone, x_BCHW: torch.Tensor, kind: str, *,
                     grayscale: bool = False) -> torch.Tensor:
    """Features of a normalised batch: ``(B, D')`` (or ``(B, T, D)`` for ``patch``).

    ``grayscale``: the batch is a one-channel image repeated to RGB; ``pixels`` then keep one
    channel (``H*W`` dims, as in the published pixel baselines, not ``3*H*W`` copies).
    """
    if backbone.kind == "pixels":
        return (x_BCHW[:, :1] if grayscale else x_BCHW).flatten(1)
    n_last = 4 if kind == "cls-last4" else 1
    outs = backbone.tokens(x_BCHW, n_last)
    last = outs[-1]
    npre = backbone.num_prefix_tokens
    if kind == "cls":
        return last[:, 0]
    if kind == "cls-last4":
        return torch.cat([o[:, 0] for o in outs], dim=-1)
    if kind == "cls+avgpool":
        return torch.stack([last[:, 0], last[:, npre:].mean(1)], dim=-1).flatten(1)
    if kind == "cls+avgpool-v2":
        return torch.cat([last[:, 0], last[:, npre:].mean(1)], dim=-1)
    if kind == "patch":
        return last[:, npre:]
    if kind == "cls+gem":
        from dinoeval.features.pooling import gem

        return torch.cat([last[:, 0], gem(last[:, npre:], p=4.0)], dim=-1)
    raise DinoevalError(f"unknown feature kind {kind!r}; use one of {', '.join(FEATURE_KINDS)}")


def _array_batches(source: ImageSource, batch_size: int
                   ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    arr = source.array()
    assert arr is not None
    for start in range(0, len(source), batch_size):
        idx = np.arange(start, min(start + batch_size, len(source)))
        yield arr[start : idx[-1] + 1], idx, np.ones(len(idx), dtype=bool)


class _LoaderDataset(torch.utils.data.Dataset):
    def __init__(self, source: ImageSource, transform: EvalTransform | None):
        self.source, self.transform = source, transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, bool, str, str]:
        """``(image, index, ok, bad path, reason)``: a bad image comes back as a blank with
        ``ok`` false (raised in the main process, so a worker never turns it into a traceback)."""
        try:
            img = self.source.load(i)
            ok, path, reason = True, "", ""
        except BadImageError as err:
            img, ok, path, reason = np.zeros((8, 8, 3), dtype=np.uint8), False, err.path, err.reason
        x = to_float_nchw(img[None]) if self.transform is None else self.transform(img[None])
        if not ok or self.transform is None:
            size = self.transform.size if self.transform else self.source.native_size
            if not ok and size is not None:
                x = torch.zeros(1, 3, *size)
        return x[0], i, ok, path, reason


def iterate_batches(source: ImageSource, transform: EvalTransform | None, *, batch_size: int,
                    num_workers: int = 0, skip_bad_images: bool = False
                    ) -> Iterator[tuple[torch.Tensor, np.ndarray, np.ndarray]]:
    """Yield ``(x (B,3,H,W) float32, source indices (B,), ok mask (B,))`` in source order."""
    if source.array() is not None:
        for imgs, idx, ok in _array_batches(source, batch_size):
            x = to_float_nchw(imgs) if transform is None else transform(imgs)
            yield x, idx, ok
        return
    ds = _LoaderDataset(source, transform)
    if transform is not None and transform.keep_aspect:
        yield from _shape_batches(ds, batch_size, num_workers, skip_bad_images)
        return
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=num_workers,
                                         shuffle=False, persistent_workers=False)
    for x, idx, ok, bad_path, reason in loader:
        ok = ok.numpy().astype(bool)
        if not skip_bad_images and not ok.all():
            j = int(np.flatnonzero(~ok)[0])
            raise BadImageError(bad_path[j], reason[j])
        yield x, idx.numpy().astype(np.int64), ok


def _shape_batches(ds: _LoaderDataset, batch_size: int, num_workers: int,
                   skip_bad_images: bool) -> Iterator[tuple[torch.Tensor, np.ndarray, np.ndarray]]:
    """Batches of images of one shape (an aspect-preserving transform gives images of many):
    images are read in order and held per shape until ``batch_size`` of them are there; what
    is left goes at the end. Batches come out of source order (their indices say where)."""
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=num_workers,
                                         shuffle=False, persistent_workers=False)
    held: dict[tuple[int, ...], list[tuple[torch.Tensor, int, bool]]] = {}

    def batch(items: list[tuple[torch.Tensor, int, bool]]):
        return (torch.stack([t for t, _, _ in items]),
                np.array([i for _, i, _ in items], np.int64),
                np.array([ok for _, _, ok in items], bool))

    for x, i, ok, bad_path, reason in loader:
        if not ok and not skip_bad_images:
            raise BadImageError(bad_path, reason)
        items = held.setdefault(tuple(x.shape), [])
        items.append((x, int(i), bool(ok)))
        if len(items) == batch_size:
            yield batch(held.pop(tuple(x.shape)))
    for items in held.values():
        yield batch(items)


def extract_features(
    backbone: Backbone,
    source: ImageSource,
    *,
    kind: str = "cls",
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    skip_bad_images: bool = False,
    precision: str = "fp32",
    crop_ratio: float | None = None,
    keep_aspect: str = "",
    cache_dir: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> FeatureSet:
    """Extract ``kind`` features of every image of ``source`` (see the module docstring).

    Args:
        batch_size: images per forward pass.
        device: where the model runs (the model is moved there).
        num_workers: DataLoader workers for file-backed sources (in-memory ones need none).
        skip_bad_images: skip undecodable images and count them (``meta["skipped"]``) instead of
            failing on the first one.
        precision: ``fp32`` or ``bf16`` (autocast; the default on CUDA is still fp32).
        keep_aspect: ``long``/``short``: keep each image's aspect ratio (that side resized to
            the backbone's input side, cut to whole patches; see :func:`make_transform`);
            images of one shape are batched together. ``""``: the square eval transform.
        cache_dir: reuse/store features there (see :mod:`dinoeval.features.cache`).
        progress: called with the number of images done after each batch.
    """
    if kind not in FEATURE_KINDS:
        raise DinoevalError(f"unknown feature kind {kind!r}; use one of {', '.join(FEATURE_KINDS)}")
    if len(source) == 0:
        raise DinoevalError(f"data source {source.spec} has no images")
    transform = make_transform(backbone, source, crop_ratio, keep_aspect)
    meta = feature_meta(backbone, source, kind, transform, precision)
    if cache_dir is not None:
        cache = FeatureCache(cache_dir)
        hit = cache.get(meta)
        if hit is not None:
            if progress:
                progress(len(source))
            return hit
    t0 = time.perf_counter()
    device = torch.device(device)
    backbone.to(device)
    chunks: list[np.ndarray] = []
    kept: list[np.ndarray] = []
    done = 0
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    for x, idx, ok in iterate_batches(source, transform, batch_size=batch_size,
                                      num_workers=num_workers, skip_bad_images=skip_bad_images):
        with autocast:
            f = forward_features(backbone, x.to(device, non_blocking=True), kind,
                                 grayscale=source.grayscale)
        f = f.float().cpu().numpy()
        chunks.append(f[ok])
        kept.append(idx[ok])
        done += len(idx)
        if progress:
            progress(done)
    indices = np.concatenate(kept)
    features = np.concatenate(chunks).astype(np.float32, copy=False)
    if (np.diff(indices) < 0).any():  # batches grouped by image shape: back to source order
        order = np.argsort(indices, kind="stable")
        indices, features = indices[order], features[order]
    if not np.isfinite(features).all():
        bad = int((~np.isfinite(features.reshape(len(features), -1))).any(1).sum())
        raise DinoevalError(f"{backbone.spec} produced NaN/inf features for {bad} images of "
                            f"{source.spec}; check the checkpoint (try --precision fp32)")
    meta["skipped"] = int(len(source) - len(indices))
    meta["seconds"] = time.perf_counter() - t0
    if meta["skipped"]:
        log.warning("skipped %d unreadable images of %s", meta["skipped"], source.spec)
    fs = FeatureSet(features=features, labels=source.labels[indices].copy(), indices=indices,
                    meta=meta)
    if cache_dir is not None:
        cache.try_put(fs)  # a full disk: logged, the features in hand are still used
    return fs


def feature_meta(backbone: Backbone, source: ImageSource, kind: str,
                 transform: EvalTransform | None, precision: str) -> dict[str, Any]:
    """Facts about features of ``backbone`` on ``source``.

    ``meta["key"]`` holds everything the features depend on, read from the objects that make
    them: the built network (:func:`~dinoeval.features.identity.network_identity`: weights hash,
    architecture, heads, input size, ...), the source fingerprint (images, labels, order), the
    transform, the feature kind, the precision and the code version; the cache key is a hash of
    exactly ``meta["key"]``. The other entries describe the features for people and tables.
    """
    from dinoeval.features.identity import network_identity

    return {
        "key": {
            "network": network_identity(backbone),
            "source_fingerprint": source.fingerprint(),
            "num_images": len(source),
            "kind": "pixels" if backbone.kind == "pixels" else kind,
            "grayscale": bool(source.grayscale) if backbone.kind == "pixels" else None,
            "transform": transform.key() if transform else "native",
            "precision": precision,
            "code_version": FEATURE_CODE_VERSION,
        },
        "backbone": backbone.spec,
        "ckpt_hash": backbone.content_hash,
        "network": str(backbone.meta.get("network", "")),
        "network_hash": network_identity(backbone).get("weights"),
        "arch": backbone.name,
        "img_size": list(backbone.img_size) if backbone.img_size else None,
        "source": source.spec,
        "dataset": source.name,
        "split": source.split,
        "source_fingerprint": source.fingerprint(),
        "num_images": len(source),
        "kind": "pixels" if backbone.kind == "pixels" else kind,
        "transform": transform.key() if transform else "native",
        "precision": precision,
        "code_version": FEATURE_CODE_VERSION,
    }


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise L2 normalisation of ``(N, D)`` float32 (a copy)."""
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return F.normalize(t, dim=1, eps=eps).numpy()

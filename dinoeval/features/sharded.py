"""Sharded feature extraction under ``torchrun`` (``torch.distributed``), merged into a normal cache.

Each of ``W`` ranks extracts one exact, contiguous shard of the source (no padded duplicates, unlike
``DistributedSampler``) and writes it atomically into ``<cache root>/<key>.shards/RRRRR-of-WWWWW/``
(temporary directory + rename; ``meta.json`` written last). When every shard is present, rank 0 (or
:func:`merge_shards`, callable without ``torchrun``) streams them into the ordinary
:class:`~dinoeval.features.cache.FeatureCache` entry, again atomically, and removes the shards.
A rank that dies therefore leaves no entry that looks complete, and a rerun extracts only the
shards that are missing.

Shard boundaries are multiples of ``batch_size``: every forward pass then sees exactly the batch
that single-process :func:`~dinoeval.features.extract.extract_features` would have fed it, so the
merged features are bit-identical to single-process extraction (a different batch composition can
change the last bits of a CPU matmul).
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dinoeval._io import atomic_dir, clean_stale_tmp
from dinoeval.data._base import ImageSource
from dinoeval.errors import DinoevalError
from dinoeval.features.cache import _KEY_FIELDS, FeatureCache, cache_key
from dinoeval.features.extract import (
    FEATURE_KINDS,
    feature_meta,
    forward_features,
    iterate_batches,
    make_transform,
)
from dinoeval.features.featureset import FeatureSet
from dinoeval.models.backbone import Backbone

log = logging.getLogger(__name__)

_COPY_ROWS = 65536  # rows copied per step while merging, so merging never holds a whole shard


def shard_bounds(n: int, rank: int, world_size: int, batch_size: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of shard ``rank`` of ``world_size``: whole batches, split evenly.

    Shards are disjoint, contiguous and cover ``[0, n)`` exactly; a shard may be empty when there
    are fewer batches than ranks.
    """
    if not 0 <= rank < world_size:
        raise DinoevalError(f"rank {rank} is outside world size {world_size}")
    if batch_size < 1:
        raise DinoevalError(f"batch size must be >= 1, got {batch_size}")
    n_batches = -(-n // batch_size)
    b0 = n_batches * rank // world_size
    b1 = n_batches * (rank + 1) // world_size
    return min(b0 * batch_size, n), min(b1 * batch_size, n)


def shard_name(rank: int, world_size: int) -> str:
    return f"{rank:05d}-of-{world_size:05d}"


def shards_dir(cache_dir: str | Path, meta: dict[str, Any]) -> Path:
    """``<cache root>/<key>.shards``: where the shards of the entry for ``meta`` live."""
    return Path(cache_dir) / f"{cache_key(meta)}.shards"


class _ShardSource(ImageSource):
    """Rows ``[start, stop)`` of another source, indexed from 0."""

    def __init__(self, base: ImageSource, start: int, stop: int) -> None:
        self.base, self.start, self.stop = base, start, stop
        self.labels = base.labels[start:stop]
        self.spec, self.name, self.split = base.spec, base.name, base.split
        self.classes, self.grayscale = base.classes, base.grayscale
        self.native_size = base.native_size

    def load(self, index: int) -> np.ndarray:
        return self.base.load(self.start + index)

    def array(self) -> np.ndarray | None:
        arr = self.base.array()
        return None if arr is None else arr[self.start : self.stop]

    def fingerprint(self) -> str:
        return f"{self.base.fingerprint()}[{self.start}:{self.stop}]"


def _read_meta(d: Path) -> dict[str, Any] | None:
    try:
        return json.loads((d / "meta.json").read_text())
    except (OSError, ValueError):
        return None


def _shard_ok(d: Path, meta: dict[str, Any], shard: dict[str, int]) -> bool:
    stored = _read_meta(d)
    if stored is None or not stored.get("complete"):
        return False
    if any(stored.get(k) != meta.get(k) for k in _KEY_FIELDS) or stored.get("shard") != shard:
        return False
    n = shard["stop"] - shard["start"]
    try:
        lengths = {len(np.load(d / f, mmap_mode="r")) for f in
                   ("features.npy", "labels.npy", "indices.npy")}
    except (OSError, ValueError):
        return False
    return len(lengths) == 1 and lengths.pop() <= n  # fewer rows only when bad images were skipped


def extract_shard(
    backbone: Backbone,
    source: ImageSource,
    *,
    cache_dir: str | Path,
    rank: int,
    world_size: int,
    kind: str = "cls",
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    skip_bad_images: bool = False,
    precision: str = "fp32",
    crop_ratio: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[Path, bool]:
    """Extract shard ``rank`` of ``world_size`` into the shard directory unless it is already there.

    Returns:
        the shard directory and whether it was computed now (False: reused).
    """
    if kind not in FEATURE_KINDS:
        raise DinoevalError(f"unknown feature kind {kind!r}; use one of {', '.join(FEATURE_KINDS)}")
    if len(source) == 0:
        raise DinoevalError(f"data source {source.spec} has no images")
    transform = make_transform(backbone, source, crop_ratio)
    meta = feature_meta(backbone, source, kind, transform, precision)
    start, stop = shard_bounds(len(source), rank, world_size, batch_size)
    shard = {"rank": rank, "world_size": world_size, "start": start, "stop": stop,
             "batch_size": batch_size}
    root = shards_dir(cache_dir, meta)
    final = root / shard_name(rank, world_size)
    if _shard_ok(final, meta, shard):
        log.info("shard %s already extracted", final)
        if progress:
            progress(stop - start)
        return final, False
    t0 = time.perf_counter()
    device = torch.device(device)
    backbone.to(device)
    part = _ShardSource(source, start, stop)
    chunks: list[np.ndarray] = []
    kept: list[np.ndarray] = []
    done = 0
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    if stop > start:
        for x, idx, ok in iterate_batches(part, transform, batch_size=batch_size,
                                          num_workers=num_workers, skip_bad_images=skip_bad_images):
            with autocast:
                f = forward_features(backbone, x.to(device, non_blocking=True), kind,
                                     grayscale=source.grayscale)
            chunks.append(f.float().cpu().numpy()[ok])
            kept.append(idx[ok] + start)
            done += len(idx)
            if progress:
                progress(done)
    # An empty shard (fewer batches than ranks) stores (0, 0); merging takes the shape elsewhere.
    features = (np.concatenate(chunks) if chunks else np.zeros((0, 0))).astype(np.float32)
    indices = np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)
    if not np.isfinite(features).all():
        raise DinoevalError(f"{backbone.spec} produced NaN/inf features on shard {rank} of "
                            f"{source.spec}; check the checkpoint (try --precision fp32)")
    shard_meta = {**meta, "shard": shard, "skipped": int(stop - start - len(indices)),
                  "seconds": time.perf_counter() - t0, "complete": True}

    def write(tmp: Path) -> None:
        np.save(tmp / "features.npy", features)
        np.save(tmp / "labels.npy", source.labels[indices].astype(np.int64))
        np.save(tmp / "indices.npy", indices.astype(np.int64))
        (tmp / "meta.json").write_text(json.dumps(shard_meta, indent=1, default=str))

    clean_stale_tmp(root)
    atomic_dir(final, write)
    return final, True


def missing_shards(cache_dir: str | Path, meta: dict[str, Any], world_size: int) -> list[int]:
    """Ranks whose shard is absent or incomplete (any complete shard with matching key counts)."""
    root = shards_dir(cache_dir, meta)
    missing = []
    for r in range(world_size):
        stored = _read_meta(root / shard_name(r, world_size))
        if (stored is None or not stored.get("complete")
                or any(stored.get(k) != meta.get(k) for k in _KEY_FIELDS)):
            missing.append(r)
    return missing


def merge_shards(cache_dir: str | Path, meta: dict[str, Any], world_size: int, *,
                 keep_shards: bool = False) -> Path:
    """Assemble the complete shards of ``meta`` into the normal cache entry (atomically).

    Features are copied shard by shard through memory maps, so merging a bank larger than memory
    works. Raises :class:`DinoevalError` naming the missing shards when some are absent.

    Returns:
        the cache entry directory (read it with ``FeatureCache(cache_dir).get(meta)``).
    """
    missing = missing_shards(cache_dir, meta, world_size)
    root = shards_dir(cache_dir, meta)
    if missing:
        raise DinoevalError(f"{len(missing)} of {world_size} shards missing in {root} (ranks "
                            f"{missing[:8]}); rerun extract-sharded with the same settings")
    dirs = [root / shard_name(r, world_size) for r in range(world_size)]
    metas = [_read_meta(d) or {} for d in dirs]
    ranges = [(m["shard"]["start"], m["shard"]["stop"]) for m in metas]
    n = int(meta.get("num_images", ranges[-1][1]))
    if ranges[0][0] != 0 or ranges[-1][1] != n or any(
            a[1] != b[0] for a, b in itertools.pairwise(ranges)):
        raise DinoevalError(f"shards in {root} do not tile [0, {n}) ({ranges}); delete {root} "
                            "and rerun extract-sharded")
    feats = [np.load(d / "features.npy", mmap_mode="r") for d in dirs]
    total = sum(len(f) for f in feats)
    shape = next((f.shape[1:] for f in feats if len(f)), feats[0].shape[1:])
    merged = {k: v for k, v in metas[0].items() if k not in ("shard", "complete")}
    merged["skipped"] = int(sum(m.get("skipped", 0) for m in metas))
    merged["seconds"] = float(sum(m.get("seconds", 0.0) for m in metas))
    merged["sharded"] = {"world_size": world_size, "batch_size": metas[0]["shard"]["batch_size"]}

    def write(tmp: Path) -> None:
        out = np.lib.format.open_memmap(tmp / "features.npy", mode="w+", dtype=np.float32,
                                        shape=(total, *shape))
        row = 0
        for f in feats:
            for s in range(0, len(f), _COPY_ROWS):
                block = f[s : s + _COPY_ROWS]
                out[row : row + len(block)] = block
                row += len(block)
        out.flush()
        del out
        np.save(tmp / "labels.npy", np.concatenate([np.load(d / "labels.npy") for d in dirs]))
        np.save(tmp / "indices.npy", np.concatenate([np.load(d / "indices.npy") for d in dirs]))
        (tmp / "meta.json").write_text(json.dumps({**merged, "complete": True}, indent=1,
                                                  default=str))

    cache = FeatureCache(cache_dir)
    clean_stale_tmp(cache.root)
    final = atomic_dir(cache.path(meta), write)
    if not keep_shards:
        shutil.rmtree(root, ignore_errors=True)
    return final


def _dist_context(rank: int | None, world_size: int | None) -> tuple[int, int, bool]:
    import torch.distributed as dist

    on = dist.is_available() and dist.is_initialized()
    if rank is None:
        rank = dist.get_rank() if on else 0
    if world_size is None:
        world_size = dist.get_world_size() if on else 1
    return rank, world_size, on


def extract_sharded(
    backbone: Backbone,
    source: ImageSource,
    *,
    cache_dir: str | Path,
    rank: int | None = None,
    world_size: int | None = None,
    kind: str = "cls",
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    skip_bad_images: bool = False,
    precision: str = "fp32",
    crop_ratio: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> FeatureSet | None:
    """Extract this rank's shard, then (rank 0) merge when every shard is present.

    Under an initialised ``torch.distributed`` process group, ``rank``/``world_size`` default to
    the group's and all ranks return the merged :class:`FeatureSet`. Without one, pass them to
    extract one shard by hand; the call that completes the set merges it; the others return None.
    """
    rank, world_size, on = _dist_context(rank, world_size)
    transform = make_transform(backbone, source, crop_ratio)
    meta = feature_meta(backbone, source, kind, transform, precision)
    cache = FeatureCache(cache_dir)
    hit = cache.get(meta)
    if hit is not None:
        return hit
    extract_shard(backbone, source, cache_dir=cache_dir, rank=rank, world_size=world_size,
                  kind=kind, batch_size=batch_size, device=device, num_workers=num_workers,
                  skip_bad_images=skip_bad_images, precision=precision, crop_ratio=crop_ratio,
                  progress=progress)
    if on:
        import torch.distributed as dist

        dist.barrier()
        err = None
        if rank == 0:
            try:
                merge_shards(cache_dir, meta, world_size)
            except Exception as e:  # every rank must hear about it, or the others would hang
                err = str(e) if isinstance(e, DinoevalError) else f"merging shards failed: {e!r}"
        box = [err]
        dist.broadcast_object_list(box, src=0)
        if box[0] is not None:
            raise DinoevalError(box[0])
        return cache.get(meta)
    if missing_shards(cache_dir, meta, world_size):
        return None
    merge_shards(cache_dir, meta, world_size)
    return cache.get(meta)

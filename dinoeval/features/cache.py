"""On-disk feature cache: one directory per key, written atomically, memory-mapped on read.

The key hashes everything the features depend on (:func:`~dinoeval.features.extract.feature_meta`):
checkpoint content hash, source fingerprint, transform, kind, precision and code version. An entry
is written into a temporary directory and renamed into place, so a crash leaves no entry that
looks complete; ``meta.json`` is written last and re-checked on read, so a stale or partial entry
is never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dinoeval.features.featureset import FeatureSet

log = logging.getLogger(__name__)

_KEY_FIELDS = ("ckpt_hash", "img_size", "source_fingerprint", "num_images", "kind", "transform",
               "precision", "code_version")


def cache_key(meta: dict[str, Any]) -> str:
    """16 hex digits identifying features with these ``meta`` facts."""
    blob = json.dumps({k: meta.get(k) for k in _KEY_FIELDS}, sort_keys=True)
    return hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()


class FeatureCache:
    """A directory of cached :class:`FeatureSet` entries."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, meta: dict[str, Any]) -> Path:
        return self.root / cache_key(meta)

    def get(self, meta: dict[str, Any]) -> FeatureSet | None:
        """The cached entry for ``meta`` (memory-mapped), or None when absent/stale/partial."""
        d = self.path(meta)
        meta_file = d / "meta.json"
        if not meta_file.exists():
            return None
        try:
            stored = json.loads(meta_file.read_text())
            if any(stored.get(k) != meta.get(k) for k in _KEY_FIELDS) or not stored.get("complete"):
                log.info("cache entry %s is stale; recomputing", d)
                return None
            feats = np.load(d / "features.npy", mmap_mode="r")
            labels = np.load(d / "labels.npy")
            indices = np.load(d / "indices.npy")
        except (OSError, ValueError, json.JSONDecodeError) as err:
            log.warning("cache entry %s unreadable (%s); recomputing", d, err)
            return None
        if len(feats) != len(labels) or len(labels) != len(indices):
            return None
        log.info("features from cache %s", d)
        return FeatureSet(features=feats, labels=labels, indices=indices,
                          meta={**stored, "cached": True})

    def put(self, fs: FeatureSet) -> Path:
        """Store ``fs`` atomically (temp directory + rename); returns the entry path."""

        def write(tmp: Path) -> None:
            np.save(tmp / "features.npy", np.ascontiguousarray(fs.features))
            np.save(tmp / "labels.npy", fs.labels)
            np.save(tmp / "indices.npy", fs.indices)
            # meta.json last: its presence (with "complete") marks a readable entry
            (tmp / "meta.json").write_text(json.dumps({**fs.meta, "complete": True}, indent=1,
                                                      default=str))

        return atomic_dir(self.root, self.path(fs.meta), write)


def atomic_dir(parent: Path, final: Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` in a temporary directory under ``parent``, then rename it to ``final``.

    A crash leaves only a ``.tmp-*`` directory, never a ``final`` that looks complete.
    """
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=".tmp-"))
    try:
        write(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final

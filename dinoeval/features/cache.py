"""On-disk feature cache: one directory per key, written atomically, memory-mapped on read.

The key hashes everything the features depend on, ``meta["key"]`` of
:func:`~dinoeval.features.extract.feature_meta`: the built network (weights hash, architecture,
heads, input size), source fingerprint, transform, kind, precision and code version. An entry
is written into a temporary directory and renamed into place (:func:`dinoeval._io.atomic_dir`),
so a crash leaves no entry that looks complete; ``meta.json`` is written last and re-checked on
read, and any entry that cannot be read is recomputed, so a stale, partial or damaged entry is
never used. Entries get the umask's modes, so colleagues can share one cache folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from dinoeval._io import DiskFullError, atomic_dir, clean_stale_tmp
from dinoeval.features.featureset import FeatureSet

log = logging.getLogger(__name__)

# Everything the features depend on is in meta["key"] (see feature_meta): hash all of it.
_KEY_FIELDS = ("key",)


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
        """The cached entry for ``meta`` (memory-mapped), or None when absent, stale or damaged.

        Any entry that cannot be read completely (a zero-byte or truncated ``.npy``, bad JSON,
        arrays of mismatched lengths) counts as absent, so the caller recomputes and
        :meth:`put` replaces it.
        """
        d = self.path(meta)
        meta_file = d / "meta.json"
        if not meta_file.exists():
            return None
        try:
            stored = json.loads(meta_file.read_text())
            if not isinstance(stored, dict) or any(
                    stored.get(k) != meta.get(k) for k in _KEY_FIELDS) or not stored.get("complete"):
                log.info("cache entry %s is stale; recomputing", d)
                return None
            # copy-on-write: writable for numpy/torch (no "array is not writable" warnings),
            # while the file itself is never modified
            feats = np.load(d / "features.npy", mmap_mode="c")
            labels = np.load(d / "labels.npy")
            indices = np.load(d / "indices.npy")
        except Exception as err:  # numpy raises EOFError, ValueError, OSError, ... for damage
            log.warning("cache entry %s unreadable (%s: %s); recomputing", d, type(err).__name__,
                        err)
            return None
        if feats.ndim != 2 or not len(feats) == len(labels) == len(indices):
            log.warning("cache entry %s has arrays of mismatched shapes; recomputing", d)
            return None
        log.info("features from cache %s", d)
        return FeatureSet(features=feats, labels=labels, indices=indices,
                          meta={**stored, "cached": True})

    def put(self, fs: FeatureSet) -> Path:
        """Store ``fs`` atomically (see :func:`dinoeval._io.atomic_dir`); returns the entry path.

        Leftover ``.tmp-*`` folders of writers that were killed are removed first (never those of
        a live writer). Raises :class:`~dinoeval._io.DiskFullError` on a full disk.
        """
        clean_stale_tmp(self.root)

        def write(tmp: Path) -> None:
            np.save(tmp / "features.npy", np.ascontiguousarray(fs.features))
            np.save(tmp / "labels.npy", fs.labels)
            np.save(tmp / "indices.npy", fs.indices)
            # meta.json last: its presence (with "complete") marks a readable entry
            (tmp / "meta.json").write_text(json.dumps({**fs.meta, "complete": True}, indent=1,
                                                      default=str))

        return atomic_dir(self.path(fs.meta), write)

    def try_put(self, fs: FeatureSet) -> Path | None:
        """:meth:`put`, except that a full disk is logged (the features are still usable from
        memory) and ``None`` returned: the cache is optional, the evaluation goes on."""
        try:
            return self.put(fs)
        except DiskFullError as err:
            log.warning("%s; continuing without caching these features", err)
            return None

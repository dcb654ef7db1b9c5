"""The features of one backbone on one source: what extraction and the cache hand around."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class FeatureSet:
    """Features of one backbone on one source.

    Attributes:
        features: ``(N, D)`` float32 (``(N, T, D)`` for ``patch``), possibly memory-mapped.
        labels: ``(N,)`` int64, ``-1`` where unlabelled.
        indices: ``(N,)`` int64 source indices kept (bad images skipped are absent).
        meta: backbone, source, kind and transform facts.
    """

    features: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def dim(self) -> int:
        return int(np.prod(self.features.shape[1:]))

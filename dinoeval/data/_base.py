"""The image-source protocol every dataset implements.

A source is an indexable, deterministic collection of ``(image, label)`` pairs with
optional ground-truth object masks. Images are ``(H, W, 3) uint8`` RGB arrays.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SourceInfo:
    """What a source says about itself (used in result tables and cache keys)."""

    spec: str
    name: str
    split: str
    num_images: int
    classes: tuple[str, ...]
    native_size: tuple[int, int] | None  # (H, W) when every image has the same size
    grayscale: bool
    has_masks: bool


class ImageSource(ABC):
    """Abstract image source. Subclasses fill ``spec``, ``name``, ``split``, ``classes``, ``labels``.

    ``labels`` is an ``(N,) int64`` array, ``-1`` where an image has no label.
    """

    spec: str
    name: str
    split: str = "all"
    classes: tuple[str, ...] = ()
    labels: np.ndarray
    grayscale: bool = False
    native_size: tuple[int, int] | None = None
    skipped: int = 0  # images dropped by --skip-bad-images, reported by runners

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @abstractmethod
    def load(self, index: int) -> np.ndarray:
        """Image ``index`` as an ``(H, W, 3) uint8`` RGB array."""

    def mask(self, index: int) -> np.ndarray | None:
        """Ground-truth foreground mask ``(H, W) bool`` of image ``index``, or None."""
        return None

    @property
    def has_masks(self) -> bool:
        return False

    def array(self) -> np.ndarray | None:
        """All images as one ``(N, H, W)`` or ``(N, H, W, 3)`` uint8 array, when held in memory.

        In-memory sources return it so extraction can transform whole batches as tensors.
        """
        return None

    @abstractmethod
    def fingerprint(self) -> str:
        """A short hash that changes whenever the images, labels or order change."""

    def origin(self) -> tuple[str, np.ndarray]:
        """``(fingerprint of the whole collection these images come from, (N,) int64 indices
        into it)``: two sources overlap when the fingerprints are equal and the indices meet
        (see :func:`dinoeval.data.check_disjoint`). Subsets keep their parent's origin."""
        return self.fingerprint(), np.arange(len(self), dtype=np.int64)

    def info(self) -> SourceInfo:
        return SourceInfo(
            spec=self.spec,
            name=self.name,
            split=self.split,
            num_images=len(self),
            classes=tuple(self.classes),
            native_size=self.native_size,
            grayscale=self.grayscale,
            has_masks=self.has_masks,
        )


class ArraySource(ImageSource):
    """A source held in memory as a uint8 array; the base of the built-in datasets."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        *,
        spec: str,
        name: str,
        split: str,
        classes: tuple[str, ...],
        masks: np.ndarray | None = None,
    ) -> None:
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise ValueError(f"{spec}: images must be (N,H,W[,3]) uint8, got {images.dtype} "
                             f"{images.shape}")
        if len(images) != len(labels):
            raise ValueError(f"{spec}: {len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.masks = masks
        self.spec, self.name, self.split, self.classes = spec, name, split, classes
        self.grayscale = images.ndim == 3
        self.native_size = (int(images.shape[1]), int(images.shape[2]))
        self._fingerprint: str | None = None
        self._origin: tuple[str, np.ndarray] | None = None

    def load(self, index: int) -> np.ndarray:
        img = self.images[index]
        return np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img

    def mask(self, index: int) -> np.ndarray | None:
        return None if self.masks is None else self.masks[index].astype(bool)

    @property
    def has_masks(self) -> bool:
        return self.masks is not None

    def array(self) -> np.ndarray:
        return self.images

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            h = hashlib.blake2b(digest_size=8)
            h.update(str(self.images.shape).encode())
            h.update(np.ascontiguousarray(self.images).data)
            h.update(self.labels.tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def origin(self) -> tuple[str, np.ndarray]:
        return self._origin if self._origin is not None else super().origin()

    def subset(self, indices: np.ndarray) -> ArraySource:
        """A new source holding ``indices`` (deterministic subsets for tests and demos); its
        :meth:`origin` is this source's, so overlapping subsets are recognised."""
        idx = np.asarray(indices)
        sub = ArraySource(
            self.images[idx], self.labels[idx], spec=f"{self.spec}[{len(idx)}]", name=self.name,
            split=self.split, classes=self.classes,
            masks=None if self.masks is None else self.masks[idx],
        )
        fp, parent = self.origin()
        sub._origin = (fp, parent[idx])
        return sub

"""Images with semantic masks for the dense evaluations.

Specs (:func:`get_segmentation_source`):

* ``shapes[:train|test][@...]`` (any :mod:`dinoeval.data.shapes` spec, ``[:N]`` subsets too):
  class ``0`` is the background and the object's pixels are ``1 + its shape class``;
* ``vocfolder:ROOT[@split=train]``: the Pascal-VOC segmentation layout,
  ``ROOT/JPEGImages/<id>.jpg``, ``ROOT/SegmentationClass/<id>.png`` (palette PNGs of class
  indices, 255 = ignore) and the ids in ``ROOT/ImageSets/Segmentation/<split>.txt``; the class
  count is 21 (VOC) unless ``@classes=N`` says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dinoeval.data.builtin import read_rgb
from dinoeval.errors import DinoevalError

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


@dataclass
class MaskedImages:
    """Images and their ``(H, W)`` class-index masks (255 = ignore).

    Attributes:
        spec, name, split: what the user typed, the dataset's name, the split.
        size: the number of images.
        load: ``i -> (H, W, 3) uint8``.
        mask: ``i -> (H, W)`` integer class indices.
        class_names: ``C`` names, index 0 the background.
        native_size: ``(H, W)`` when every image has it, else ``None``.
    """

    spec: str
    name: str
    split: str
    size: int
    load: Callable[[int], np.ndarray]
    mask: Callable[[int], np.ndarray]
    class_names: tuple[str, ...]
    native_size: tuple[int, int] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _shapes(spec: str) -> MaskedImages:
    from dinoeval.data.registry import get_source

    src = get_source(spec)
    if not src.has_masks:
        raise DinoevalError(f"{spec} has no masks")
    labels = np.asarray(src.labels)

    def mask(i: int) -> np.ndarray:
        m = src.mask(i)
        assert m is not None
        return np.where(m, int(labels[i]) + 1, 0).astype(np.int64)

    return MaskedImages(spec=src.spec, name=src.name, split=src.split, size=len(src),
                        load=src.load, mask=mask,
                        class_names=("background", *src.classes),
                        native_size=src.native_size)


def vocfolder(root: str | Path, *, split: str = "train", classes: int | None = None
              ) -> MaskedImages:
    """The VOC segmentation layout under ``root`` (see the module docstring).

    Raises:
        DinoevalError: a missing list, image or mask (checked here, before any work).
    """
    from dinoeval.data.video import read_label_png

    root = Path(root)
    listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not listing.is_file():
        raise DinoevalError(f"vocfolder: no id list {listing}; pass vocfolder:ROOT with ROOT "
                            "holding JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/")
    ids = [ln.strip() for ln in listing.read_text().splitlines() if ln.strip()]
    if not ids:
        raise DinoevalError(f"vocfolder: {listing} lists no images")
    images = [root / "JPEGImages" / f"{i}.jpg" for i in ids]
    masks = [root / "SegmentationClass" / f"{i}.png" for i in ids]
    for kind, paths in (("image", images), ("mask", masks)):
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise DinoevalError(f"vocfolder: {len(missing)} listed {kind}s missing, first "
                                f"{missing[0]}")
    names = VOC_CLASSES if classes is None else tuple(
        VOC_CLASSES[c] if classes == len(VOC_CLASSES) else str(c) for c in range(classes))
    return MaskedImages(spec=f"vocfolder:{root}@split={split}", name=root.name or "voc",
                        split=split, size=len(ids), load=lambda i: read_rgb(images[i]),
                        mask=lambda i: read_label_png(masks[i]).astype(np.int64),
                        class_names=names)


def get_segmentation_source(spec: str) -> MaskedImages:
    """Build the masked image set named by ``spec`` (see the module docstring).

    Raises:
        DinoevalError: an unknown name or bad options.
    """
    spec = spec.strip()
    if spec.startswith("shapes"):
        return _shapes(spec)
    if spec.startswith("vocfolder:"):
        rest = spec[len("vocfolder:"):]
        path, _, opts = rest.rpartition("@") if "@" in rest else (rest, "", "")
        kw: dict[str, str] = {}
        for item in filter(None, (s.strip() for s in opts.split(","))):
            key, eq, value = item.partition("=")
            if not eq or key not in ("split", "classes"):
                raise DinoevalError(f"vocfolder: bad option {item!r}; use split=NAME,classes=N")
            kw[key] = value
        try:
            classes = int(kw["classes"]) if "classes" in kw else None
        except ValueError:
            raise DinoevalError(f"vocfolder: classes needs an int, got {kw['classes']!r}") from None
        if classes is not None and classes < 2:
            raise DinoevalError(f"vocfolder: classes must be >= 2, got {classes}")
        return vocfolder(path, split=kw.get("split", "train"), classes=classes)
    raise DinoevalError(f"dense evaluation needs a source with masks: shapes:... or "
                        f"vocfolder:ROOT, got {spec!r}")

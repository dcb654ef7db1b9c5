"""Features for retrieval and copy detection: one vector per image, at the input handling the
official scripts use.

How an image meets the input side ``s`` (``--resize``, :data:`RESIZE_MODES`):

* ``long`` — the aspect ratio is kept and the longer side becomes ``s`` (DINO's
  ``eval_image_retrieval.py``: ``img.thumbnail((imsize, imsize))`` at ``--imsize 224``, one image
  per batch; the revisited Oxford/Paris protocol likewise resizes the longer side). The shorter
  side is rounded to the nearest pixel and cut down to whole patches, the rows/columns DINO's
  stride-``p`` patch embedding never sees. DINO's ``thumbnail`` only ever shrinks; here images
  smaller than ``s`` are enlarged too, so that every image is seen at one scale.
* ``short`` — the aspect ratio is kept and the shorter side becomes ``s`` (then cut to patches).
* ``square`` — the whole image is resized to ``s x s`` (DINO's ``eval_copy_detection.py``:
  ``Resize((imsize, imsize))``).

Images of different shapes are batched by shape (:func:`dinoeval.features.extract.
extract_features`); a ViT resamples its position table to each shape's patch grid. Raw
``pixels`` are always resized to a square (``--pixel-size``): their vectors must have one length.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from dinoeval.data._base import ImageSource
from dinoeval.errors import DinoevalError
from dinoeval.features import FeatureSet, extract_features
from dinoeval.features.pooling import average_then_normalize, multiscale_sizes
from dinoeval.models import Backbone
from dinoeval.pipeline.setup import ExtractOptions, ProgressFactory

RESIZE_MODES = ("long", "short", "square")


class SquareSource(ImageSource):
    """``base`` with every image resized, whole, to ``size x size`` (bicubic)."""

    def __init__(self, base: ImageSource, size: int) -> None:
        self.base, self.size = base, size
        self.spec = f"{base.spec}|square{size}"
        self.name, self.split, self.classes = base.name, base.split, base.classes
        self.labels, self.grayscale = base.labels, base.grayscale
        self.native_size = (size, size)

    def load(self, index: int) -> np.ndarray:
        from PIL import Image

        img = Image.fromarray(self.base.load(index))
        return np.asarray(img.resize((self.size, self.size), Image.Resampling.BICUBIC))

    def fingerprint(self) -> str:
        return hashlib.blake2b(f"{self.base.fingerprint()}|square{self.size}".encode(),
                               digest_size=8).hexdigest()


def _square(source: ImageSource, size: int | None) -> ImageSource:
    """Whole images at ``size`` (sources already square at any size are left alone: the eval
    transform resizes square images whole)."""
    ns = source.native_size
    if size is None or (ns is not None and ns[0] == ns[1]):
        return source
    return SquareSource(source, size)


def features_at(backbone: Backbone, source: ImageSource, kind: str, opts: ExtractOptions,
                progress: ProgressFactory | None, resize: str = "square") -> FeatureSet:
    """``kind`` features of ``source`` at the backbone's input side, each image resized as
    ``resize`` says (see the module docstring; pixels: always ``square``)."""
    if resize not in RESIZE_MODES:
        raise DinoevalError(f"--resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")
    keep = resize if resize != "square" and backbone.kind != "pixels" else ""
    side = backbone.img_size[0] if backbone.img_size else None
    src = source if keep else _square(source, side)
    cb = progress(f"{backbone.name} on {source.spec}", len(src)) if progress else None
    return extract_features(backbone, src, kind=kind, batch_size=opts.batch_size,
                            device=opts.device, num_workers=opts.num_workers,
                            skip_bad_images=opts.skip_bad_images, precision=opts.precision,
                            crop_ratio=1.0, keep_aspect=keep, cache_dir=opts.cache_dir,
                            progress=cb)


def feature_label(backbone: Backbone, resize: str, multiscale: bool = False) -> str:
    """The ``feature`` column of retrieval rows: ``cls@224 long`` (``... multiscale``); rows
    with different input handling never share a label. Pixels: ``pixels``."""
    if backbone.kind == "pixels":
        return "pixels"
    side = backbone.img_size[0] if backbone.img_size else None
    return f"cls@{side} {resize}" + (" multiscale" if multiscale else "")


def retrieval_features(backbone: Backbone, sources: list[ImageSource], eopts: ExtractOptions,
                       multiscale: bool, progress: ProgressFactory | None, *,
                       resize: str = "long", rescale: Callable[[int], Backbone] | None = None
                       ) -> tuple[list[FeatureSet], str]:
    """CLS features of each source (multi-scale when asked) and the feature label for tables.

    Multi-scale (DINO's ``utils.multi_scale``): the CLS of input sides ``s``, ``s/sqrt(2)`` and
    ``s/2`` (rounded to whole patches, :func:`~dinoeval.features.pooling.multiscale_sizes`),
    averaged, then L2-normalised. ``rescale(side)``: the same network at input ``side``
    (default: :func:`rescaled`, the network in hand with its position table resampled per
    input)."""
    label = feature_label(backbone, resize, multiscale)
    if backbone.kind == "pixels":
        if multiscale:
            raise DinoevalError("--multiscale needs a ViT backbone; pixels have no scales "
                                "(drop --multiscale or the pixels --ckpt)")
        return [features_at(backbone, s, "cls", eopts, progress) for s in sources], label
    side = backbone.img_size[0] if backbone.img_size else None
    if side is None:
        raise DinoevalError(f"{backbone.spec} has no input size; pass --img-size")
    if not multiscale:
        return [features_at(backbone, s, "cls", eopts, progress, resize) for s in sources], label
    sizes = multiscale_sizes(side, backbone.patch_size)
    rescale = rescale or (lambda sz: rescaled(backbone, sz))
    scaled = [backbone] + [rescale(sz) for sz in sizes[1:]]
    out = []
    for s in sources:
        fss = [features_at(b, s, "cls", eopts, progress, resize) for b in scaled]
        kept = fss[0].indices
        for f in fss[1:]:
            if not np.array_equal(f.indices, kept):
                raise DinoevalError(f"{s.spec}: a different set of images was readable at "
                                    "each scale; fix the unreadable files")
        out.append(FeatureSet(features=average_then_normalize([f.features for f in fss]),
                              labels=fss[0].labels, indices=kept,
                              meta={**fss[0].meta, "multiscale": list(sizes)}))
    return out, label


def rescaled(backbone: Backbone, side: int) -> Backbone:
    """``backbone`` fed ``side x side`` inputs (ViTs resample their position table per input);
    its identity is recomputed (the cached one names the old size)."""
    meta = {k: v for k, v in backbone.meta.items() if k != "network_identity"}
    return replace(backbone, img_size=(side, side), meta=meta)

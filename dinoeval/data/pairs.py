"""Checks and alignment of the data an evaluation reads, made before any image is decoded.

* Class identity is the class *name*: :func:`match_classes` maps the labels of an evaluation
  (val/test) split onto the train split's classes, so ``train/{cat,dog,fox}`` against
  ``val/{cat,fox}`` scores ``fox`` as ``fox`` (each folder numbers its own classes);
* :func:`require_labels` refuses unlabelled data (a flat image folder) where labels are needed;
* :func:`check_disjoint` refuses a val split that shares images with the train split (the same
  source, or seeded subsets of one source, e.g. ``fashion-mnist:train[:2000]`` and
  ``fashion-mnist:train[:500]``): k-NN would find every such image itself;
* :func:`check_train_val` runs the three, in that order, for the train/val commands.

Every failure is a one-line :class:`~dinoeval.errors.DinoevalError` naming the sources and the
classes (names, never indices).
"""

from __future__ import annotations

import hashlib

import numpy as np

from dinoeval.data._base import ImageSource
from dinoeval.errors import DinoevalError


def class_names(source: ImageSource) -> tuple[str, ...]:
    """The names of ``source``'s classes, label ``i`` -> ``names[i]``; a labelled source that
    gives no names gets ``"0", "1", ...``."""
    if source.classes:
        return tuple(source.classes)
    top = int(source.labels.max()) if len(source.labels) else -1
    return tuple(str(i) for i in range(top + 1))


def _few(names: list[str] | tuple[str, ...], n: int = 8) -> str:
    shown = ", ".join(names[:n])
    return shown + (f", ... ({len(names)} in all)" if len(names) > n else "")


def require_labels(source: ImageSource, what: str) -> ImageSource:
    """``source`` when every image has a label, else ``needs labels: ...``.

    Args:
        what: the evaluation, e.g. ``"k-NN"`` (it starts the message).
    """
    missing = int((source.labels < 0).sum())
    if missing:
        kind = ("a folder of unlabelled images" if missing == len(source)
                else f"{missing:,} of its {len(source):,} images have no label")
        raise DinoevalError(f"needs labels: {what} needs a class for every image, and "
                            f"{source.spec} is {kind}; use a labelled source (imagefolder: with "
                            "one sub-folder per class)")
    return source


def check_disjoint(train: ImageSource, val: ImageSource) -> None:
    """Refuse a ``val`` that shares images with ``train`` (same origin, meeting indices)."""
    fp_t, idx_t = train.origin()
    fp_v, idx_v = val.origin()
    if fp_t != fp_v:
        return
    shared = int(np.isin(idx_v, idx_t).sum())
    if shared:
        raise DinoevalError(
            f"--val {val.spec} overlaps --train {train.spec}: {shared:,} of its {len(val):,} "
            "images are also train images (k-NN would find each one itself); evaluate on a "
            "disjoint split, e.g. NAME:train against NAME:test")


class RelabelledSource(ImageSource):
    """``base`` with its labels mapped onto another class list (see :func:`match_classes`);
    images, masks and order are ``base``'s."""

    def __init__(self, base: ImageSource, labels: np.ndarray, classes: tuple[str, ...]) -> None:
        self.base, self.labels, self.classes = base, labels, classes
        self.spec, self.name, self.split = base.spec, base.name, base.split
        self.grayscale, self.skipped = base.grayscale, base.skipped

    @property
    def native_size(self) -> tuple[int, int] | None:  # type: ignore[override]
        return self.base.native_size

    def load(self, index: int) -> np.ndarray:
        return self.base.load(index)

    def mask(self, index: int) -> np.ndarray | None:
        return self.base.mask(index)

    @property
    def has_masks(self) -> bool:
        return self.base.has_masks

    def array(self) -> np.ndarray | None:
        return self.base.array()

    def origin(self) -> tuple[str, np.ndarray]:
        return self.base.origin()

    def fingerprint(self) -> str:
        # the labels are part of what a feature cache stores: new labels, new fingerprint
        return hashlib.blake2b(self.base.fingerprint().encode() + self.labels.tobytes(),
                               digest_size=8).hexdigest()


def match_classes(train: ImageSource, val: ImageSource, *, what: str = "this evaluation"
                  ) -> ImageSource:
    """``val`` with its labels renumbered to ``train``'s classes, matched by name.

    Classes of ``train`` that ``val`` lacks are fine; a ``val`` class with images that is not a
    ``train`` class, or whose train folder holds no image, is an error naming those classes and
    both sources. Unlabelled ``val`` images keep ``-1``.

    Returns:
        ``val`` itself when the numbering already agrees, else a :class:`RelabelledSource`
        whose ``classes`` are ``train``'s.
    """
    tnames, vnames = class_names(train), class_names(val)
    present = [vnames[c] for c in np.unique(val.labels[val.labels >= 0])]
    index = {name: i for i, name in enumerate(tnames)}
    unknown = [c for c in present if c not in index]
    if unknown:
        raise DinoevalError(
            f"{what}: class{'es' if len(unknown) > 1 else ''} {_few(unknown)} of --val "
            f"{val.spec} {'are' if len(unknown) > 1 else 'is'} not among the classes of --train "
            f"{train.spec} ({_few(tnames)}); classes are matched by name")
    counts = np.bincount(train.labels[train.labels >= 0], minlength=len(tnames))
    empty = [c for c in present if counts[index[c]] == 0]
    if empty:
        raise DinoevalError(
            f"{what}: --val class{'es' if len(empty) > 1 else ''} {_few(empty)} "
            f"{'have' if len(empty) > 1 else 'has'} no images in --train {train.spec}; add "
            "train images of them or drop them from --val")
    if tuple(val.classes) == tuple(train.classes):
        return val
    lut = np.array([index.get(n, -1) for n in vnames] + [-1], dtype=np.int64)
    labels = np.where(val.labels >= 0, lut[val.labels], -1)
    return RelabelledSource(val, labels, tnames)


def check_train_val(train: ImageSource, val: ImageSource, what: str) -> ImageSource:
    """Labels on both, no shared images, val classes matched to train's by name: the val source
    to evaluate (see :func:`match_classes`). Call it before any backbone runs."""
    require_labels(train, what)
    require_labels(val, what)
    check_disjoint(train, val)
    return match_classes(train, val, what=what)

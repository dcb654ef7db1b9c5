"""What every runner shares: from a backbone spec and a data spec to features and a context.

``BackboneOptions`` + ``ExtractOptions`` describe how to get features; :func:`get_features`
resolves a backbone and a source into a cached :class:`FeatureSet`; :func:`context_for` names the
rows a runner writes; :class:`Run` is what every ``run_*`` returns (a results table,
:mod:`dinoeval.results`, plus the typed results and notes); :func:`save_config` records the
resolved options beside a results file. (dinov2's ``eval/setup.py`` plays this role.)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dinoeval.checks import at_least, check_device, one_of, option, parse_img_size
from dinoeval.data import ImageSource, get_source
from dinoeval.errors import DinoevalError
from dinoeval.features import FEATURE_KINDS, FeatureCache, FeatureSet, extract_features
from dinoeval.models import Backbone, load_backbone
from dinoeval.results import Context, resolution_text

ProgressFactory = Callable[[str, int], Callable[[int], None]]
"""``factory(description, total) -> update(done)``: how a runner reports progress."""


TRAINING_FORMATS = ("dino-train", "dinoeval-pretrain", "dinov2-train")
"""Checkpoint formats holding both a teacher and a student (see ``--checkpoint-key``)."""


@dataclass(frozen=True, kw_only=True)
class BackboneOptions:
    """How to turn a spec into a backbone (see :func:`dinoeval.models.load_backbone`)."""

    checkpoint_key: str = option(
        "teacher", help="Which network of a DINO training checkpoint: teacher or student.")
    weights: str | None = option(None, help="State-dict file for a timm:NAME backbone.")
    img_size: int | tuple[int, int] | None = option(
        None, help="Model input size: N or HxW (height x width, e.g. 224x320); position "
        "embeddings are resampled by the checkpoint family's rule. Default: the family's "
        "evaluation size.", cli=(str | None, parse_img_size, None), metavar="N|HxW")
    num_heads: int | None = option(
        None, help="Attention heads, when the width->heads table (192:3, 384:6, 768:12) is "
        "wrong.")
    pixel_size: int | None = option(
        None, help="For the pixels backbone: resize images to this side (default: native size).")
    seed: int = 0  # of random:ARCH weights

    def __post_init__(self) -> None:
        one_of("--checkpoint-key", self.checkpoint_key, ("teacher", "student"))
        object.__setattr__(self, "img_size", parse_img_size(self.img_size))  # "224x320" -> (224, 320)
        at_least("--seed", self.seed, 0)

    def check_specs(self, specs: Sequence[str]) -> None:
        """Refuse options that no backbone of ``specs`` uses (before any is loaded)."""
        if self.weights is not None and not any(s.startswith("timm:") for s in specs):
            raise DinoevalError("--weights is the state dict of a timm:NAME backbone, and no "
                                "--ckpt is one; drop it (a checkpoint file holds its own weights)")
        if self.pixel_size is not None and "pixels" not in specs:
            raise DinoevalError("--pixel-size resizes the pixels backbone, and no --ckpt is "
                                "pixels; use --img-size for a ViT")

    def load(self, spec: str) -> Backbone:
        """The backbone of ``spec``; ``meta["network"]`` says which network of a training
        checkpoint (teacher or student) was read, and is empty for a plain backbone."""
        bb = load_backbone(spec, checkpoint_key=self.checkpoint_key, weights=self.weights,
                           img_size=self.img_size, num_heads=self.num_heads,
                           pixel_size=self.pixel_size, seed=self.seed)
        from_train = bb.meta.get("format") in TRAINING_FORMATS or any(
            str(n).startswith(f"read {self.checkpoint_key!r}") for n in bb.notes)
        bb.meta["network"] = self.checkpoint_key if from_train else ""
        return bb


@dataclass(frozen=True, kw_only=True)
class ExtractOptions:
    """How features are computed and cached."""

    feature: str = option(
        "cls", help=f"{' | '.join(FEATURE_KINDS)} (cls+gem: CLS and GeM p=4 of the patch "
        "tokens; patch: the token grid, for extract only).")
    batch_size: int = option(128, help="Images per forward pass.")
    device: str = option("cpu", help="cpu, cuda, cuda:1, ...")
    num_workers: int = option(0, help="DataLoader workers for image folders.", flag="--workers")
    precision: str = option("fp32", help="fp32 or bf16 (autocast).")
    skip_bad_images: bool = option(
        False, help="Skip unreadable images (and report how many) instead of stopping at the "
        "first.")
    cache_dir: str | None = option(
        None, help="Feature cache directory (reused when checkpoint, data and settings match).")

    def __post_init__(self) -> None:
        one_of("--feature", self.feature, FEATURE_KINDS)
        at_least("--batch-size", self.batch_size, 1)
        at_least("--workers", self.num_workers, 0)
        one_of("--precision", self.precision, ("fp32", "bf16"))
        check_device(self.device)


@dataclass
class Run:
    """What a runner produced for one backbone.

    Attributes:
        frame: the result rows (:data:`dinoeval.results.COLUMNS`).
        results: the typed results by name (``"knn"``, ``"linear"``, ``"features"``, ...).
        notes: what the caller should tell the user (skipped images, conversions, ...).
    """

    frame: pd.DataFrame
    results: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def as_source(data: str | ImageSource) -> ImageSource:
    """A data spec resolved to its source (a source is returned as it is)."""
    return get_source(data) if isinstance(data, str) else data


def get_features(backbone: Backbone, source: ImageSource, opts: ExtractOptions,
                 progress: ProgressFactory | None = None) -> FeatureSet:
    """Extract (or read from the cache) ``opts.feature`` features of ``source``."""
    cb = progress(f"{backbone.name} on {source.spec}", len(source)) if progress else None
    return extract_features(
        backbone, source, kind=opts.feature, batch_size=opts.batch_size, device=opts.device,
        num_workers=opts.num_workers, skip_bad_images=opts.skip_bad_images,
        precision=opts.precision, cache_dir=opts.cache_dir, progress=cb)


def resolution(backbone: Backbone) -> str:
    """The input side as a table shows it: ``224``, ``224x320``, or ``native`` (pixels at the
    images' own size)."""
    return resolution_text(backbone.img_size)


def context_for(backbone: Backbone, source: ImageSource, feature: str, *,
                train: ImageSource | None = None) -> Context:
    """The result-table context of features of ``backbone`` on ``source`` (``train``: the train
    or bank split of a k-NN / linear evaluation): every identity column of
    :data:`dinoeval.results.IDENTITY_COLUMNS`, so rows of different networks, resolutions or
    data never look alike."""
    return Context(backbone=backbone.spec, ckpt_hash=backbone.content_hash, arch=backbone.name,
                   dataset=source.name, split=source.split,
                   feature="pixels" if backbone.kind == "pixels" else feature,
                   **network_columns(backbone),
                   train_data=train.spec if train is not None else "",
                   train_n=len(train) if train is not None else None,
                   data=source.spec, data_n=len(source))


def network_columns(backbone: Backbone, input_size: Sequence[int] | None = None
                    ) -> dict[str, str]:
    """The ``network`` and ``resolution`` columns of rows of ``backbone`` (``input_size``: the
    input the evaluation actually fed it, when not the backbone's own ``img_size``)."""
    size = input_size if input_size is not None else backbone.img_size
    return {"network": str(backbone.meta.get("network", "")), "resolution": resolution_text(size)}


def notes(backbone: Backbone, *pairs: tuple[FeatureSet, ImageSource]) -> list[str]:
    """The backbone's notes, plus one per source whose unreadable images were skipped."""
    out = list(backbone.notes)
    for fs, src in pairs:
        if fs.meta.get("skipped"):
            out.append(f"skipped {fs.meta['skipped']} unreadable images of {src.spec}")
    return out


def check_pixel_sizes(ckpts: Sequence[str], backbone_opts: BackboneOptions,
                      data: Sequence[str | ImageSource | None]) -> None:
    """Refuse ``--ckpt pixels`` without ``--pixel-size`` on data whose images differ in size,
    before any backbone runs (also when pixels comes after other backbones). The sources are
    read only in that case (their sizes come from the image headers)."""
    if "pixels" not in ckpts or backbone_opts.pixel_size is not None:
        return
    for d in data:
        if d is None:
            continue
        src = as_source(d)
        if src.native_size is None:
            raise DinoevalError(f"pixels on {src.spec}: images differ in size; pass "
                                "--pixel-size N")


def needs_vectors(opts: ExtractOptions, what: str) -> None:
    """Refuse ``--feature patch`` (``(N, T, D)`` tokens) for an evaluation of one vector per
    image, before any backbone runs."""
    if opts.feature == "patch":
        raise DinoevalError(f"{what} needs one vector per image, and --feature patch gives a "
                            "grid of patch tokens; use cls, cls-last4, cls+avgpool or "
                            "cls+avgpool-v2 (patch is for extract)")


def labelled(fs: FeatureSet, what: str) -> np.ndarray:
    """``fs.labels``; raises when any image is unlabelled (``what`` names the evaluation)."""
    if (fs.labels < 0).any():
        raise DinoevalError(f"{what} needs labels; {int((fs.labels < 0).sum())} images of the "
                            "data have none (use a labelled source)")
    return fs.labels


def save_config(path: str | Path, **configs: object) -> Path:
    """Record the resolved configs beside a results file, in ``<results>.config.json``.

    The file holds ``{"runs": [...]}``, one entry (a timestamp and the configs) per command that
    appended rows to the table, oldest first: like the rows, earlier settings are never lost, also
    with concurrent commands (:func:`dinoeval.results.append_run_config` locks and replaces it).
    """
    from dinoeval.results import append_run_config

    entry = {"timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
             **{k: asdict(v) if hasattr(v, "__dataclass_fields__") else v
                for k, v in configs.items()}}
    return append_run_config(path, entry)


def run_extract(ckpt: str, data: str, out: str | Path, *, backbone_opts: BackboneOptions,
                extract_opts: ExtractOptions, progress: ProgressFactory | None = None
                ) -> tuple[FeatureSet, Path]:
    """Extract features into the cache directory ``out`` (reused by later commands)."""
    source = get_source(data)
    backbone = backbone_opts.load(ckpt)
    opts = ExtractOptions(**{**asdict(extract_opts), "cache_dir": str(out)})
    fs = get_features(backbone, source, opts, progress)
    return fs, FeatureCache(out).path(fs.meta)


def specs(values: Sequence[str]) -> list[str]:
    """De-duplicate repeated ``--ckpt`` values, keeping their order."""
    return list(dict.fromkeys(values))

"""Runners: the IO layer between the CLI and the pure cores.

``BackboneOptions`` + ``ExtractOptions`` describe how to get features; :func:`get_features`
resolves a backbone spec and a data spec into a cached :class:`FeatureSet`; :func:`run_knn` is the
k-NN runner. Every runner returns a results DataFrame (:mod:`dinoeval.results`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from dinoeval.checks import at_least, check_device, one_of, positive
from dinoeval.data import get_source
from dinoeval.data._base import ImageSource
from dinoeval.errors import DinoevalError
from dinoeval.eval.knn import DEFAULT_KS, KnnResult, knn_classify
from dinoeval.features import FeatureSet, extract_features
from dinoeval.features.extract import FEATURE_KINDS
from dinoeval.models import Backbone, load_backbone
from dinoeval.results import Context, to_frame

ProgressFactory = Callable[[str, int], Callable[[int], None]]


@dataclass(frozen=True, kw_only=True)
class BackboneOptions:
    """How to turn a spec into a backbone (see :func:`dinoeval.models.load_backbone`)."""

    checkpoint_key: str = "teacher"
    weights: str | None = None
    img_size: int | None = None
    num_heads: int | None = None
    pixel_size: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        at_least("--seed", self.seed, 0)

    def load(self, spec: str) -> Backbone:
        return load_backbone(spec, checkpoint_key=self.checkpoint_key, weights=self.weights,
                             img_size=self.img_size, num_heads=self.num_heads,
                             pixel_size=self.pixel_size, seed=self.seed)


@dataclass(frozen=True, kw_only=True)
class ExtractOptions:
    """How features are computed and cached."""

    feature: str = "cls"
    batch_size: int = 128
    device: str = "cpu"
    num_workers: int = 0
    precision: str = "fp32"
    skip_bad_images: bool = False
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        one_of("--feature", self.feature, FEATURE_KINDS)
        at_least("--batch-size", self.batch_size, 1)
        at_least("--workers", self.num_workers, 0)
        one_of("--precision", self.precision, ("fp32", "bf16"))
        check_device(self.device)


@dataclass(frozen=True, kw_only=True)
class KnnConfig:
    """k-NN settings (DINO defaults)."""

    ks: tuple[int, ...] = DEFAULT_KS
    temperature: float = 0.07
    per_class: bool = False

    def __post_init__(self) -> None:
        if not self.ks:
            raise DinoevalError("give at least one --k")
        for k in self.ks:
            at_least("--k", k, 1)
        positive("--temperature", self.temperature)


def get_features(backbone: Backbone, source: ImageSource, opts: ExtractOptions,
                 progress: ProgressFactory | None = None) -> FeatureSet:
    """Extract (or read from the cache) ``opts.feature`` features of ``source``."""
    cb = progress(f"{backbone.name} on {source.spec}", len(source)) if progress else None
    return extract_features(
        backbone, source, kind=opts.feature, batch_size=opts.batch_size, device=opts.device,
        num_workers=opts.num_workers, skip_bad_images=opts.skip_bad_images,
        precision=opts.precision, cache_dir=opts.cache_dir, progress=cb)


def context_for(backbone: Backbone, source: ImageSource, feature: str) -> Context:
    """The result-table context of features of ``backbone`` on ``source``."""
    return Context(backbone=backbone.spec, ckpt_hash=backbone.content_hash, arch=backbone.name,
                   dataset=source.name, split=source.split,
                   feature="pixels" if backbone.kind == "pixels" else feature)


@dataclass
class KnnRun:
    """What :func:`run_knn` produced for one backbone."""

    frame: pd.DataFrame
    result: KnnResult
    train: FeatureSet
    val: FeatureSet
    notes: list[str] = field(default_factory=list)


def run_knn(
    ckpt: str,
    train: str | ImageSource,
    val: str | ImageSource,
    *,
    backbone_opts: BackboneOptions = BackboneOptions(),
    extract_opts: ExtractOptions = ExtractOptions(),
    config: KnnConfig = KnnConfig(),
    progress: ProgressFactory | None = None,
) -> KnnRun:
    """k-NN of one backbone: features of ``train`` and ``val``, then :func:`knn_classify`."""
    t0 = time.perf_counter()
    train_src = get_source(train) if isinstance(train, str) else train
    val_src = get_source(val) if isinstance(val, str) else val
    backbone = backbone_opts.load(ckpt)
    ftrain = get_features(backbone, train_src, extract_opts, progress)
    fval = get_features(backbone, val_src, extract_opts, progress)
    result = knn_classify(ftrain.features, ftrain.labels, fval.features, fval.labels,
                          ks=config.ks, temperature=config.temperature,
                          num_classes=max(len(train_src.classes), len(val_src.classes)) or None)
    ctx = context_for(backbone, val_src, extract_opts.feature)
    frame = to_frame(result.to_rows(per_class=config.per_class, class_names=val_src.classes), ctx,
                     seconds=time.perf_counter() - t0)
    notes = list(backbone.notes)
    for fs, src in ((ftrain, train_src), (fval, val_src)):
        if fs.meta.get("skipped"):
            notes.append(f"skipped {fs.meta['skipped']} unreadable images of {src.spec}")
    return KnnRun(frame=frame, result=result, train=ftrain, val=fval, notes=notes)


def save_config(path: str | Path, **configs: object) -> Path:
    """Record the resolved configs beside a results file, in ``<results>.config.json``.

    The file holds ``{"runs": [...]}``, one entry (a timestamp and the configs) per command that
    appended rows to the table, oldest first: like the rows, earlier settings are never lost.
    """
    path = Path(path)
    out = path.with_name(path.name + ".config.json")
    entry = {"timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
             **{k: asdict(v) if hasattr(v, "__dataclass_fields__") else v
                for k, v in configs.items()}}
    runs: list[object] = []
    if out.exists():
        try:
            old = json.loads(out.read_text())
            runs = old["runs"] if isinstance(old, dict) and "runs" in old else [old]
        except (OSError, ValueError):  # unreadable: keep it aside, never fail after the work
            out.replace(out.with_name(out.name + ".bak"))
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps({"runs": [*runs, entry]}, indent=1, default=str))
    tmp.replace(out)
    return out


def run_extract(ckpt: str, data: str, out: str | Path, *, backbone_opts: BackboneOptions,
                extract_opts: ExtractOptions, progress: ProgressFactory | None = None
                ) -> tuple[FeatureSet, Path]:
    """Extract features into the cache directory ``out`` (reused by later commands)."""
    from dinoeval.features.cache import FeatureCache

    source = get_source(data)
    backbone = backbone_opts.load(ckpt)
    opts = ExtractOptions(**{**asdict(extract_opts), "cache_dir": str(out)})
    fs = get_features(backbone, source, opts, progress)
    return fs, FeatureCache(out).path(fs.meta)


def specs(values: Sequence[str]) -> list[str]:
    """De-duplicate repeated ``--ckpt`` values, keeping their order."""
    return list(dict.fromkeys(values))

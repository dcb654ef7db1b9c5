"""The k-NN runner: weighted k-NN accuracy (DINO protocol) of one backbone.

:func:`evaluate_knn` scores features already in hand (what the demo shares);
:func:`run_knn` goes from a backbone spec and two data specs to a :class:`KnnRun`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pandas as pd

from dinoeval.checks import at_least, option, positive
from dinoeval.data import ImageSource, check_train_val
from dinoeval.errors import DinoevalError
from dinoeval.eval.knn import DEFAULT_KS, KnnResult, knn_classify
from dinoeval.features import FeatureSet
from dinoeval.pipeline.setup import (
    BackboneOptions,
    ExtractOptions,
    ProgressFactory,
    as_source,
    context_for,
    get_features,
    needs_vectors,
    notes,
)
from dinoeval.results import to_frame


@dataclass(frozen=True, kw_only=True)
class KnnConfig:
    """k-NN settings (DINO defaults)."""

    ks: tuple[int, ...] = option(DEFAULT_KS, help="Neighbour counts; one search serves all.",
                                 flag="--k")
    temperature: float = option(0.07, help="Vote weight exp(sim/T).")
    per_class: bool = option(False, help="Also report per-class recall.")

    def __post_init__(self) -> None:
        if not self.ks:
            raise DinoevalError("give at least one --k")
        for k in self.ks:
            at_least("--k", k, 1)
        positive("--temperature", self.temperature)


@dataclass
class KnnRun:
    """What :func:`run_knn` produced for one backbone."""

    frame: pd.DataFrame
    result: KnnResult
    train: FeatureSet
    val: FeatureSet
    notes: list[str] = field(default_factory=list)


def evaluate_knn(train: FeatureSet, val: FeatureSet, config: KnnConfig = KnnConfig(), *,
                 num_classes: int | None = None) -> KnnResult:
    """Weighted k-NN of features in hand: ``train`` is the bank, ``val`` the queries.

    Args:
        train, val: features and labels (see :func:`~dinoeval.eval.knn.knn_classify`).
        config: ks, temperature.
        num_classes: C (default: the largest label + 1).
    """
    return knn_classify(train.features, train.labels, val.features, val.labels, ks=config.ks,
                        temperature=config.temperature, num_classes=num_classes)


def check_knn_inputs(train: ImageSource, val: ImageSource, config: KnnConfig,
                     extract_opts: ExtractOptions) -> tuple[ImageSource, ImageSource]:
    """The checks :func:`run_knn` makes before the work; returns ``(train, val)`` with val's
    labels on the train classes (see :func:`~dinoeval.data.match_classes`)."""
    needs_vectors(extract_opts, "k-NN")
    val = check_train_val(train, val, "k-NN")
    if max(config.ks) > len(train):
        raise DinoevalError(f"--k {max(config.ks)} is larger than the train set: --train {train.spec} "
                            f"has {len(train):,} images; use --k values <= {len(train)} or more "
                            "train data")
    return train, val


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
    """k-NN of one backbone: features of ``train`` and ``val``, then :func:`evaluate_knn`.

    Before any backbone runs: both splits labelled, disjoint, val classes matched to the train
    classes by name (:func:`~dinoeval.data.check_train_val`), every k within the bank, a
    vector feature kind.
    """
    t0 = time.perf_counter()
    train_src, val_src = check_knn_inputs(as_source(train), as_source(val), config, extract_opts)
    backbone = backbone_opts.load(ckpt)
    ftrain = get_features(backbone, train_src, extract_opts, progress)
    fval = get_features(backbone, val_src, extract_opts, progress)
    result = evaluate_knn(ftrain, fval, config, num_classes=len(val_src.classes) or None)
    ctx = context_for(backbone, val_src, extract_opts.feature, train=train_src)
    frame = to_frame(result.to_rows(per_class=config.per_class, class_names=val_src.classes), ctx,
                     seconds=time.perf_counter() - t0)
    return KnnRun(frame=frame, result=result, train=ftrain, val=fval,
                  notes=notes(backbone, (ftrain, train_src), (fval, val_src)))

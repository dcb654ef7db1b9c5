"""The linear-probe runner (DINOv2 protocol: settings selected on a held-out split of train).

:func:`evaluate_linear` probes features already in hand; :func:`run_linear` goes from a backbone
spec and two data specs to a :class:`~dinoeval.pipeline.setup.Run`.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from dinoeval.data import ImageSource, check_train_val
from dinoeval.errors import DinoevalError
from dinoeval.eval.linear import LinearProbeConfig, LinearProbeResult, linear_probe
from dinoeval.features import FeatureSet
from dinoeval.pipeline.setup import (
    BackboneOptions,
    ExtractOptions,
    ProgressFactory,
    Run,
    as_source,
    context_for,
    get_features,
    labelled,
    needs_vectors,
    notes,
)
from dinoeval.results import to_frame


def probe_progress(progress: ProgressFactory | None, config: LinearProbeConfig,
                   what: str = "") -> Callable[[int], None] | None:
    """The ``on_epoch`` callback of :func:`~dinoeval.eval.linear.linear_probe` as one progress
    task: SGD epochs in grid mode, fitted C values (and the refit) in logreg mode."""
    if progress is None:
        return None
    lead = f"{what}: " if what else ""
    if config.mode == "grid":
        update = progress(f"{lead}linear heads ({len(config.learning_rates)} lr x "
                          f"{len(config.weight_decays)} wd, epochs)",
                          config.epochs * (2 if config.refit else 1))
    else:
        update = progress(f"{lead}logistic regression (fits over {len(config.cs)} C"
                          f"{' + refit' if config.refit else ''})",
                          len(config.cs) + (1 if config.refit else 0))
    done = itertools.count(1)
    return lambda _: update(next(done))


def evaluate_linear(train: FeatureSet, test: FeatureSet,
                    config: LinearProbeConfig = LinearProbeConfig(), *,
                    num_classes: int | None = None, device: str = "cpu",
                    progress: ProgressFactory | None = None) -> LinearProbeResult:
    """Linear probe of features in hand: selected on a held-out split of ``train``, scored on
    ``test`` (see :func:`~dinoeval.eval.linear.linear_probe`)."""
    on_epoch = probe_progress(progress, config)
    return linear_probe(train.features, labelled(train, "a linear probe"), test.features,
                        labelled(test, "a linear probe"), config=config,
                        num_classes=num_classes, device=device, on_epoch=on_epoch)


def train_classes(train: ImageSource) -> np.ndarray:
    """The class ids that have train images, sorted: the probe's outputs (a class of the
    source's list without train images is no output; val classes are a subset, see
    :func:`~dinoeval.data.check_train_val`). Refuses fewer than two, before any work."""
    present = np.unique(train.labels[train.labels >= 0])
    if len(present) < 2:
        names = ", ".join(train.classes[int(c)] if int(c) < len(train.classes) else str(int(c))
                          for c in present) or "none"
        raise DinoevalError(f"a linear probe needs train images of 2 or more classes; --train "
                            f"{train.spec} has {names}")
    return present


def run_linear(ckpt: str, train: str | ImageSource, val: str | ImageSource, *,
               backbone_opts: BackboneOptions = BackboneOptions(),
               extract_opts: ExtractOptions = ExtractOptions(),
               config: LinearProbeConfig = LinearProbeConfig(),
               progress: ProgressFactory | None = None) -> Run:
    """Linear probe of one backbone: selected on a held-out split of ``train``, tested on ``val``."""
    t0 = time.perf_counter()
    needs_vectors(extract_opts, "a linear probe")
    train_src = as_source(train)
    val_src = check_train_val(train_src, as_source(val), "a linear probe")  # before any work
    present = train_classes(train_src)
    backbone = backbone_opts.load(ckpt)
    ftr = get_features(backbone, train_src, extract_opts, progress)
    fte = get_features(backbone, val_src, extract_opts, progress)
    ftr, fte = (replace(fs, labels=np.searchsorted(present, fs.labels)) for fs in (ftr, fte))
    result = evaluate_linear(ftr, fte, config, device=extract_opts.device, progress=progress,
                             num_classes=len(present))
    frame = to_frame(result.to_rows(), context_for(backbone, val_src, extract_opts.feature,
                                                   train=train_src),
                     seconds=time.perf_counter() - t0)
    return Run(frame=frame, results={"linear": result},
               notes=notes(backbone, (ftr, train_src), (fte, val_src)))

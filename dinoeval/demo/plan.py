"""The demo's evaluation plan: what runs on each backbone, always through the shared runners
(:mod:`dinoeval.pipeline`), never a copy of them.

Per backbone: k-NN, the linear probe, spherical k-means, collapse and neural-collapse statistics
on the cached CLS features; attention-mask Jaccard (ViTs, data with masks); video label
propagation and dense mIoU (shapes); retrieval within the test images and copy detection on
procedural strong copies (:mod:`dinoeval.pipeline.retrieval`, the runners of ``dinoeval
retrieval`` and ``dinoeval copy-detection``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from dinoeval.data import ImageSource
from dinoeval.demo.config import MAX_STATS_DIM, DemoConfig
from dinoeval.eval.linear import LinearProbeConfig
from dinoeval.features import FeatureSet
from dinoeval.models import Backbone
from dinoeval.pipeline.attention import AttentionConfig, run_attention
from dinoeval.pipeline.clusters import ClusterConfig, evaluate_clusters
from dinoeval.pipeline.collapse import CollapseConfig, evaluate_collapse, evaluate_neural_collapse
from dinoeval.pipeline.knn import KnnConfig, evaluate_knn
from dinoeval.pipeline.linear import evaluate_linear
from dinoeval.pipeline.setup import ExtractOptions, ProgressFactory, context_for
from dinoeval.results import Context, Row, to_frame


@dataclass
class BackboneRun:
    """One backbone of the demo: its features, and what its evaluations produced.

    Attributes:
        role: ``DINO``, ``random init`` or ``pixels``.
        typed: ``{"knn": KnnResult, "linear": LinearProbeResult, "collapse": CollapseStats}``
            for the figures (:func:`dinoeval.report.figure_set.result_figures`).
        retrieval, copies: :class:`~dinoeval.pipeline.retrieval.RetrievalRun` (top hits for the
            retrieval view) when run.
    """

    role: str
    backbone: Backbone
    train: FeatureSet
    test: FeatureSet
    frames: list[pd.DataFrame] = field(default_factory=list)
    typed: dict[str, Any] = field(default_factory=dict)
    retrieval: Any = None
    copies: Any = None


def _frame(rows: list[Row], ctx: Context, t0: float) -> pd.DataFrame:
    return to_frame(rows, ctx, seconds=time.perf_counter() - t0)


def evaluate_features(b: BackboneRun, train_src: ImageSource, test_src: ImageSource,
                      cfg: DemoConfig, c: int, notes: list[str]) -> None:
    """Every evaluation of one backbone on the features in hand, through the shared runners.

    Each row names the split it measured: k-NN, the linear probe, clustering and the collapse
    statistics score the test features; neural collapse is a property of the training features
    (and of the probe fitted on them), so its rows say ``split=train``.
    """
    s = cfg.seed
    test_ctx = context_for(b.backbone, test_src, "cls")
    t0 = time.perf_counter()
    ks = tuple(k for k in cfg.knn_ks if k <= len(b.train)) or (min(len(b.train), cfg.knn_k),)
    knn = evaluate_knn(b.train, b.test, KnnConfig(ks=ks), num_classes=c)
    b.frames.append(_frame(knn.to_rows(), test_ctx, t0))
    t0 = time.perf_counter()
    probe = evaluate_linear(b.train, b.test, LinearProbeConfig(epochs=cfg.linear_epochs, seed=s),
                            num_classes=c, device=cfg.device)
    b.frames.append(_frame(probe.to_rows(), test_ctx, t0))
    b.typed.update(knn=knn, linear=probe)
    t0 = time.perf_counter()
    # Spherical k-means: the same cosine geometry as the k-NN.
    clusters = ClusterConfig(k=c, spherical=True, seeds=(s, s + 1, s + 2), seed=s)
    b.frames.append(_frame(evaluate_clusters(b.test, clusters).to_rows(), test_ctx, t0))
    if b.train.dim > MAX_STATS_DIM:
        notes.append(f"{b.role}: collapse statistics skipped ({b.train.dim:,} dims > "
                     f"{MAX_STATS_DIM:,}: the D x D eigen-decomposition takes minutes)")
        return
    collapse = CollapseConfig(seed=s)
    t0 = time.perf_counter()
    stats = evaluate_collapse(b.test, collapse)
    b.frames.append(_frame(stats.to_rows(), test_ctx, t0))
    b.typed["collapse"] = stats
    t0 = time.perf_counter()
    nc = evaluate_neural_collapse(b.train, collapse, probe=probe, num_classes=c)
    b.frames.append(_frame(nc.to_rows(), context_for(b.backbone, train_src, "cls"), t0))


def prefixed(progress: ProgressFactory | None, role: str) -> ProgressFactory | None:
    """Progress bars titled with the backbone's role (DINO and random init share an arch)."""
    if progress is None:
        return None
    return lambda description, total: progress(f"{role}: {description}", total)


def attention(b: BackboneRun, source: ImageSource, cfg: DemoConfig,
              progress: ProgressFactory | None) -> Any:
    """The attention run of one ViT on the first ``cfg.attention_images`` test images."""
    n = min(cfg.attention_images, len(source))
    cb = progress(f"attention {b.role}", n) if progress else None
    return run_attention(b.backbone, source, np.arange(n),
                         AttentionConfig(device=cfg.device, batch_size=64), progress=cb)


def dense_evals(backbone: Backbone, role: str, config: DemoConfig, patch: int,
                progress: ProgressFactory | None, video_runs: list[tuple[str, Any]]
                ) -> list[pd.DataFrame]:
    """Video label propagation (J&F) and dense mIoU of one backbone, when configured."""
    out = []
    if config.video:
        from dinoeval.pipeline.video_seg import VideoSegConfig, run_video_seg

        run = run_video_seg(backbone, config.video, progress=progress, config=VideoSegConfig(
            pixel_patch=patch, device=config.device))
        video_runs.append((role, run))
        out.append(run.frame)
    if config.dense_train and config.dense_test:
        from dinoeval.pipeline.dense import DenseConfig, run_dense

        out.append(run_dense(backbone, config.dense_train, config.dense_test, progress=progress,
                             config=DenseConfig(pixel_patch=patch, max_bank=20_000,
                                                device=config.device)).frame)
    return out


def copy_benchmark(config: DemoConfig, source: ImageSource, notes: list[str]) -> Any:
    """The seeded procedural copy benchmark of the demo, made once and shared by every backbone
    (``None`` when ``copy_originals`` is 0). A set smaller than the asked sizes (a ``--test``
    override) gets them scaled down in the same proportions, said in ``notes``."""
    o, d, w = config.copy_originals, config.copy_distractors, config.copy_whitening
    if o == 0:
        return None
    from dinoeval.data.copies import procedural_copies

    n = len(source)
    if o + d + w > n:
        f = n / (o + d + w)
        o, d, w = max(1, int(o * f)), int(d * f), int(w * f)
        if o + d + w > n or (w and w < 2):  # whitening needs 2 images at least
            o = min(o, n)
            d, w = n - o, 0
        notes.append(f"copy detection scaled to {n} images of {source.spec}: {o} originals, "
                     f"{d} distractors, {w} whitening images")
    return procedural_copies(source, n_originals=o, n_distractors=d, n_whitening=w,
                             seed=config.seed)


def retrieval_evals(b: BackboneRun, source: ImageSource, bench: Any, config: DemoConfig,
                    progress: ProgressFactory | None) -> None:
    """Retrieval within ``source`` (label relevance, each query skips itself) and copy detection
    on ``bench``, with the runners of ``dinoeval retrieval`` / ``dinoeval copy-detection``, at
    the backbone's own input size (copy detection's 320 px default is for photographs)."""
    from dinoeval.pipeline.retrieval import (
        CopyDetectionConfig,
        RetrievalConfig,
        copy_detection_with,
        retrieval_with,
    )

    opts = ExtractOptions(batch_size=config.batch_size, device=config.device)
    b.retrieval = retrieval_with(b.backbone, source, extract_opts=opts,
                                 config=RetrievalConfig(show=4), progress=progress)
    b.frames.append(b.retrieval.frame)
    if bench is not None:
        b.copies = copy_detection_with(b.backbone, bench, extract_opts=opts,
                                       config=CopyDetectionConfig(show=4), progress=progress)
        b.frames.append(b.copies.frame)

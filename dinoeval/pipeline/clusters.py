"""The clustering runner: k-means of a backbone's features, scored against the labels.

:func:`evaluate_clusters` clusters features already in hand; :func:`run_clusters` goes from a
backbone spec and a data spec to a :class:`~dinoeval.pipeline.setup.Run`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from dinoeval.checks import option
from dinoeval.data import ImageSource, require_labels
from dinoeval.errors import DinoevalError
from dinoeval.eval.clusters import ClusterResult, cluster_scores
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


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    """k-means settings (see :func:`~dinoeval.eval.clusters.cluster_scores`).

    Attributes:
        k: clusters (``None``: one per class present).
        seeds: one k-means run per seed; the rows give the mean and std over them.
        spherical: cosine k-means on L2-normalised features.
        niter: Lloyd iterations per run.
        silhouette_samples: rows behind the silhouette (seeded sample; 0 skips it).
        seed: seed of the silhouette sample.
    """

    k: int | None = option(None, help="Clusters (default: number of classes).")
    seeds: tuple[int, ...] = option(
        (0, 1, 2), help="k-means runs (seeds 0..n-1); mean and std.",
        cli=(int, lambda n: tuple(range(n)), 3))
    spherical: bool = option(False, help="Cosine k-means on L2-normalised features.")
    niter: int = 50
    silhouette_samples: int = option(
        10000, help="Seeded sample size for the silhouette (0 skips it).")
    seed: int = option(0, help="Seed of the silhouette sample.")

    def __post_init__(self) -> None:
        if self.k is not None and self.k < 2:
            raise DinoevalError(f"--k must be >= 2 clusters (or left out: one per class), got "
                                f"{self.k}")
        if not self.seeds:
            raise DinoevalError("--seeds must be >= 1: k-means needs at least one run")
        if self.niter < 1:
            raise DinoevalError(f"k-means needs at least one iteration, got niter={self.niter}")
        if self.silhouette_samples < 0:
            raise DinoevalError(f"--silhouette-samples must be >= 0 (0 skips the silhouette), "
                                f"got {self.silhouette_samples}")
        if self.seed < 0 or any(s < 0 for s in self.seeds):
            raise DinoevalError(f"seeds must be >= 0, got seed={self.seed} and seeds="
                                f"{self.seeds}")


def evaluate_clusters(fs: FeatureSet, config: ClusterConfig = ClusterConfig(), *,
                      progress: ProgressFactory | None = None) -> ClusterResult:
    """k-means of features in hand, scored against their labels (``progress``: one task whose
    steps are the k-means seeds and the silhouette)."""
    on_step = None if progress is None else progress(
        f"{'spherical ' if config.spherical else ''}k-means ({len(config.seeds)} seeds + "
        "silhouette)", len(config.seeds) + 1)
    return cluster_scores(fs.features, labelled(fs, "clustering scores"), k=config.k,
                          seeds=config.seeds, spherical=config.spherical, niter=config.niter,
                          silhouette_samples=config.silhouette_samples, seed=config.seed,
                          on_step=on_step)


def check_cluster_inputs(src: ImageSource, config: ClusterConfig) -> ImageSource:
    """Labels present, and a cluster count the data allows (2 <= k <= N; with ``k`` unset, 2 or
    more classes present), known before any image is read."""
    src = require_labels(src, "clustering scores")
    k = config.k if config.k is not None else len(np.unique(src.labels))
    if not 2 <= k <= len(src):
        what = f"--k {config.k}" if config.k is not None else f"{k} class(es) present"
        raise DinoevalError(f"k-means needs 2 <= k <= N clusters: {what}, and {src.spec} has "
                            f"{len(src):,} images; pass --k between 2 and {len(src)}")
    return src


def run_clusters(ckpt: str, data: str | ImageSource, *,
                 backbone_opts: BackboneOptions = BackboneOptions(),
                 extract_opts: ExtractOptions = ExtractOptions(),
                 config: ClusterConfig = ClusterConfig(),
                 progress: ProgressFactory | None = None) -> Run:
    """k-means of one backbone's features on ``data``, scored against its labels."""
    t0 = time.perf_counter()
    needs_vectors(extract_opts, "k-means")
    src = check_cluster_inputs(as_source(data), config)  # before any work
    backbone = backbone_opts.load(ckpt)
    fs = get_features(backbone, src, extract_opts, progress)
    result = evaluate_clusters(fs, config, progress=progress)
    frame = to_frame(result.to_rows(), context_for(backbone, src, extract_opts.feature),
                     seconds=time.perf_counter() - t0)
    return Run(frame=frame, results={"clusters": result}, notes=notes(backbone, (fs, src)))

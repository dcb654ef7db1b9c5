"""Runners: the IO layer between the CLI and the pure cores of :mod:`dinoeval.eval`.

One module per evaluation. Each offers ``evaluate_*(features, config)`` on features already in
hand and ``run_*(spec, data, ...)`` from a backbone spec and data specs; :mod:`.setup` holds what
they share (backbone and extraction options, feature extraction through the cache, the result
context, the :class:`Run` record, the config sidecar)::

    from dinoeval.pipeline import run_knn
    run = run_knn("pixels", "digits", "digits")
"""

from dinoeval.pipeline.attention import (
    AttentionConfig,
    AttentionRun,
    attention_frame,
    run_attention,
    run_attentions,
)
from dinoeval.pipeline.clusters import ClusterConfig, evaluate_clusters, run_clusters
from dinoeval.pipeline.collapse import (
    CollapseConfig,
    evaluate_collapse,
    evaluate_neural_collapse,
    run_collapse_stats,
    run_collapse_stats_kinds,
)
from dinoeval.pipeline.knn import KnnConfig, KnnRun, evaluate_knn, run_knn
from dinoeval.pipeline.knn_bank import KnnBankConfig, run_knn_bank
from dinoeval.pipeline.linear import evaluate_linear, run_linear
from dinoeval.pipeline.retrieval import (
    CopyDetectionConfig,
    RetrievalConfig,
    RetrievalRun,
    evaluate_copy_detection,
    evaluate_retrieval,
    run_copy_detection,
    run_retrieval,
)
from dinoeval.pipeline.setup import (
    BackboneOptions,
    ExtractOptions,
    ProgressFactory,
    Run,
    context_for,
    get_features,
    run_extract,
    save_config,
    specs,
)

__all__ = [
    "AttentionConfig",
    "AttentionRun",
    "BackboneOptions",
    "ClusterConfig",
    "CollapseConfig",
    "CopyDetectionConfig",
    "ExtractOptions",
    "KnnBankConfig",
    "KnnConfig",
    "KnnRun",
    "ProgressFactory",
    "RetrievalConfig",
    "RetrievalRun",
    "Run",
    "attention_frame",
    "context_for",
    "evaluate_clusters",
    "evaluate_collapse",
    "evaluate_copy_detection",
    "evaluate_knn",
    "evaluate_linear",
    "evaluate_neural_collapse",
    "evaluate_retrieval",
    "get_features",
    "run_attention",
    "run_attentions",
    "run_clusters",
    "run_collapse_stats",
    "run_collapse_stats_kinds",
    "run_copy_detection",
    "run_extract",
    "run_knn",
    "run_knn_bank",
    "run_linear",
    "run_retrieval",
    "save_config",
    "specs",
]

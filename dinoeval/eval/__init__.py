"""Pure evaluation cores: arrays in, typed results out.

Runners that do IO (``stats_runner``, ``attention_runner``) are not imported here.
"""

from dinoeval.eval.clusters import (
    ClusterAgreement,
    ClusterResult,
    cluster_agreement,
    cluster_scores,
    kmeans,
)
from dinoeval.eval.collapse import (
    CollapseStats,
    DinoHeadAccumulator,
    DinoHeadStats,
    alignment,
    alpha_req,
    collapse_stats,
    dino_head_stats,
    normalized_std,
    rankme,
    uniformity,
)
from dinoeval.eval.knn import DEFAULT_KS, KnnResult, knn_classify, knn_search, weighted_vote
from dinoeval.eval.linear import LinearProbeConfig, LinearProbeResult, linear_probe
from dinoeval.eval.neural_collapse import NeuralCollapseStats, neural_collapse
from dinoeval.eval.retrieval import (
    PROTOCOLS,
    RetrievalResult,
    average_precision,
    precision_recall_at,
    retrieval_metrics,
)
from dinoeval.eval.whitening import Whitening, learn_whitening

__all__ = [
    "DEFAULT_KS", "PROTOCOLS", "ClusterAgreement", "ClusterResult", "CollapseStats",
    "DinoHeadAccumulator", "DinoHeadStats", "KnnResult", "LinearProbeConfig", "LinearProbeResult",
    "NeuralCollapseStats", "RetrievalResult", "Whitening", "alignment", "alpha_req",
    "average_precision", "cluster_agreement", "cluster_scores", "collapse_stats", "dino_head_stats",
    "kmeans", "knn_classify", "knn_search", "learn_whitening", "linear_probe", "neural_collapse",
    "normalized_std", "precision_recall_at", "rankme", "retrieval_metrics", "uniformity",
    "weighted_vote",
]

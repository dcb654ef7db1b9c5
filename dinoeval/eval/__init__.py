"""Pure evaluation cores: arrays in, typed results out."""

from dinoeval.eval.knn import DEFAULT_KS, KnnResult, knn_classify, knn_search, weighted_vote

__all__ = ["DEFAULT_KS", "KnnResult", "knn_classify", "knn_search", "weighted_vote"]

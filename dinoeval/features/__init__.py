"""Feature extraction and the on-disk feature cache."""

from dinoeval.features.cache import FeatureCache, cache_key
from dinoeval.features.extract import (
    FEATURE_KINDS,
    extract_features,
    feature_meta,
    forward_features,
    iterate_batches,
    l2_normalize,
    make_transform,
)
from dinoeval.features.featureset import FeatureSet
from dinoeval.features.transforms import EvalTransform, default_crop_ratio

__all__ = [
    "FEATURE_KINDS", "EvalTransform", "FeatureCache", "FeatureSet", "cache_key",
    "default_crop_ratio", "extract_features", "feature_meta", "forward_features",
    "iterate_batches", "l2_normalize", "make_transform",
]

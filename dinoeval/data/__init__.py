"""Image sources by name, and the evaluation transform."""

from dinoeval.data._base import ArraySource, ImageSource, SourceInfo
from dinoeval.data.builtin import (
    BadImageError,
    ImageFolderSource,
    digits,
    fashion_mnist,
    read_idx,
)
from dinoeval.data.pairs import (
    RelabelledSource,
    check_disjoint,
    check_train_val,
    class_names,
    match_classes,
    require_labels,
)
from dinoeval.data.registry import available_sources, get_source, register_source, take_subset

__all__ = [
    "ArraySource", "BadImageError", "ImageFolderSource", "ImageSource", "RelabelledSource",
    "SourceInfo", "available_sources", "check_disjoint", "check_train_val", "class_names",
    "digits", "fashion_mnist", "get_source", "match_classes", "read_idx", "register_source",
    "require_labels", "take_subset",
]
from dinoeval.data import roxford as _roxford  # noqa: F401  (registers roxford5k, rparis6k)
from dinoeval.data import shapes as _shapes  # noqa: F401  (registers the shapes source)

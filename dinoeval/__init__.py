"""dinoeval: how good, and how healthy, is a self-supervised vision backbone?

The main entry points, importable from here::

    from dinoeval import load_backbone, get_source, extract_features, knn_classify, run_knn
"""

from __future__ import annotations

import importlib
from typing import Any

from dinoeval.errors import DinoevalError

__version__ = "0.1.0"

_LAZY = {
    "get_source": "dinoeval.data",
    "load_backbone": "dinoeval.models",
    "read_checkpoint": "dinoeval.models",
    "extract_features": "dinoeval.features",
    "FeatureSet": "dinoeval.features",
    "knn_classify": "dinoeval.eval.knn",
    "KnnResult": "dinoeval.eval.knn",
    "run_knn": "dinoeval.pipeline",
    "BackboneOptions": "dinoeval.pipeline",
    "ExtractOptions": "dinoeval.pipeline",
    "KnnConfig": "dinoeval.pipeline",
    "read_results": "dinoeval.results",
    "pivot": "dinoeval.results",
    "render": "dinoeval.results",
}

__all__ = ["DinoevalError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    # Lazy, so `import dinoeval` stays light and submodules never import each other in a cycle.
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dinoeval' has no attribute {name!r}")

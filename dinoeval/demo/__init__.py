"""The demo: a DINO checkpoint vs its random-init twin vs raw pixels, on every evaluation.

``dinoeval demo`` evaluates the checkpoint shipped in ``dinoeval/assets/checkpoints`` (or one that
``--pretrain`` trains first, or any ``--ckpt``), ``random:<that checkpoint>`` (the same
architecture, random weights) and ``pixels`` on the procedural ``shapes`` dataset (default) or
Fashion-MNIST: weighted k-NN, a linear probe, k-means clustering, SSL collapse and neural-collapse
statistics, image retrieval and copy detection on procedural strong copies, and — on data with
ground-truth masks — the Jaccard of the last block's CLS attention masks (plus, on shapes, video
label propagation and dense mIoU). It writes ``results.csv``, ``results.md``, ``report.html``
(the results page of ``dinoeval report --html`` with confusion matrices, the RankMe spectrum,
per-class accuracy and 2-D maps), ``attention/``, ``retrieval/`` and ``copies/`` views under the
output folder, and returns a one-row-per-backbone summary plus target checks.

Modules: :mod:`~dinoeval.demo.config` (datasets, options, targets), :mod:`~dinoeval.demo.plan`
(what runs on each backbone, through :mod:`dinoeval.pipeline`), :mod:`~dinoeval.demo.run` (the
runner), :mod:`~dinoeval.demo.summary` (summary, targets, markdown) and
:mod:`~dinoeval.demo.outputs` (files and pages).
"""

from dinoeval.demo.config import (
    ASSETS,
    DATASETS,
    MAX_STATS_DIM,
    SHAPES_TEST,
    SHAPES_TRAIN,
    TARGET_JACCARD_OVER_RANDOM,
    TARGET_KNN_OVER_PIXELS,
    TARGET_KNN_OVER_RANDOM,
    DemoConfig,
    DemoData,
    DemoResult,
    TargetCheck,
    shipped_checkpoint,
)
from dinoeval.demo.run import pretrain_checkpoint, run_demo
from dinoeval.demo.summary import (
    SUMMARY_COLUMNS,
    check_targets,
    peak_rss_mb,
    summarize,
    summary_markdown,
)

__all__ = [
    "ASSETS", "DATASETS", "MAX_STATS_DIM", "SHAPES_TEST", "SHAPES_TRAIN", "SUMMARY_COLUMNS",
    "TARGET_JACCARD_OVER_RANDOM", "TARGET_KNN_OVER_PIXELS", "TARGET_KNN_OVER_RANDOM",
    "DemoConfig", "DemoData", "DemoResult", "TargetCheck", "check_targets", "peak_rss_mb",
    "pretrain_checkpoint", "run_demo", "shipped_checkpoint", "summarize", "summary_markdown",
]

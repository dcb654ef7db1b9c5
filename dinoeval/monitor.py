"""An online k-NN monitor for training loops (as lightly's and solo-learn's k-NN callbacks).

Every ``every`` epochs, the backbone embeds a fixed labelled *bank* and a fixed set of
*queries* (both small: a few thousand images), and the weighted k-NN vote of DINO's
``eval_knn`` (:func:`dinoeval.eval.knn.knn_classify`) scores the queries. Cheap enough to run
inside the loop; the numbers are a health signal, not a paper number (use ``knn`` for that).

Plain loop::

    monitor = KnnMonitor(bank=(bank_x, bank_y), queries=(val_x, val_y), every=5)
    for epoch in range(epochs):
        train_one_epoch(model)
        monitor(model.backbone, epoch)      # None, or {"epoch", "top1", "top5", "k", ...}
    monitor.frame()                         # the long results table, one row per score

PyTorch Lightning (optional; :func:`lightning_callback` needs ``lightning`` installed)::

    trainer = L.Trainer(callbacks=[lightning_callback(monitor, attr="backbone")])

The model contract (what ``forward`` must return) is :mod:`dinoeval.features.from_module`'s.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from dinoeval.errors import DinoevalError
from dinoeval.eval.knn import knn_classify
from dinoeval.features.from_module import Batches, Forward, module_features
from dinoeval.results import Context, Row, to_frame

log = logging.getLogger(__name__)


@dataclass
class KnnMonitor:
    """Scores a backbone by weighted k-NN on a fixed bank every ``every`` epochs.

    Attributes:
        bank, queries: ``(images (N, 3, H, W) float, labels (N,))`` already transformed, or
            iterables of such batches (``DataLoader``s without shuffling).
        every: evaluate when ``epoch % every == 0`` (and on ``force=True``).
        k: neighbours (capped at the bank size); temperature: the vote's T (DINO: 0.07).
        device, batch_size, forward, num_registers: passed to
            :func:`~dinoeval.features.from_module.module_features`.
        history: one dict per evaluation: epoch, top1, top5 (fractions), k, seconds.
    """

    bank: Batches
    queries: Batches
    every: int = 1
    k: int = 20
    temperature: float = 0.07
    device: str | torch.device = "cpu"
    batch_size: int = 256
    forward: Forward | None = None
    num_registers: int = 0
    name: str = "online"
    history: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.every < 1:
            raise DinoevalError(f"every must be >= 1 epoch, got {self.every}")
        if self.k < 1 or self.temperature <= 0:
            raise DinoevalError(f"k must be >= 1 and temperature > 0, got k={self.k}, "
                                f"temperature={self.temperature}")

    def due(self, epoch: int) -> bool:
        return epoch % self.every == 0

    def __call__(self, model: torch.nn.Module, epoch: int, *, force: bool = False
                 ) -> dict[str, Any] | None:
        """Evaluate ``model`` when ``epoch`` is due; returns the history entry or ``None``."""
        if not (force or self.due(epoch)):
            return None
        start = time.perf_counter()
        opts = {"device": self.device, "batch_size": self.batch_size, "forward": self.forward,
                "num_registers": self.num_registers}
        bank_x, bank_y = module_features(model, self.bank, **opts)
        query_x, query_y = module_features(model, self.queries, **opts)
        k = min(self.k, len(bank_x))
        r = knn_classify(bank_x, bank_y, query_x, query_y, ks=(k,), temperature=self.temperature)
        entry = {"epoch": epoch, "top1": r.top1[k], "top5": r.top5[k], "k": k,
                 "n_bank": len(bank_x), "n_queries": len(query_x),
                 "seconds": time.perf_counter() - start}
        self.history.append(entry)
        log.info("epoch %d: online k-NN top-1 %.2f%% (k=%d, %d bank, %d queries, %.1f s)", epoch,
                 100 * entry["top1"], k, len(bank_x), len(query_x), entry["seconds"])
        return entry

    def frame(self, *, backbone: str = "model", dataset: str = "") -> pd.DataFrame:
        """The history as the long results table (eval ``knn-online``, param ``k=..,epoch=..``)."""
        rows = []
        for h in self.history:
            p = f"k={h['k']},epoch={h['epoch']}"
            rows += [Row("knn-online", "top1", h["top1"], p, h["n_queries"]),
                     Row("knn-online", "top5", h["top5"], p, h["n_queries"])]
        ctx = Context(backbone=backbone, ckpt_hash="", arch="", dataset=dataset, split="",
                      feature="cls")
        return to_frame(rows, ctx)


def lightning_callback(monitor: KnnMonitor, *, attr: str | None = None,
                       prefix: str = "knn_online") -> Any:
    """A PyTorch Lightning ``Callback`` that runs ``monitor`` after each training epoch and logs
    ``{prefix}_top1`` / ``{prefix}_top5`` through ``pl_module.log``.

    Args:
        attr: the LightningModule attribute holding the backbone (``"backbone"``); ``None``
            passes the module itself.

    Raises:
        DinoevalError: when neither ``lightning`` nor ``pytorch_lightning`` is installed.
    """
    try:
        from lightning.pytorch import Callback
    except ImportError:
        try:
            from pytorch_lightning import Callback
        except ImportError as err:
            raise DinoevalError("the Lightning callback needs lightning (pip install "
                                "lightning); the KnnMonitor itself works without it") from err

    class KnnMonitorCallback(Callback):
        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            model = getattr(pl_module, attr) if attr else pl_module
            entry = monitor(model, trainer.current_epoch)
            if entry is not None:
                pl_module.log(f"{prefix}_top1", entry["top1"])
                pl_module.log(f"{prefix}_top5", entry["top5"])

    return KnnMonitorCallback()

"""Training monitors: CSV logs that survive resumes, and the online k-NN of the teacher."""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dinoeval.eval.knn import knn_classify
from pretrain.augment import eval_views

log = logging.getLogger(__name__)

STEP_COLUMNS = ("step", "epoch", "loss", "teacher_entropy", "kl", "center_norm", "lr", "wd",
                "momentum", "teacher_temp", "images_per_s", "aug_fraction", "cpu_s_per_step",
                "elapsed_s")
EPOCH_COLUMNS = ("epoch", "step", "loss", "teacher_entropy", "kl", "center_norm", "knn_top1",
                 "knn_top5", "knn_k", "elapsed_s")


class CsvLog:
    """An append-only CSV with fixed columns (pandas-readable).

    ``truncate_after(step)`` drops rows logged after a checkpoint, so a resumed run does not log
    the replayed steps twice.
    """

    def __init__(self, path: str | Path, columns: tuple[str, ...]) -> None:
        self.path = Path(path)
        self.columns = columns

    def append(self, row: dict[str, Any]) -> None:
        new = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow({k: _fmt(row.get(k)) for k in self.columns})

    def truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        with open(self.path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("step") and int(r["step"]) <= step]
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return "" if v is None else v


@dataclass(frozen=True)
class KnnProbe:
    """A fixed labelled probe: a memory bank and held-out queries (uint8 images).

    ``bank_images`` / ``query_images``: ``(N, H, W[, 3])`` uint8; labels ``(N,)`` int64.
    """

    bank_images: torch.Tensor
    bank_labels: np.ndarray
    query_images: torch.Tensor
    query_labels: np.ndarray


@torch.no_grad()
def embed(backbone: nn.Module, images: torch.Tensor, *, size: int, device: torch.device,
          batch_size: int = 256) -> np.ndarray:
    """L2-normalised CLS features ``(N, D)`` float32 of uint8 ``images`` at ``size`` px."""
    was_training = backbone.training
    backbone.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = eval_views(images[i:i + batch_size].to(device), size)
        out.append(F.normalize(backbone(x).float(), dim=-1).cpu())
    backbone.train(was_training)
    return torch.cat(out).numpy()


def online_knn(backbone: nn.Module, probe: KnnProbe, *, size: int, device: torch.device,
               k: int = 20, temperature: float = 0.07) -> tuple[float, float]:
    """Weighted k-NN top-1 and top-5 accuracy (fractions) of ``backbone``'s CLS on ``probe``."""
    train_x = embed(backbone, probe.bank_images, size=size, device=device)
    test_x = embed(backbone, probe.query_images, size=size, device=device)
    k = min(k, len(train_x))
    result = knn_classify(train_x, probe.bank_labels, test_x, probe.query_labels, ks=(k,),
                          temperature=temperature)
    return result.top1[k], result.top5[k]

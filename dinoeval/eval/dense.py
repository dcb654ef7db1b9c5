"""Dense evaluations of frozen patch tokens: a linear segmentation probe and patch k-NN retrieval.

Both label every test patch from the train split's masks, upsample the per-patch class scores
bilinearly to each test mask's resolution, take the arg-max per pixel and report mIoU
(:func:`dinoeval.eval.davis.iou_from_confusion`) and pixel accuracy.

* **Linear probe** (DINOv2's linear segmentation protocol, Oquab et al. 2023, Sec. 7.4: a linear
  layer on frozen patch tokens, logits bilinearly upsampled to the image resolution): a
  multinomial logistic regression on standardised patch tokens (train mean/std), trained
  full-batch with L-BFGS and L2 weight decay on patch-level targets: ``majority`` (the most
  frequent label of the patch's pixels, one-hot) or ``soft`` (the fraction of the patch's area
  each class covers).
* **Dense k-NN retrieval** (the in-context dense evaluation of Balazevic et al., "Towards
  In-context Scene Understanding", NeurIPS 2023): each test patch takes its ``k`` nearest train
  patches (cosine similarity, exact faiss ``IndexFlatIP``) from a memory bank of at most
  ``max_bank`` train patches (a seeded uniform subsample beyond that), and scores class ``c`` by
  ``sum_j exp(sim_j / T) * target_j[c]`` (DINO's k-NN vote with the patch targets as labels).

Pixels labelled ``ignore_index`` (255) are left out of the targets and of the confusion matrix.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from dinoeval.errors import DinoevalError
from dinoeval.eval.davis import confusion_matrix, iou_from_confusion
from dinoeval.results import Row

log = logging.getLogger(__name__)

IGNORE = 255


@dataclass
class DenseResult:
    """mIoU of one dense evaluation.

    Attributes:
        method: ``"linear"`` or ``"knn"``.
        miou: mean IoU in ``[0, 1]`` over classes present in the test ground truth or prediction.
        iou: ``(C,)`` per-class IoU (NaN when absent from both).
        pixel_acc: fraction of non-ignored test pixels labelled correctly.
        param: the setting as text (``"k=20"``, ``"targets=majority"``).
        n_train_patches: train patches used (after subsampling).
        n_test: test images.
        confusion: ``(C, C)`` pixel counts, rows ground truth.
    """

    method: str
    miou: float
    iou: np.ndarray
    pixel_acc: float
    param: str
    n_train_patches: int
    n_test: int
    confusion: np.ndarray = field(repr=False)

    def to_rows(self, class_names: Sequence[str] = ()) -> list[Row]:
        ev = f"dense-{self.method}"
        rows = [Row(ev, "mIoU", self.miou, self.param, self.n_test),
                Row(ev, "pixel-acc", self.pixel_acc, self.param, self.n_test)]
        for c, v in enumerate(self.iou):
            name = class_names[c] if c < len(class_names) else str(c)
            rows.append(Row(ev, f"IoU[{name}]", float(v), self.param, self.n_test))
        return rows


def patch_targets(masks: Sequence[np.ndarray], grid: tuple[int, int], num_classes: int, *,
                  ignore_index: int = IGNORE) -> np.ndarray:
    """Per-patch class area fractions.

    Args:
        masks: ``N`` ``(H_i, W_i)`` integer label maps (``0..C-1``, ``ignore_index`` ignored).
        grid: ``(h, w)`` patch grid; pixel ``(y, x)`` falls in patch
            ``(floor(y h / H), floor(x w / W))`` (exact patches when ``H, W`` are multiples).
        num_classes: ``C``.

    Returns:
        ``(N, h, w, C)`` float32; each patch's row sums to 1, or to 0 when all its pixels are
        ignored.

    Raises:
        DinoevalError: a label outside ``[0, C)`` other than ``ignore_index``.
    """
    h, w = grid
    out = np.zeros((len(masks), h, w, num_classes), dtype=np.float32)
    for i, m in enumerate(masks):
        m = np.asarray(m).astype(np.int64)
        keep = m != ignore_index
        if keep.any() and (m[keep].min() < 0 or m[keep].max() >= num_classes):
            raise DinoevalError(f"mask {i}: label {int(m[keep].max())} outside 0..{num_classes - 1}"
                                f" (and {ignore_index} = ignore)")
        py = (np.arange(m.shape[0]) * h // m.shape[0])[:, None]
        px = (np.arange(m.shape[1]) * w // m.shape[1])[None, :]
        idx = ((py * w + px) * num_classes + np.where(keep, m, 0))[keep]
        counts = np.bincount(idx, minlength=h * w * num_classes).reshape(h, w, num_classes)
        total = counts.sum(-1, keepdims=True)
        out[i] = counts / np.maximum(total, 1)
    return out


def majority(targets: np.ndarray) -> np.ndarray:
    """One-hot of each patch's most covered class (lowest index on ties); all-zero rows stay 0."""
    hard = np.zeros_like(targets)
    has = targets.sum(-1) > 0
    idx = targets.argmax(-1)
    np.put_along_axis(hard, idx[..., None], 1.0, axis=-1)
    return hard * has[..., None]


def score_images(patch_scores: np.ndarray | torch.Tensor, masks: Sequence[np.ndarray],
                 num_classes: int, *, ignore_index: int = IGNORE) -> np.ndarray:
    """Confusion matrix of per-patch class scores upsampled to each mask's resolution.

    Args:
        patch_scores: ``(N, h, w, C)`` logits or scores.
        masks: ``N`` ``(H_i, W_i)`` ground-truth label maps.

    Returns:
        ``(C, C)`` int64 counts (rows ground truth), after bilinear upsampling
        (``align_corners=False``) to ``(H_i, W_i)`` and a per-pixel arg-max.
    """
    scores = torch.as_tensor(patch_scores, dtype=torch.float32)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    for i, m in enumerate(masks):
        up = F.interpolate(scores[i].permute(2, 0, 1)[None], size=tuple(np.asarray(m).shape),
                           mode="bilinear", align_corners=False)[0]
        cm += confusion_matrix(np.asarray(m), up.argmax(0).numpy(), num_classes,
                               ignore_index=ignore_index)
    return cm


def _result(method: str, cm: np.ndarray, param: str, n_train: int, n_test: int) -> DenseResult:
    miou, iou = iou_from_confusion(cm)
    total = cm.sum()
    acc = float(np.trace(cm) / total) if total else math.nan
    return DenseResult(method, miou, iou, acc, param, n_train, n_test, cm)


def _check(train_feats: np.ndarray, train_masks: Sequence[np.ndarray], test_feats: np.ndarray,
           test_masks: Sequence[np.ndarray]) -> None:
    if train_feats.ndim != 4 or test_feats.ndim != 4:
        raise DinoevalError(f"dense evaluation needs (N, h, w, D) patch features, got "
                            f"{train_feats.shape} and {test_feats.shape}")
    if len(train_feats) != len(train_masks) or len(test_feats) != len(test_masks):
        raise DinoevalError("dense evaluation: one mask per image needed "
                            f"({len(train_feats)}/{len(train_masks)} train, "
                            f"{len(test_feats)}/{len(test_masks)} test)")
    if train_feats.shape[3] != test_feats.shape[3]:
        raise DinoevalError(f"train and test features differ in width: {train_feats.shape[3]} vs "
                            f"{test_feats.shape[3]}")


def _bank(feats: np.ndarray, targets: np.ndarray, max_patches: int, seed: int
          ) -> tuple[np.ndarray, np.ndarray]:
    """Labelled train patches, at most ``max_patches`` (seeded uniform subsample)."""
    x = feats.reshape(-1, feats.shape[-1])
    y = targets.reshape(-1, targets.shape[-1])
    labelled = np.flatnonzero(y.sum(1) > 0)
    if len(labelled) > max_patches:
        rng = np.random.default_rng(seed)
        labelled = np.sort(rng.choice(labelled, max_patches, replace=False))
        log.info("patch bank: %d of the labelled train patches kept", max_patches)
    return np.ascontiguousarray(x[labelled], dtype=np.float32), y[labelled]


def dense_knn(train_feats: np.ndarray, train_masks: Sequence[np.ndarray],
              test_feats: np.ndarray, test_masks: Sequence[np.ndarray], num_classes: int, *,
              k: int = 20, temperature: float = 0.07, max_bank: int = 200_000,
              targets: str = "majority", seed: int = 0, block: int = 8192) -> DenseResult:
    """Dense nearest-neighbour retrieval mIoU (see the module docstring).

    Args:
        train_feats, test_feats: ``(N, h, w, D)`` patch tokens (L2-normalised here).
        train_masks, test_masks: ``(H_i, W_i)`` label maps, one per image.
        k: neighbours per test patch (clamped to the bank size).
        temperature: vote weight ``exp(sim / T)``.
        max_bank: most train patches kept (memory: ``max_bank * D * 4`` bytes).
        targets: ``majority`` or ``soft`` patch labels of the bank.

    Returns:
        :class:`DenseResult` with ``method="knn"``.
    """
    from dinoeval.eval.knn import knn_search

    _check(train_feats, train_masks, test_feats, test_masks)
    if k < 1 or temperature <= 0 or max_bank < 1:
        raise DinoevalError(f"dense k-NN needs k >= 1, temperature > 0 and max_bank >= 1; got "
                            f"{k}, {temperature}, {max_bank}")
    grid = train_feats.shape[1:3]
    tgt = patch_targets(train_masks, grid, num_classes)
    tgt = majority(tgt) if targets == "majority" else tgt
    bank_x, bank_y = _bank(train_feats, tgt, max_bank, seed)
    if len(bank_x) == 0:
        raise DinoevalError("dense k-NN: no labelled train patch (every mask pixel is ignored)")
    kk = min(k, len(bank_x))
    n, th, tw, d = test_feats.shape
    queries = test_feats.reshape(-1, d).astype(np.float32)
    sims, idx = knn_search(bank_x, queries, kk, block_rows=block)
    scores = np.zeros((len(queries), num_classes), dtype=np.float32)
    for s in range(0, len(queries), block):  # weights shifted by each row's best similarity
        wts = np.exp((sims[s:s + block] - sims[s:s + block, :1]) / temperature)
        scores[s:s + block] = np.einsum("qk,qkc->qc", wts, bank_y[idx[s:s + block]])
    cm = score_images(scores.reshape(n, th, tw, num_classes), test_masks, num_classes)
    return _result("knn", cm, f"k={kk},T={temperature:g},targets={targets}", len(bank_x), n)


def linear_segmentation(train_feats: np.ndarray, train_masks: Sequence[np.ndarray],
                        test_feats: np.ndarray, test_masks: Sequence[np.ndarray],
                        num_classes: int, *, targets: str = "majority",
                        weight_decay: float = 1e-4, max_iter: int = 200,
                        max_train_patches: int = 200_000, seed: int = 0) -> DenseResult:
    """Linear segmentation probe mIoU (see the module docstring).

    Args:
        train_feats, test_feats: ``(N, h, w, D)`` frozen patch tokens.
        targets: ``majority`` (one-hot of the most covered class) or ``soft`` (area fractions).
        weight_decay: L2 penalty on the weights (mean loss + ``wd * ||W||^2``).
        max_iter: L-BFGS iterations.
        max_train_patches: most labelled train patches used (seeded subsample beyond).

    Returns:
        :class:`DenseResult` with ``method="linear"``.
    """
    if targets not in ("majority", "soft"):
        raise DinoevalError(f"--targets must be 'majority' or 'soft', got {targets!r}")
    _check(train_feats, train_masks, test_feats, test_masks)
    grid = train_feats.shape[1:3]
    tgt = patch_targets(train_masks, grid, num_classes)
    tgt = majority(tgt) if targets == "majority" else tgt
    x_np, y_np = _bank(train_feats, tgt, max_train_patches, seed)
    if len(x_np) == 0:
        raise DinoevalError("linear segmentation: no labelled train patch")
    x, y = torch.from_numpy(x_np).double(), torch.from_numpy(y_np).double()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    weight, bias = _fit_soft_logreg((x - mean) / std, y, weight_decay, max_iter)
    n, th, tw, d = test_feats.shape
    q = (torch.from_numpy(test_feats.reshape(-1, d).astype(np.float64)) - mean) / std
    logits = (q @ weight + bias).float().reshape(n, th, tw, num_classes)
    cm = score_images(logits, test_masks, num_classes)
    return _result("linear", cm, f"targets={targets},wd={weight_decay:g}", len(x_np), n)


def _fit_soft_logreg(x: torch.Tensor, y: torch.Tensor, weight_decay: float, max_iter: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise ``mean_i -sum_c y_ic log softmax(x_i W + b)_c + wd ||W||^2`` with L-BFGS."""
    weight = torch.zeros(x.shape[1], y.shape[1], dtype=x.dtype, requires_grad=True)
    bias = torch.zeros(y.shape[1], dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12, history_size=20)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = -(y * torch.log_softmax(x @ weight + bias, dim=1)).sum(1).mean()
        loss = loss + weight_decay * (weight ** 2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return weight.detach(), bias.detach()

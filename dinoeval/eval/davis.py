"""Segmentation metrics: DAVIS-2017 J and F (region and boundary), and mIoU.

The DAVIS formulas follow the official semi-supervised evaluation
(``davisvideochallenge/davis2017-evaluation``: ``davis2017/metrics.py`` and ``utils.db_statistics``;
Pont-Tuset et al., "The 2017 DAVIS Challenge on Video Object Segmentation", arXiv:1704.00675;
Perazzi et al., CVPR 2016):

* **J** (region similarity): the Jaccard index ``|P & G| / |P | G|`` of one object's predicted and
  ground-truth masks; ``1`` when both are empty.
* **F** (contour accuracy): the F-measure of boundary precision and recall. Boundaries are the
  one-pixel maps of :func:`seg2bmap`; a boundary pixel is matched when the other mask's boundary
  lies within ``ceil(bound_th * diagonal)`` pixels (a disc; ``bound_th = 0.008``). Empty
  boundaries: both empty -> ``F = 1``; only one empty -> precision/recall ``1``/``0`` -> ``F = 0``.
* Per object, over the evaluated frames (every frame but the first and the last, as the
  semi-supervised benchmark does): **mean**, **recall** (fraction of frames scoring > 0.5) and
  **decay** (mean of the first quarter of the frames minus mean of the last quarter, with the
  benchmark's bin edges). **J&F** is the average of the J mean and the F mean, both averaged over
  every object of every video.

mIoU (semantic segmentation): per class ``TP / (TP + FP + FN)`` from a confusion matrix, averaged
over the classes present in the ground truth or the prediction (classes with an empty union are
left out, as mmsegmentation's ``nanmean``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from dinoeval.results import Row

BOUND_TH = 0.008  # DAVIS: boundary tolerance as a fraction of the image diagonal
_DECAY_BINS = 4


def region_jaccard(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None) -> float:
    """DAVIS region similarity J of one binary mask pair.

    Args:
        gt, pred: ``(H, W)`` masks (any dtype; non-zero is foreground).
        void: optional ``(H, W)`` mask of pixels ignored by both.

    Returns:
        ``|pred & gt| / |pred | gt|`` in ``[0, 1]``; ``1.0`` when the union is empty.

    Raises:
        ValueError: shapes differ.
    """
    g, p = _binary_pair(gt, pred)
    keep = np.ones_like(g) if void is None else ~np.asarray(void, dtype=bool)
    inter = int(np.count_nonzero(g & p & keep))
    union = int(np.count_nonzero((g | p) & keep))
    return 1.0 if union == 0 else inter / union


def seg2bmap(mask: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary map of a binary mask (DAVIS / BSDS ``seg2bmap``).

    A pixel is on the boundary when it differs from its right (east), lower (south) or lower-right
    (south-east) neighbour; in the last row only the east neighbour counts, in the last column
    only the south one, and the bottom-right pixel never does. The image border itself is therefore
    not a boundary: a mask touching the right or bottom edge has no boundary along that edge, and
    one touching the left or top edge has none there either (no neighbour differs).

    Args:
        mask: ``(H, W)``; non-zero is foreground.

    Returns:
        ``(H, W)`` bool.
    """
    seg = np.asarray(mask).astype(bool)
    if seg.ndim != 2:
        raise ValueError(f"seg2bmap needs a 2-D mask, got shape {seg.shape}")
    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    south_east = np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    b[-1, :] = seg[-1, :] ^ east[-1, :]
    b[:, -1] = seg[:, -1] ^ south[:, -1]
    b[-1, -1] = False
    return b


def boundary_radius(shape: Sequence[int], bound_th: float = BOUND_TH) -> int:
    """Matching tolerance in pixels: ``bound_th`` itself when ``>= 1``, otherwise
    ``ceil(bound_th * sqrt(H^2 + W^2))`` (DAVIS ``f_measure``). 480x854 -> 8 pixels."""
    if bound_th >= 1:
        return int(bound_th)
    return math.ceil(bound_th * math.hypot(shape[0], shape[1]))


def _within(boundary: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within Euclidean distance ``radius`` of a boundary pixel: the binary dilation by the
    disc ``{x^2 + y^2 <= radius^2}`` (skimage's ``disk``), computed with a distance transform."""
    return ndimage.distance_transform_edt(~boundary) <= radius


def boundary_f(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None,
               bound_th: float = BOUND_TH) -> float:
    """DAVIS contour accuracy F of one binary mask pair (official ``f_measure``).

    Args:
        gt, pred: ``(H, W)`` masks (non-zero is foreground).
        void: optional ``(H, W)`` mask of pixels removed from both masks first.
        bound_th: tolerance as a fraction of the diagonal (``< 1``) or in pixels (``>= 1``).

    Returns:
        ``2 P R / (P + R)`` in ``[0, 1]`` with precision ``P`` (predicted boundary pixels within
        the tolerance of the true boundary) and recall ``R`` (the converse); ``1.0`` when neither
        mask has a boundary, ``0.0`` when only one has.
    """
    g, p = _binary_pair(gt, pred)
    if void is not None:
        keep = ~np.asarray(void, dtype=bool)
        g, p = g & keep, p & keep
    gb, pb = seg2bmap(g), seg2bmap(p)
    n_gt, n_pred = int(gb.sum()), int(pb.sum())
    if n_gt == 0 and n_pred == 0:
        return 1.0
    if n_gt == 0 or n_pred == 0:
        return 0.0  # precision/recall are 1 and 0 (in some order): F = 0
    radius = boundary_radius(g.shape, bound_th)
    precision = np.count_nonzero(pb & _within(gb, radius)) / n_pred
    recall = np.count_nonzero(gb & _within(pb, radius)) / n_gt
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def db_statistics(per_frame: np.ndarray) -> tuple[float, float, float]:
    """Mean, recall and decay of one object's per-frame scores (DAVIS ``db_statistics``).

    Args:
        per_frame: ``(T,)`` J or F values of the evaluated frames, in order.

    Returns:
        ``(mean, recall, decay)``: the mean; the fraction of frames ``> 0.5``; the mean of the
        first quarter minus the mean of the last quarter, with the benchmark's bin edges
        ``round(linspace(1, T, 5)) - 1`` (both ends inclusive). NaN for an empty input.
    """
    v = np.asarray(per_frame, dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(np.nanmean(v))
    recall = float(np.nanmean(v > 0.5))
    ids = (np.round(np.linspace(1, len(v), _DECAY_BINS + 1) + 1e-10) - 1).astype(np.int64)
    bins = [v[ids[i]: ids[i + 1] + 1] for i in range(_DECAY_BINS)]
    decay = float(np.nanmean(bins[0]) - np.nanmean(bins[-1]))
    return mean, recall, decay


def _binary_pair(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    g, p = np.asarray(gt).astype(bool), np.asarray(pred).astype(bool)
    if g.shape != p.shape:
        raise ValueError(f"mask shapes differ: ground truth {g.shape}, prediction {p.shape}")
    return g, p


@dataclass
class VideoScores:
    """Per-object, per-frame J and F of one video.

    Attributes:
        name: the video's name.
        j: ``(O, T')`` region similarity of each object on each evaluated frame.
        f: ``(O, T')`` contour accuracy.
        frames: ``(T',)`` indices of the evaluated frames in the video.
    """

    name: str
    j: np.ndarray
    f: np.ndarray
    frames: np.ndarray

    @property
    def num_objects(self) -> int:
        return int(self.j.shape[0])

    def object_stats(self) -> list[dict[str, float]]:
        """Per object: ``J_mean, J_recall, J_decay, F_mean, F_recall, F_decay``."""
        out = []
        for o in range(self.num_objects):
            jm, jr, jd = db_statistics(self.j[o])
            fm, fr, fd = db_statistics(self.f[o])
            out.append({"J_mean": jm, "J_recall": jr, "J_decay": jd,
                        "F_mean": fm, "F_recall": fr, "F_decay": fd})
        return out


def evaluate_video(gt: np.ndarray, pred: np.ndarray, *, name: str = "video",
                   num_objects: int | None = None, bound_th: float = BOUND_TH,
                   skip_first_last: bool = True, void_label: int = 255) -> VideoScores:
    """J and F of every object of one video (DAVIS semi-supervised protocol).

    Args:
        gt: ``(T, H, W)`` integer labels, ``0`` background, objects ``1..K``; ``void_label``
            pixels are ignored (as background in both masks, like the official reader).
        pred: ``(T, H, W)`` predicted labels.
        num_objects: ``K``; default the largest label of the first ground-truth frame (DAVIS).
        skip_first_last: score frames ``1..T-2`` only (the first is given, the benchmark also
            drops the last); ``False`` scores every frame.

    Returns:
        :class:`VideoScores` with ``(K, T')`` arrays.

    Raises:
        ValueError: shapes differ, too few frames, or the prediction uses a label above ``K``.
    """
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape or gt.ndim != 3:
        raise ValueError(f"{name}: need (T, H, W) labels of equal shape, got ground truth "
                         f"{gt.shape} and prediction {pred.shape}")
    first = np.where(gt[0] == void_label, 0, gt[0])
    k = int(first.max()) if num_objects is None else num_objects
    top = int(np.where(pred == void_label, 0, pred).max(initial=0))
    if top > k:
        raise ValueError(f"{name}: the prediction has object label {top} but the video has {k} "
                         "objects")
    frames = np.arange(1, gt.shape[0] - 1) if skip_first_last else np.arange(gt.shape[0])
    if len(frames) == 0:
        raise ValueError(f"{name}: {gt.shape[0]} frames leave none to score (need at least 3)")
    j = np.zeros((k, len(frames)))
    f = np.zeros((k, len(frames)))
    for t_i, t in enumerate(frames):
        g = np.where(gt[t] == void_label, 0, gt[t])
        for o in range(k):
            j[o, t_i] = region_jaccard(g == o + 1, pred[t] == o + 1)
            f[o, t_i] = boundary_f(g == o + 1, pred[t] == o + 1, bound_th=bound_th)
    return VideoScores(name=name, j=j, f=f, frames=frames)


@dataclass
class DavisResult:
    """DAVIS summary over videos.

    Attributes:
        videos: the per-video scores.
        j_mean, j_recall, j_decay, f_mean, f_recall, f_decay: averages over every object of every
            video of the per-object statistics (the benchmark's global numbers).
        jf_mean: ``(j_mean + f_mean) / 2``.
        per_video: name -> ``{"J_mean", "F_mean", "JF_mean"}`` averaged over the video's objects.
    """

    videos: list[VideoScores]
    j_mean: float
    j_recall: float
    j_decay: float
    f_mean: float
    f_recall: float
    f_decay: float
    jf_mean: float
    per_video: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def num_objects(self) -> int:
        return sum(v.num_objects for v in self.videos)

    def to_rows(self, eval_name: str = "video-seg") -> list[Row]:
        n = self.num_objects
        rows = [Row(eval_name, m, float(getattr(self, a)), n=n) for m, a in (
            ("J&F-mean", "jf_mean"), ("J-mean", "j_mean"), ("J-recall", "j_recall"),
            ("J-decay", "j_decay"), ("F-mean", "f_mean"), ("F-recall", "f_recall"),
            ("F-decay", "f_decay"))]
        for name, d in self.per_video.items():
            rows.append(Row(eval_name, "J&F-mean", d["JF_mean"], param=f"video={name}",
                            n=d["objects"]))
        return rows


def summarize(videos: Sequence[VideoScores]) -> DavisResult:
    """Benchmark numbers from per-video scores: per-object statistics averaged over all objects.

    Raises:
        ValueError: no objects at all.
    """
    stats = [s for v in videos for s in v.object_stats()]
    if not stats:
        raise ValueError("no objects to score: every video's first frame is empty")
    avg = {k: float(np.mean([s[k] for s in stats])) for k in stats[0]}
    per_video: dict[str, dict[str, float]] = {}
    for v in videos:
        vs = v.object_stats()
        if vs:
            jm = float(np.mean([s["J_mean"] for s in vs]))
            fm = float(np.mean([s["F_mean"] for s in vs]))
            per_video[v.name] = {"J_mean": jm, "F_mean": fm, "JF_mean": (jm + fm) / 2,
                                 "objects": len(vs)}
    return DavisResult(list(videos), avg["J_mean"], avg["J_recall"], avg["J_decay"],
                       avg["F_mean"], avg["F_recall"], avg["F_decay"],
                       (avg["J_mean"] + avg["F_mean"]) / 2, per_video)


# ---------------------------------------------------------------------------------------------
# Semantic segmentation: confusion matrix and mIoU


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, num_classes: int, *,
                     ignore_index: int | None = 255) -> np.ndarray:
    """``(C, C)`` int64 counts, rows = ground truth, columns = prediction.

    Args:
        gt, pred: integer label arrays of the same shape (any number of dimensions).
        num_classes: ``C``; labels must lie in ``[0, C)`` (ground-truth ``ignore_index`` pixels
            are skipped).

    Raises:
        ValueError: shapes differ or a label is out of range.
    """
    g, p = np.asarray(gt).ravel().astype(np.int64), np.asarray(pred).ravel().astype(np.int64)
    if np.asarray(gt).shape != np.asarray(pred).shape:
        raise ValueError(f"label shapes differ: {np.asarray(gt).shape} vs {np.asarray(pred).shape}")
    if ignore_index is not None:
        keep = g != ignore_index
        g, p = g[keep], p[keep]
    for what, a in (("ground truth", g), ("prediction", p)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{what} label out of range [0, {num_classes}): "
                             f"{int(a.min())}..{int(a.max())}")
    return np.bincount(g * num_classes + p, minlength=num_classes ** 2).reshape(
        num_classes, num_classes)


def iou_from_confusion(cm: np.ndarray) -> tuple[float, np.ndarray]:
    """Per-class IoU ``TP / (TP + FP + FN)`` and their mean over classes with a non-empty union.

    Args:
        cm: ``(C, C)`` counts, rows = ground truth, columns = prediction.

    Returns:
        ``(miou, iou)`` with ``iou`` ``(C,)`` float64, NaN for classes absent from both;
        ``miou`` in ``[0, 1]`` (NaN when every class is absent).
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)
    valid = ~np.isnan(iou)
    return (float(iou[valid].mean()) if valid.any() else math.nan), iou
